"""The serve stage end to end: the real agent answers /try requests with the stand-in generation scripts, on the
training pod after training (the test window) and on a TRY pod over the job's volume; every cell image is the one of
its (epoch, prompt), a finished request is never run again after a restart, and a failing generation reports the
script's own error."""

from __future__ import annotations

import hashlib
import io
import json
import signal
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from jobs.manifest import add_serve, try_pod_manifest
from jobs.sandbox.sdscripts._standin_images import network_colour, prompt_colour
from jobs.sdscripts import tokenizer_manifest
from jobs.tryplan import (
    LoraRef,
    TryJob,
    cell_key,
    parse_request_status,
    parse_try,
    request_entry,
    requests_document,
    requests_key,
    status_key,
)
from tests.jobs.data.specs import spec

from .bucket import Bucket
from .world import Agent, Job, put_job, standin_hub, wait_for

TRY_MANIFEST_KEY = "jobs/j1/try/manifest.json"


def try_job(job: Job, epochs: int = 3, family: str = "sdxl-character") -> TryJob:
    # Small images keep the test fast: the stand-in draws what it is asked, at that size.
    return replace(
        TryJob.from_spec(spec(family), job_id=job.job_id, epochs_available=range(1, epochs + 1)), resolution=64
    )


def loras(job: Job, bucket: Bucket) -> dict[int, LoraRef]:
    train = job.status("train")
    return {
        e["epoch"]: LoraRef(job.keys.checkpoint(e["epoch"]), e["checkpoint"]["sha256"], e["checkpoint"]["size"])
        for e in train["epochs"]
    }


def post_requests(bucket: Bucket, job: Job, entries: list[dict[str, Any]]) -> None:
    bucket.put(requests_key(job.job_id), requests_document(entries))


def request_status(bucket: Bucket, job: Job, tid: str) -> dict[str, Any] | None:
    body = bucket.objects.get(status_key(job.job_id, tid))
    return json.loads(body) if body else None


def wait_finished(bucket: Bucket, job: Job, tid: str, timeout: float = 60) -> dict[str, Any]:
    wait_for(
        lambda: (request_status(bucket, job, tid) or {}).get("phase") in ("done", "failed"),
        timeout=timeout,
        what=f"request {tid} to finish",
    )
    status = request_status(bucket, job, tid)
    assert status is not None
    return status


def bands(data: bytes) -> tuple[tuple[int, ...], tuple[int, ...]]:
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
        return rgb.getpixel((1, 1)), rgb.getpixel((1, rgb.height - 2))  # type: ignore[return-value]


def assert_cells_are_their_images(
    bucket: Bucket, job: Job, tid: str, target: TryJob, wanted: Any, scale: float | None = None
) -> None:
    """Each cell's top band is its row's prompt line, its bottom band its column's LoRA bytes at the strength.
    `scale`: what the script used as its guidance scale (gen_img: the job's sample cfg)."""
    for epoch in wanted.epochs:
        lora_sha = hashlib.sha256(bucket.objects[job.keys.checkpoint(epoch)]).hexdigest()
        for index, prompt in enumerate(wanted.prompts):
            cell = bucket.objects[cell_key(job.job_id, tid, epoch, index)]
            used = target.sample_cfg if scale is None else scale
            top = prompt_colour(prompt, wanted.negative, wanted.seed, wanted.steps, used)
            assert bands(cell) == (top, network_colour([(lora_sha, wanted.strength)])), (epoch, index)
    # Sanity of the check itself: rows and columns really differ.
    cells = [cell_key(job.job_id, tid, e, i) for e in wanted.epochs for i in range(len(wanted.prompts))]
    images = {bands(bucket.objects[key]) for key in cells}
    assert len(images) == len(wanted.epochs) * len(wanted.prompts)


def trained_job(bucket: Bucket, agent: Agent, *, serve: bool) -> tuple[Job, subprocess.Popen[str] | None]:
    """A 3-epoch job trained on the volume; with `serve`, its GPU pod is still up, serving (the test window)."""
    job = put_job(bucket, epochs=3, status_interval_s=2.0)
    code, out = agent.run(job, "prepare")  # the CPU pod: env, model, tokenizers, dataset
    assert code == 0, out
    if serve:
        job.manifest = add_serve(job.manifest, store=bucket, expires_s=3600, poll_s=1.0)
        bucket.put(job.keys.manifest, json.dumps(job.manifest).encode())
        pod = agent.start(job, "train", gpu=True)
        wait_for(lambda: job.keys.status("serve") in bucket.objects, timeout=90, what="the serve stage's status")
        return job, pod
    code, out = agent.run(job, "train", gpu=True, timeout=90)
    assert code == 0, out
    return job, None


