"""The agent end to end: a CPU-stage run prepares the volume, a GPU-stage run waits, trains and ships everything."""

from __future__ import annotations

import hashlib
import re
import signal
import time
from pathlib import Path

from .bucket import Bucket
from .world import Agent, put_job, wait_for

CACHED_STEPS = ("env", "model", "dataset")


def steps_by_name(status: dict) -> dict[str, dict]:
    return {step["name"]: step for step in status["steps"]}


def volume_files(volume: Path) -> dict[str, str]:
    """Content hash of every file the stages produce for the trainer (not their own logs and statuses)."""
    found = {}
    for path in sorted((volume / "lorabot").rglob("*")):
        rel = str(path.relative_to(volume))
        if path.is_file() and not re.search(r"/(logs|status|boots)/|uploads\.json$", rel):
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_gpu_stage_waits_for_the_cpu_stage_then_trains_and_uploads_every_epoch(bucket: Bucket, agent: Agent):
    job = put_job(bucket, epochs=3)
    gpu = agent.start(job, "train", gpu=True)
    wait_for(lambda: job.keys.status("train") in bucket.objects, what="the GPU pod's first status")
    assert job.status("train")["phase"] == "waiting_for_ready"

    code, out = agent.run(job, "prepare")
    assert code == 0, out
    prepare = job.status("prepare")
    assert prepare["phase"] == "ready" and prepare["eta_seconds"] == 0.0
    assert all(step["state"] == "done" and not step["cached"] for step in prepare["steps"])
    assert steps_by_name(prepare)["model"]["bytes_done"] == steps_by_name(prepare)["model"]["bytes_total"] > 0

    out, _ = gpu.communicate(timeout=60)
    assert gpu.returncode == 0, out
    train = job.status("train")
    assert train["phase"] == "succeeded", train["error"]
    assert [e["epoch"] for e in train["epochs"]] == [1, 2, 3]
    for epoch in (1, 2, 3):
        checkpoint = bucket.objects[job.keys.checkpoint(epoch)]
        assert train["epochs"][epoch - 1]["checkpoint"]["sha256"] == hashlib.sha256(checkpoint).hexdigest()
        for index in (0, 1):
            assert bucket.objects[job.keys.sample(epoch, index)].endswith(b"IEND\xaeB`\x82")
    final = bucket.objects[job.keys.final]
    assert train["final"] == {"sha256": hashlib.sha256(final).hexdigest(), "size": len(final)}
    assert train["progress"]["step"] == train["progress"]["total_steps"] == 6
    phases = [entry["phase"] for entry in job.history("train")]
    assert phases[0] == "waiting_for_ready" and phases[-1] == "succeeded" and "training" in phases
    assert [entry["seq"] for entry in job.history("train")] == sorted({e["seq"] for e in job.history("train")})
    assert b"--- sd-scripts output ---" in bucket.objects[job.keys.log("train")]


def test_a_second_job_on_the_same_volume_skips_every_cached_step(bucket: Bucket, agent: Agent):
    first = put_job(bucket, "j1")
    assert agent.run(first, "prepare")[0] == 0
    downloads_before = [r for r in bucket.requests if r.method == "GET" and not r.key.endswith("manifest.json")]

    second = put_job(bucket, "j2")  # same recipe, model and dataset (issue 9: reuse by hash)
    code, out = agent.run(second, "prepare")
    assert code == 0, out
    steps = steps_by_name(second.status("prepare"))
    for name in CACHED_STEPS:
        assert steps[name]["cached"] is True and steps[name]["state"] == "skipped", steps[name]
    assert steps["job"]["cached"] is False  # a new job folder is the only new work
    downloads_after = [r for r in bucket.requests if r.method == "GET" and not r.key.endswith("manifest.json")]
    assert downloads_after == downloads_before


def test_each_stage_run_twice_does_no_work_twice_and_leaves_the_same_files(bucket: Bucket, agent: Agent, volume: Path):
    """Run again by a new pod (the same pod restarted idles instead: tests/agent/test_agent_boots.py)."""
    job = put_job(bucket, epochs=2)
    assert agent.run(job, "prepare")[0] == 0
    files = volume_files(volume)
    assert agent.run(job, "prepare", extra={"RUNPOD_POD_ID": "pod-prepare-2"})[0] == 0
    assert all(step["cached"] for step in job.status("prepare")["steps"])
    assert volume_files(volume) == files

    assert agent.run(job, "train", gpu=True)[0] == 0
    trained = volume_files(volume)
    code, out = agent.run(job, "train", gpu=True, extra={"RUNPOD_POD_ID": "pod-train-2"})
    assert code == 0, out
    assert job.status("train")["phase"] == "succeeded"
    assert steps_by_name(job.status("train"))["training"]["cached"] is True
    assert not list((volume / "lorabot/jobs/j1/logs").glob("trainer-2.log"))
    assert volume_files(volume) == trained
    for key in [job.keys.checkpoint(1), job.keys.checkpoint(2), job.keys.final, job.keys.sample(2, 1)]:
        assert bucket.puts(key) == 1, key