def test_test_window_pod_serves_after_training_and_never_redoes_a_finished_request(
    bucket: Bucket, agent: Agent
) -> None:
    job, pod = trained_job(bucket, agent, serve=True)
    assert pod is not None
    assert job.status("train")["phase"] == "succeeded"
    wait_for(lambda: job.status("serve")["phase"] == "serving", what="serving")
    gpu_check = job.status("serve")["steps"][0]
    assert (gpu_check["name"], gpu_check["state"], gpu_check["cached"]) == ("gpu_check", "skipped", True)

    target = try_job(job)
    wanted = parse_try(target, prompt="kana smiling|kana angry", epochs="1-3", seed=7, strength=0.8, steps=6)
    entry = request_entry(
        target,
        wanted,
        tid="t1",
        loras=loras(job, bucket),
        presign_get=bucket.presign_get,
        presign_put=bucket.presign_put,
    )
    post_requests(bucket, job, [entry])
    status = wait_finished(bucket, job, "t1")
    assert status["phase"] == "done", status
    assert (status["cells_done"], status["cells"], status["error"]) == (6, 6, None)
    assert status["seconds"] > 0
    assert_cells_are_their_images(bucket, job, "t1", target, wanted)
    serve_status = job.status("serve")
    assert serve_status["serve"]["done"] == ["t1"] and serve_status["serve"]["current"] is None
    assert b"--- gen_img.py output (request t1, run 2) ---" in bucket.objects[job.keys.log("serve")]
    # Each epoch's LoRA was fetched once and is kept by its hash for the next request.
    lora_dir = agent.volume / "lorabot/jobs/j1/try/loras"
    assert sorted(p.name for p in lora_dir.glob("*.safetensors")) == sorted(
        f"{ref.sha256}.safetensors" for ref in loras(job, bucket).values()
    )
    lora_gets = [r for r in bucket.requests if r.method == "GET" and r.key.startswith("jobs/j1/epochs/")]

    # The container restarts (RunPod starts it again): the finished request is not run again.
    pod.send_signal(signal.SIGTERM)
    out, _ = pod.communicate(timeout=30)
    assert pod.returncode == 143, out
    assert job.status("serve")["phase"] == "interrupted"
    cell_puts = bucket.puts(cell_key(job.job_id, "t1", 1, 0))
    again = agent.start(job, "train", gpu=True)
    try:
        wait_for(lambda: job.status("serve")["phase"] == "serving", what="serving again")
        second = parse_try(target, prompt="kana waving", epochs="2", seed=8, steps=4)
        post_requests(
            bucket,
            job,
            [
                entry,
                request_entry(
                    target,
                    second,
                    tid="t2",
                    loras=loras(job, bucket),
                    presign_get=bucket.presign_get,
                    presign_put=bucket.presign_put,
                ),
            ],
        )
        assert wait_finished(bucket, job, "t2")["phase"] == "done"
        assert_cells_are_their_images(bucket, job, "t2", target, second)
    finally:
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=30)
    assert bucket.puts(cell_key(job.job_id, "t1", 1, 0)) == cell_puts
    assert parse_request_status(bucket.objects[status_key("j1", "t1")]).phase == "done"
    # No LoRA was downloaded again: the cached one (by hash) served epoch 2.
    assert [r for r in bucket.requests if r.method == "GET" and r.key.startswith("jobs/j1/epochs/")] == lora_gets
    assert job.status("serve")["boots"] == 2 and job.status("serve")["serve"]["done"] == ["t1", "t2"]


def start_try_pod(bucket: Bucket, agent: Agent, job: Job, extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
    manifest = try_pod_manifest(job.manifest, store=bucket, expires_s=3600, poll_s=1.0)
    bucket.put(TRY_MANIFEST_KEY, json.dumps(manifest).encode())
    env = {"LORABOT_MANIFEST_URL": bucket.presign_get(TRY_MANIFEST_KEY), "RUNPOD_POD_ID": "pod-try", **(extra or {})}
    return agent.start(job, "serve", gpu=True, extra=env)


def test_try_pod_serves_on_the_jobs_volume_and_reports_the_scripts_own_errors(bucket: Bucket, agent: Agent) -> None:
    job, _ = trained_job(bucket, agent, serve=False)
    target = try_job(job)
    refs = loras(job, bucket)
    good = parse_try(target, prompt="kana smiling|kana angry", epochs="2,3", steps=5)
    bad_lora = {**refs, 1: replace(refs[1], sha256="0" * 64)}
    pod = start_try_pod(bucket, agent, job)
    try:
        wait_for(lambda: job.keys.status("serve") in bucket.objects, timeout=60, what="the TRY pod's status")
        wait_for(lambda: job.status("serve")["phase"] == "serving", what="serving")
        assert [s["state"] for s in job.status("serve")["steps"]][:1] == ["done"]  # the GPU check ran
        entries = [
            request_entry(
                target, good, tid="t1", loras=refs, presign_get=bucket.presign_get, presign_put=bucket.presign_put
            ),
            request_entry(
                target,
                parse_try(target, prompt="kana", epochs="1"),
                tid="t2",
                loras=bad_lora,
                presign_get=bucket.presign_get,
                presign_put=bucket.presign_put,
            ),
            request_entry(
                target,
                parse_try(target, prompt="kana", epochs="3", steps=5),
                tid="t3",
                loras=refs,
                presign_get=bucket.presign_get,
                presign_put=bucket.presign_put,
            ),
        ]
        # A run the script itself fails: its checkpoint argument names a file that is not there.
        missing = str(agent.volume / "lorabot/models/gone.safetensors")
        entries[2]["runs"][0]["args"][0] = f"--ckpt={missing}"
        post_requests(bucket, job, entries)
        assert wait_finished(bucket, job, "t1")["phase"] == "done"
        assert_cells_are_their_images(bucket, job, "t1", target, good)
        mismatch = wait_finished(bucket, job, "t2")
        assert mismatch["phase"] == "failed" and mismatch["error"]["kind"] == "lora_mismatch"
        assert "expected " + "0" * 64 in mismatch["error"]["message"]
        assert not bucket.keys("jobs/j1/try/t2/e")  # nothing generated
        crashed = wait_finished(bucket, job, "t3")
        assert crashed["phase"] == "failed" and crashed["error"]["kind"] == "generation"
        assert crashed["error"]["message"] == (
            "gen_img.py exited with code 1 (epoch 3): "
            f"FileNotFoundError: [Errno 2] No such file or directory: '{missing}'"
        )
        assert crashed["cells_done"] == 0 and not bucket.keys("jobs/j1/try/t3/e")
        assert job.status("serve")["serve"] == {**job.status("serve")["serve"], "done": ["t1"], "failed": ["t2", "t3"]}
    finally:
        pod.send_signal(signal.SIGTERM)
        out, _ = pod.communicate(timeout=30)
    assert pod.returncode == 143, out


def test_flux_requests_run_one_process_per_image_and_map_its_timestamped_file(bucket: Bucket, agent: Agent) -> None:
    extra = {name: hashlib.sha256(name.encode()).digest() * 64 for name in ("clip_l.sft", "t5xxl.sft", "ae.sft")}
    job = put_job(bucket, epochs=2, status_interval_s=2.0, extra_models=extra)
    # The Flux script's tokenizers (CLIP-L and T5-XXL) on the volume too, as a Flux job's CPU stage fetches them.
    have = {entry["repo"] for entry in job.manifest["tokenizers"]}
    flux = tokenizer_manifest("flux_train_network.py", standin_hub().url)
    job.manifest["tokenizers"] += [entry for entry in flux if entry["repo"] not in have]
    bucket.put(job.keys.manifest, json.dumps(job.manifest).encode())
    code, out = agent.run(job, "prepare")
    assert code == 0, out
    code, out = agent.run(job, "train", gpu=True, timeout=90)
    assert code == 0, out
    paths = {role: f"{{volume}}/lorabot/models/{role}.sft" for role in ("clip_l", "t5xxl", "ae")}
    target = replace(
        TryJob.from_spec(spec("flux-character"), job_id="j1", epochs_available=(1, 2), extra_model_paths=paths),
        resolution=64,
    )
    wanted = parse_try(target, prompt="kana smiling|kana angry", epochs="1-2", strength=0.5, steps=4, negative="")
    entry = request_entry(
        target,
        wanted,
        tid="t1",
        loras=loras(job, bucket),
        presign_get=bucket.presign_get,
        presign_put=bucket.presign_put,
    )
    pod = start_try_pod(bucket, agent, job)
    try:
        post_requests(bucket, job, [entry])
        status = wait_finished(bucket, job, "t1")
        assert status["phase"] == "done", status
        assert status["cells_done"] == 4
        # flux_minimal_inference.py's cfg_scale default (1.0) is the scale the stand-in drew with.
        assert_cells_are_their_images(bucket, job, "t1", target, wanted, scale=1.0)
    finally:
        pod.send_signal(signal.SIGTERM)
        pod.communicate(timeout=30)
    runs = sorted((agent.volume / "lorabot/jobs/j1/try/t1").glob("run-*/out/*.png"))
    assert len(runs) == 4 and all(len(path.stem) == len("20260101_000000") for path in runs)
    # The script loaded its tokenizers by Hub id, offline, from the run's links to the volume's copies.
    view = agent.volume / "lorabot/jobs/j1/try/t1/run-00/cwd/google/t5-v1_1-xxl"
    assert view.is_symlink() and (view / "spiece.model").is_file()


def test_try_pod_without_the_environment_fails_clearly_and_its_restart_idles(bucket: Bucket, agent: Agent) -> None:
    job = put_job(bucket, epochs=1)
    pod = start_try_pod(bucket, agent, job)
    out, _ = pod.communicate(timeout=60)
    assert pod.returncode == 1, out
    status = job.status("serve")
    assert status["phase"] == "failed" and status["error"]["kind"] == "env_missing"
    assert "is not on this volume" in status["error"]["message"]
    again = start_try_pod(bucket, agent, job)
    wait_for(lambda: job.status("serve")["boots"] == 2, what="the restart's status")
    assert job.status("serve")["phase"] == "failed"
    assert again.poll() is None  # idling until terminated, not exiting into another restart
    again.send_signal(signal.SIGTERM)
    again.communicate(timeout=30)


def test_a_try_pod_manifest_carries_no_training_upload(bucket: Bucket) -> None:
    job = put_job(bucket, epochs=2)
    manifest = try_pod_manifest(job.manifest, store=bucket, expires_s=60)
    assert manifest["stages"] == ["serve"]
    assert set(manifest["uploads"]) == {"status", "history", "log"}
    assert all(set(urls) == {"serve"} for urls in manifest["uploads"].values())
    assert manifest["serve"]["requests_url"].startswith(bucket.presign_get(requests_key("j1"), 60).split("?")[0])
    assert job.manifest["stages"] == ["train"]  # the job's own manifest is untouched
    window = add_serve(job.manifest, store=bucket, expires_s=60, poll_s=3)
    assert window["stages"] == ["train"] and window["serve"]["poll_s"] == 3
    assert window["uploads"]["final"] == job.manifest["uploads"]["final"]
    assert Path(window["uploads"]["status"]["serve"].split("?")[0]).name == "serve.json"


def test_manifest_serve_section_is_checked(bucket: Bucket) -> None:
    from jobs.agent.manifest import ManifestError, parse_manifest

    job = put_job(bucket, epochs=1)
    served = try_pod_manifest(job.manifest, store=bucket, expires_s=60, poll_s=2)
    assert parse_manifest(json.dumps(served).encode()).serve is not None
    cases = [
        ({**job.manifest, "stages": ["serve"]}, "stages include 'serve' but the manifest has no serve section"),
        ({**served, "serve": {"requests_url": "file:///etc/passwd"}}, "serve.requests_url must be an http(s) URL"),
        ({**served, "serve": {**served["serve"], "poll_s": 0.1}}, "serve.poll_s must be a number of seconds"),
        ({**served, "stages": ["train", "serve"]}, "manifest stages ['serve'] stand alone"),
    ]
    for manifest, message in cases:
        try:
            parse_manifest(json.dumps(manifest).encode())
        except ManifestError as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"accepted: {message}")