def test_warm_job_prepares_and_trains_on_the_gpu_pod_itself(bucket: Bucket, agent: Agent):
    """Warm: an earlier job's CPU stage left the environment, the model and its tokenizers on the volume, so the
    GPU pod's own prepare only fetches the dataset (from the bucket: the pod's network guard allows nothing else)."""
    assert agent.run(put_job(bucket, "j0", epochs=1), "prepare")[0] == 0
    job = put_job(bucket, epochs=1, stages=["prepare", "train"])
    code, out = agent.run(job, "train", gpu=True)
    assert code == 0, out
    assert job.status("prepare")["phase"] == "ready"
    assert job.status("train")["phase"] == "succeeded"


def test_sigterm_at_epoch_4_of_10_then_a_new_pod_trains_epochs_5_to_10_once(bucket: Bucket, agent: Agent, volume: Path):
    job = put_job(bucket, epochs=10)
    assert agent.run(job, "prepare")[0] == 0
    output = volume / "lorabot/jobs/j1/output"
    pod = agent.start(job, "train", gpu=True)
    wait_for(lambda: (output / "kana-000004-state/random_states_0.pkl").exists(), what="epoch 4's state")
    pod.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    out, _ = pod.communicate(timeout=10)
    assert time.monotonic() - sent < 5.0, "the agent must exit inside the grace period"
    status = job.status("train")
    assert status["phase"] == "interrupted", out
    resumed_epoch = status["last_completed_epoch"]
    assert resumed_epoch >= 4
    assert f"kana-{resumed_epoch:06d}-state" in out

    code, out = agent.run(job, "train", gpu=True)
    assert code == 0, out
    status = job.status("train")
    assert status["phase"] == "succeeded", status["error"]
    assert status["resumed_from"] == f"kana-{resumed_epoch:06d}-state"
    second_log = (volume / "lorabot/jobs/j1/logs/trainer-2.log").read_text()
    trained = [int(n) for n in re.findall(r"^epoch (\d+)/10$", second_log, re.MULTILINE)]
    assert trained == list(range(resumed_epoch + 1, 11))
    assert [e["epoch"] for e in status["epochs"]] == list(range(1, 11))
    for epoch in range(1, 11):
        assert bucket.puts(job.keys.checkpoint(epoch)) == 1, epoch
    phases = [entry["phase"] for entry in job.history("train")]
    assert "interrupted" in phases and phases[-1] == "succeeded"


def test_every_model_file_flux_needs_is_fetched_verified_and_then_cached(bucket: Bucket, agent: Agent):
    """Flux trains from four files (checkpoint, ae, clip_l, t5xxl): all land on the volume, each checked."""
    extras = {"ae.safetensors": b"a" * 3000, "clip_l.safetensors": b"c" * 2000, "t5xxl_fp16.safetensors": b"t" * 5000}
    job = put_job(bucket, epochs=1, extra_models=extras)
    code, out = agent.run(job, "prepare")
    assert code == 0, out
    models = agent.volume / "lorabot" / "models"
    for name, content in extras.items():
        assert (models / name).read_bytes() == content
    assert steps_by_name(job.status("prepare"))["model"]["cached"] is False

    second = put_job(bucket, "j2", epochs=1, extra_models=extras)
    code, out = agent.run(second, "prepare")
    assert code == 0, out
    assert steps_by_name(second.status("prepare"))["model"]["cached"] is True


def test_a_corrupted_extra_model_file_fails_the_stage_and_leaves_nothing(bucket: Bucket, agent: Agent):
    job = put_job(bucket, epochs=1, extra_models={"ae.safetensors": b"a" * 3000})
    bucket.put("models/ae.safetensors", b"b" * 3000)  # same size, other bytes: the sha256 catches it
    code, _ = agent.run(job, "prepare")
    assert code != 0
    status = job.status("prepare")
    assert status["phase"] == "failed" and status["error"]["kind"] == "model_download"
    assert "ae.safetensors sha256" in status["error"]["message"]
    assert not list((agent.volume / "lorabot" / "models").glob("ae.safetensors*"))