def test_a_hung_generation_is_stopped_at_the_requests_time_limit_and_serving_goes_on(
    bucket: Bucket, agent: Agent
) -> None:
    job, _ = trained_job(bucket, agent, serve=False)
    target = try_job(job)
    refs = loras(job, bucket)
    entry = request_entry(
        target,
        parse_try(target, prompt="kana", epochs="1"),
        tid="t1",
        loras=refs,
        presign_get=bucket.presign_get,
        presign_put=bucket.presign_put,
    )
    entry["timeout_s"] = 30  # simulated seconds: the stand-in spends 6 loading, then hangs on its first image
    pod = start_try_pod(bucket, agent, job, extra={"LORABOT_STANDIN_GEN_FAULT": "hang@1"})
    try:
        post_requests(bucket, job, [entry])
        hung = wait_finished(bucket, job, "t1")
        assert hung["phase"] == "failed" and hung["error"]["kind"] == "hang"
        assert hung["error"]["message"] == "gen_img.py (epoch 1) was still running after 30 s and was stopped"
        assert job.status("serve")["phase"] == "serving"
        assert pod.poll() is None
        # The hung script itself was stopped, not left running beside the agent.
        running = [_cmdline(p) for p in Path("/proc").iterdir() if p.name.isdigit()]
        assert not [cmd for cmd in running if "gen_img.py" in cmd and str(agent.volume) in cmd]
    finally:
        pod.send_signal(signal.SIGTERM)
        out, _ = pod.communicate(timeout=30)
    assert pod.returncode == 143, out


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""
