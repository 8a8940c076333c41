"""The agent drives the REAL sd-scripts (train_network.py at the pinned commit) on CPU.

One job, planned by the project's own planner from a real ingested dataset: a 2-epoch SD 1.5 character LoRA. A CPU
"pod" prepares the volume, a first train "pod" is stopped with SIGTERM as soon as epoch 1's state is on the volume,
and a new one resumes and finishes. The tests read what really happened: sd-scripts' own files, log lines, state
folders and metadata, and what the agent uploaded and reported.

Only what cannot run on CPU (or would take hours there) is changed, in this file and nowhere else; every change is
printed in the run's summary (`OVERRIDES` below, and the environment's own in tests/realtrainer/environment.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from jobs.agent.artifacts import sample_files, state_complete, state_dir
from jobs.agent.train import TRAINER_COLUMNS
from jobs.catalog import load_catalog
from jobs.dataset import IngestedDataset, ingest_zip, pack_dataset
from jobs.manifest import ModelSource, build_manifest, dataset_key, try_pod_manifest
from jobs.planning import Plan, dataset_facts, make_plan
from jobs.presets import load_presets
from jobs.prices import StaticPriceProvider
from jobs.queue import job_plan_of
from jobs.sandbox.hub import StandinHub
from jobs.sdscripts import HUB_ENDPOINT, TOKENIZERS, build_command, tokenizer_manifest
from jobs.spec import TrainSpec, UserOptions
from jobs.tryplan import (
    LoraRef,
    TryJob,
    TrySpec,
    cell_key,
    parse_try,
    request_entry,
    requests_document,
    requests_key,
    status_key,
)
from tests.agent.bucket import Bucket, BucketServer
from tests.agent.world import Agent, Job, write_pyz

from .conftest import SUMMARY
from .environment import MODEL_FILENAME, TOKENIZER_ID, RealTrainerEnv, load_recipe

pytestmark = [pytest.mark.realtrainer, pytest.mark.timeout(2700)]

TRIGGER = "kanachan"
CLASS_WORD = "1girl"
IMAGES = 3
# Three: the resumed pod saves epoch 2's state, and sd-scripts removes epoch 1's (--save_last_n_epochs_state=1).
EPOCHS = 3
# One pass over the images per epoch (a user option, not an override): the fewest steps that still show resume.
REPEATS = 1
# What the CPU cannot do as the GPU pod does, or not in minutes: (spec field, value here, why).
OVERRIDES: tuple[tuple[str, Any, str], ...] = (
    ("attention", "sdpa", "xFormers needs CUDA; PyTorch's SDPA runs on CPU"),
    ("mixed_precision", "no", "fp16 autocast needs a GPU; the CPU trains in fp32"),
    ("optimizer", "AdamW", "bitsandbytes' 8-bit AdamW needs CUDA"),
    ("resolution", 64, "SD 1.5's real U-Net at 512 px takes minutes per step on 2 cores; 64 px = 8x8 latents"),
    ("min_bucket_reso", 64, "the bucket range must contain the resolution (sd-scripts asserts it)"),
    ("max_bucket_reso", 64, "one bucket for the 64 px images"),
    ("sample_steps", 2, "each sampler step is two U-Net passes on CPU; 2 steps still write the real PNGs"),
)
# The launcher's CPU threads: 1 per process on a GPU pod (the GPU does the work), both cores here.
LAUNCHER_THREADS = "2"
# Seconds the tier waits for each trainer run before calling it hung (the real trainer, 2 cores).
TRAINER_DEADLINE_S = 1200.0
CPU_CHECK = "import torch; print(f'torch {torch.__version__} on CPU, {torch.get_num_threads()} threads')"


# --- building the job --------------------------------------------------------------------------------------------
def character_zip(path: Path) -> Path:
    """A user's upload: a flat folder of small PNGs with captions naming the trigger."""
    with zipfile.ZipFile(path, "w") as zf:
        for index in range(IMAGES):
            png = io.BytesIO()
            Image.new("RGB", (64, 64), (60 + index * 60, 90, 150 - index * 40)).save(png, "PNG")
            zf.writestr(f"kanachan/{index:03d}.png", png.getvalue())
            zf.writestr(f"kanachan/{index:03d}.txt", f"{TRIGGER}, {CLASS_WORD}, smile, simple background")
    return path


def cpu_spec(spec: TrainSpec) -> tuple[TrainSpec, list[str]]:
    """The plan's spec with the CPU overrides, and a line per override saying what changed and why."""
    changes = {name: value for name, value, _ in OVERRIDES}
    lines = [f"{name}: {getattr(spec, name)!r} -> {value!r} ({why})" for name, value, why in OVERRIDES]
    return dataclasses.replace(spec, **changes), lines


def cpu_recipe(env: RealTrainerEnv) -> tuple[dict[str, Any], list[str]]:
    """The production recipe with its build steps pointing at the cached environment (built once per recipe hash
    by environment.py, as the CPU pod would build it), and the GPU check and launcher threads for a CPU."""
    production = load_recipe()
    launcher = list(production["launcher"])
    threads = launcher.index("--num_cpu_threads_per_process") + 1
    lines = [
        f"launcher --num_cpu_threads_per_process: {launcher[threads]} -> {LAUNCHER_THREADS} (the CPU does the work)",
        "gpu_check: torch must see CUDA -> torch must import (there is no GPU)",
    ]
    launcher[threads] = LAUNCHER_THREADS
    recipe = {
        "name": production["name"] + "-cpu-test",
        "python": production["python"],
        "python_version": production["python_version"],
        "steps": [
            {"name": "venv", "argv": ["ln", "-s", str(env.venv), "{venv}"]},
            {"name": "sd-scripts", "argv": ["ln", "-s", str(env.sd_scripts), "{sd_scripts}"]},
        ],
        "launcher": launcher,
        "gpu_check": ["{venv}/bin/python", "-c", CPU_CHECK],
    }
    return recipe, lines


def seed_volume(volume: Path, env: RealTrainerEnv) -> None:
    """What the volume holds after earlier jobs: the base model (verified, docs/CONTRACTS.md "Layout on the
    volume"). The tokenizer is not there: the CPU stage fetches it, as in production."""
    models = volume / "lorabot" / "models"
    models.mkdir(parents=True)
    target = models / MODEL_FILENAME
    try:
        os.link(env.model, target)  # 2 GB: shared with the cache, not copied
    except OSError:
        shutil.copyfile(env.model, target)
    size = target.stat().st_size
    verified = json.dumps({"sha256": env.model_sha256, "size": size}, sort_keys=True)
    (models / f".{MODEL_FILENAME}.verified").write_text(verified)


def real_tokenizer_files(env: RealTrainerEnv) -> dict[str, bytes]:
    """The real CLIP tokenizer files environment.py built (its Hugging Face cache snapshot), to serve as the Hub."""
    repo = env.hf_home / "hub" / ("models--" + TOKENIZER_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / (repo / "refs" / "main").read_text().strip()
    return {path.name: path.read_bytes() for path in snapshot.iterdir() if path.is_file()}


@dataclass
class RealRun:
    plan: Plan
    spec: TrainSpec
    job: Job
    bucket: Bucket
    volume: Path
    output: Path
    logs: Path
    first_pod_output: str
    interrupted: dict[str, Any]
    final: dict[str, Any]
    seconds: dict[str, float]
    # what was on the volume at two moments: epoch 1's state when the first pod was stopped, and the state folders
    # once the resumed pod had saved epoch 2's (before the cleanup removed everything heavy)
    state_one_files: list[str]
    states_after_epoch_two: list[str]
    hub: StandinHub
    violations: str
    served: dict[str, bytes]

    @property
    def name(self) -> str:
        return self.spec.output_name


def wait_for_state(proc: subprocess.Popen[str], folder: Path, epoch: int, logs: Path) -> None:
    deadline = time.monotonic() + TRAINER_DEADLINE_S
    while not state_complete(folder, epoch):
        if proc.poll() is not None:
            raise AssertionError(f"the pod exited ({proc.returncode}) before {folder.name}:\n{trainer_tail(logs)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no complete {folder.name} after {TRAINER_DEADLINE_S:.0f} s:\n{trainer_tail(logs)}")
        time.sleep(0.25)


def trainer_tail(logs: Path) -> str:
    texts = [p.read_text(errors="replace")[-6000:] for p in sorted(logs.glob("trainer-*.log"))]
    return "\n".join(texts) or "(no trainer log)"


@pytest.fixture(scope="module")
def real_run(real_env: RealTrainerEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRun]:
    work = tmp_path_factory.mktemp("realtrainer")
    seconds: dict[str, float] = {}
    dataset: IngestedDataset = ingest_zip(character_zip(work / "upload.zip"), work / "dataset")
    plan = make_plan(
        dataset,
        UserOptions(preset="sd15-character", trigger=TRIGGER, class_word=CLASS_WORD, epochs=EPOCHS, repeats=REPEATS),
        presets=load_presets(),
        catalog=load_catalog(),
        prices=StaticPriceProvider(),
    )
    assert plan.script == "train_network.py" and plan.model.file.filename == MODEL_FILENAME
    spec, spec_lines = cpu_spec(plan.spec)
    command = build_command(spec, dataset_facts(dataset), plan.model)
    job_plan = job_plan_of(dataclasses.replace(plan, spec=spec, command=command))
    recipe, recipe_lines = cpu_recipe(real_env)
    SUMMARY.extend(f"override: {line}" for line in [*spec_lines, *recipe_lines])
    SUMMARY.extend(f"override: {o.render()}" for o in real_env.overrides)
    SUMMARY.append(f"override: base model: {MODEL_FILENAME} is random weights built by sd-scripts' model code")
    print("\n".join(SUMMARY))

    volume, pod_dir = work / "volume", work / "pod"
    pod_dir.mkdir()
    seed_volume(volume, real_env)
    served = real_tokenizer_files(real_env)
    (wanted,) = TOKENIZERS[job_plan.script]
    assert wanted.repo == TOKENIZER_ID and set(wanted.files) <= set(served), sorted(served)
    with BucketServer() as bucket, StandinHub(repos={TOKENIZER_ID: served}) as hub:
        SUMMARY.append(
            f"override: hub endpoint: {HUB_ENDPOINT} -> {hub.url} (a local Hub serving the real CLIP tokenizer files "
            "the tier builds; the CPU stage fetches them from it as from huggingface.co)"
        )
        packed_sha, packed_size = pack_dataset(dataset.root, work / "packed.zip")
        bucket.put(dataset_key(packed_sha), (work / "packed.zip").read_bytes())
        model = ModelSource(
            url=bucket.presign_get(f"models/{MODEL_FILENAME}"),  # never fetched: the volume has it, verified
            filename=MODEL_FILENAME,
            size=real_env.model.stat().st_size,
            sha256=real_env.model_sha256,
        )
        manifest = build_manifest(
            job_id="j1",
            output_name=job_plan.output_name,
            stages=["train"],
            env_recipe=recipe,
            model=model,
            dataset_sha256=packed_sha,
            dataset_size=packed_size,
            script=job_plan.script,
            args=job_plan.args,
            files=job_plan.files,
            epochs=job_plan.epochs,
            sample_prompts=job_plan.sample_prompts,
            store=bucket,
            expires_s=3600,
            status_interval_s=2.0,
            tokenizers=tokenizer_manifest(job_plan.script, hub.url),
        )
        job = Job("j1", job_plan.output_name, manifest, bucket)
        bucket.put(job.keys.manifest, json.dumps(manifest).encode())

        agent = Agent(write_pyz(work / "lorabot-agent.pyz"), volume, pod_dir)
        # Real time (the trainer's own pace). No Hugging Face variables: the agent sets the trainer's, as on a pod.
        pod_env = {"LORABOT_TIME_SCALE": "1"}
        # The GPU "pods" run under the test world's network guard: the agent and the real trainer may reach the
        # bucket and nothing else (the Hub above all); an attempt is refused and recorded.
        gpu_env = {**pod_env, **agent.guard_env(job)}
        started = time.monotonic()
        code, out = agent.run(job, "prepare", extra=pod_env, timeout=300)
        assert code == 0, out
        seconds["prepare"] = time.monotonic() - started

        output = volume / "lorabot" / "jobs" / "j1" / "output"
        logs = output.parent / "logs"
        started = time.monotonic()
        first = agent.start(job, "train", extra={**gpu_env, "RUNPOD_POD_ID": "gpu-pod-1"})
        try:
            wait_for_state(first, state_dir(output, job.output_name, 1), 1, logs)
            state_one_files = sorted(p.name for p in state_dir(output, job.output_name, 1).iterdir())
            seconds["first_pod"] = time.monotonic() - started
            first.send_signal(signal.SIGTERM)
            first_out, _ = first.communicate(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()
        interrupted = job.status("train")

        started = time.monotonic()
        second = agent.start(job, "train", extra={**gpu_env, "RUNPOD_POD_ID": "gpu-pod-2"})
        try:
            states_after_epoch_two = states_once_epoch_two_replaced_one(second, output, job.output_name, logs)
            out, _ = second.communicate(timeout=TRAINER_DEADLINE_S)
        finally:
            if second.poll() is None:
                second.kill()
                second.communicate()
        code = second.returncode
        seconds["second_pod"] = time.monotonic() - started
        assert code == 0, f"{out}\n{trainer_tail(logs)}"
        final = job.status("train")
        it_per_s = final["progress"]["it_per_s"]
        speed = f"{1 / it_per_s:.1f} s/step" if it_per_s else "unknown s/step"
        SUMMARY.append(
            f"measured: {speed} (sd-scripts' own bar, resumed run); prepare {seconds['prepare']:.0f} s, "
            f"first pod to epoch 1's state {seconds['first_pod']:.0f} s, second pod {seconds['second_pod']:.0f} s; "
            f"venv {real_env.facts['venv_bytes'] / 2**30:.2f} GiB"
        )
        yield RealRun(
            plan,
            spec,
            job,
            bucket,
            volume,
            output,
            logs,
            first_out,
            interrupted,
            final,
            seconds,
            state_one_files,
            states_after_epoch_two,
            hub,
            agent.violations(),
            served,
        )


def states_once_epoch_two_replaced_one(proc: subprocess.Popen[str], output: Path, name: str, logs: Path) -> list[str]:
    """The state folders on the volume once epoch 2's is complete and sd-scripts has removed epoch 1's (it does so
    right after saving, before epoch 3 trains; the agent's cleanup comes only after the last epoch)."""
    deadline = time.monotonic() + TRAINER_DEADLINE_S
    while not (state_complete(state_dir(output, name, 2), 2) and not state_dir(output, name, 1).exists()):
        if proc.poll() is not None:
            raise AssertionError(f"the pod exited ({proc.returncode}) before epoch 2's state:\n{trainer_tail(logs)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"epoch 2's state never replaced epoch 1's:\n{trainer_tail(logs)}")
        time.sleep(0.1)
    return sorted(p.name for p in output.iterdir() if p.name.endswith("-state"))


def logged_line(log: str, message: str) -> str:
    """The one line of a trainer log that holds `message` whole (rich's record: time, level, message, source)."""
    lines = [line for line in log.splitlines() if message in line]
    assert lines, f"no line holds {message!r} whole (COLUMNS={TRAINER_COLUMNS} for the trainer):\n{log[-4000:]}"
    return lines[0]


def read_metadata(data: bytes) -> dict[str, str]:
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    return dict(header.get("__metadata__", {}))


# --- (1) the planned job's real files, uploaded under the right keys --------------------------------------------
def test_each_epoch_lora_state_and_samples_are_sd_scripts_own_and_uploaded_under_their_keys(real_run: RealRun):
    run, keys, name = real_run, real_run.job.keys, real_run.name
    assert run.final["phase"] == "succeeded", run.final["error"]
    for entry in run.final["epochs"]:  # what the agent hashed on the volume is what the bucket holds
        data = run.bucket.read(keys.checkpoint(entry["epoch"]))
        assert hashlib.sha256(data).hexdigest() == entry["checkpoint"]["sha256"]
        assert read_metadata(data)["ss_epoch"] == str(entry["epoch"])
    # the last epoch's checkpoint is the final LoRA
    assert run.bucket.read(keys.checkpoint(EPOCHS)) == run.bucket.read(keys.final)
    assert run.final["final"]["size"] == len(run.bucket.read(keys.final))
    # epoch 1's state as accelerate wrote it (seen before the first pod was stopped)
    assert set(run.state_one_files) >= {"model.safetensors", "optimizer.bin", "scheduler.bin", "train_state.json"}
    assert any(n.startswith("random_states_") for n in run.state_one_files)
    for epoch in range(1, EPOCHS + 1):
        for index, path in sample_files(run.output, name, epoch).items():
            assert run.bucket.read(keys.sample(epoch, index)) == path.read_bytes()
    assert len(sample_files(run.output, name, EPOCHS)) == len(run.spec.sample_prompts)
    assert [e["epoch"] for e in run.final["epochs"]] == list(range(1, EPOCHS + 1))


def test_only_the_newest_state_stays_while_training_and_nothing_heavy_once_every_upload_is_confirmed(
    real_run: RealRun,
):
    run, name = real_run, real_run.name
    # --save_last_n_epochs_state=1: sd-scripts removed epoch 1's state once epoch 2's was written
    assert run.states_after_epoch_two == [f"{name}-000002-state"]
    second_log = (run.logs / "trainer-2.log").read_text(errors="replace")
    logged_line(second_log, f"removing old state: {state_dir(run.output, name, 1)}")
    # The last epoch saves no numbered state: sd-scripts saves "<name>-state" when training ends instead.
    logged_line(second_log, "saving last state.")
    assert f"saving state at epoch {EPOCHS}" not in second_log
    # the agent confirmed every upload, then removed the LoRAs and states; samples and logs stay
    assert sorted(p.name for p in run.output.iterdir() if p.name.endswith((".safetensors", "-state"))) == []
    assert (run.output.parent / "UPLOADED").is_file() and (run.output.parent / "uploads.json").is_file()
    assert sample_files(run.output, name, EPOCHS)


# --- (2) SIGTERM after epoch 1's state, a new pod resumes at epoch 2 --------------------------------------------
def test_sigterm_after_epoch_1_then_a_new_pod_loads_the_state_and_trains_only_the_epochs_after_it(real_run: RealRun):
    run, name = real_run, real_run.name
    assert run.interrupted["phase"] == "interrupted", run.first_pod_output
    assert run.interrupted["last_completed_epoch"] == 1
    first_log = (run.logs / "trainer-1.log").read_text(errors="replace")
    second_log = (run.logs / "trainer-2.log").read_text(errors="replace")
    assert re.findall(rf"^epoch (\d+)/{EPOCHS}\s*$", first_log, re.MULTILINE)[0] == "1"
    state = state_dir(run.output, name, 1)
    # Each record on one line (the agent's COLUMNS): the path whole, then the source file at the right.
    line = logged_line(second_log, f"resume training from local state: {state}")
    assert re.search(r"INFO +resume training from local state: \S+ +train_util\.py:\d+$", line), line
    logged_line(second_log, f"load train state from {state}/train_state.json")
    # accelerate's load_state reports each part it restored, the optimizer's moments among them.
    logged_line(second_log, "All optimizer states loaded successfully")
    assert re.findall(rf"^epoch (\d+)/{EPOCHS}\s*$", second_log, re.MULTILINE) == [str(e) for e in range(2, EPOCHS + 1)]
    assert run.final["resumed_from"] == state.name
    assert run.final["epochs"][1]["checkpoint"] is not None


def test_the_agent_reports_every_step_once_and_a_gallery_of_what_was_drawn(real_run: RealRun):
    run, name = real_run, real_run.name
    steps = run.plan.steps.total
    assert steps == IMAGES * REPEATS * EPOCHS
    progress = run.final["progress"]
    assert progress["step"] == progress["total_steps"] == steps, progress
    assert progress["epoch"] == progress["total_epochs"] == EPOCHS
    for entry in run.final["epochs"]:
        drawn = sample_files(run.output, name, entry["epoch"])
        uploaded = {s["index"] for s in entry["samples"]}
        assert uploaded == set(drawn), (entry, drawn)
        lost = set(entry.get("samples_lost") or [])
        if lost:  # epoch 1's samples come after its state: a pod stopped in between never draws them
            assert uploaded | lost == set(range(len(run.spec.sample_prompts)))
    assert {s["index"] for s in run.final["epochs"][-1]["samples"]} == set(range(len(run.spec.sample_prompts)))


# --- (2b) the tokenizer: fetched by the CPU stage from the Hub endpoint, nothing fetched on GPU time ------------
def test_the_cpu_stage_fetched_the_real_tokenizer_and_the_gpu_pods_reached_only_the_bucket(real_run: RealRun):
    run = real_run
    folder = run.volume / "lorabot" / "hf" / "tokenizers" / TOKENIZER_ID.replace("/", "_")
    (wanted,) = TOKENIZERS[run.job.manifest["script"]]
    for filename in wanted.files:
        assert (folder / filename).read_bytes() == run.served[filename], filename
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 77
    # every fetch came from the CPU stage, before any GPU pod started; each file once
    fetched = run.hub.fetched()
    assert sorted(fetched) == sorted(f"/{TOKENIZER_ID}/resolve/main/{f}" for f in wanted.files if f in run.served)
    # the real trainer loaded it from --tokenizer_cache_dir, not from a Hub or its cache
    for log in ("trainer-1.log", "trainer-2.log"):
        logged_line((run.logs / log).read_text(errors="replace"), f"load tokenizer from cache: {folder}")
    assert run.violations == "", run.violations


# --- (3) the LoRA says what it was trained for ------------------------------------------------------------------
def test_the_lora_metadata_names_the_trigger_and_the_base_model(real_run: RealRun, real_env: RealTrainerEnv):
    run, name = real_run, real_run.name
    for epoch in range(1, EPOCHS + 1):
        meta = read_metadata(run.bucket.read(run.job.keys.checkpoint(epoch)))
        assert meta["ss_output_name"] == name
        assert meta["ss_epoch"] == str(epoch)
        assert meta["ss_sd_model_name"] == MODEL_FILENAME
        assert meta["ss_new_sd_model_hash"] == real_env.model_sha256
        assert meta["ss_base_model_version"] == "sd_v1"
        assert meta["ss_network_module"] == run.spec.network_module
        assert meta["ss_network_dim"] == str(run.spec.network_dim)
        subsets = json.loads(meta["ss_datasets"])[0]["subsets"]
        assert {s["class_tokens"] for s in subsets} == {f"{TRIGGER} {CLASS_WORD}"}
        tags = json.loads(meta["ss_tag_frequency"])
        assert all(counts.get(TRIGGER) == IMAGES for counts in tags.values()), tags


# --- (4) /try: the real gen_img.py draws each epoch's LoRA on a TRY pod over the job's volume --------------------
TRY_PROMPTS = f"{TRIGGER}, {CLASS_WORD}, smile | {TRIGGER}, {CLASS_WORD}, from side"
TRY_EPOCHS = (1, EPOCHS)
TRY_SEED = 7
TRY_MANIFEST_KEY = "jobs/j1/try/manifest.json"


@dataclass
class RealTry:
    spec: TrySpec
    status: dict[str, Any]
    cells: dict[tuple[int, int], bytes]
    run_logs: list[str]
    serve_status: dict[str, Any]
    seconds: float
    violations: str


@pytest.fixture(scope="module")
def real_try(real_run: RealRun) -> Iterator[RealTry]:
    """The job's volume after training (env, model, tokenizer; no LoRA: the agent cleared them), a TRY pod's
    manifest as the orchestrator makes it, and one /try request built by the project's own request builder."""
    run = real_run
    job = TryJob.from_spec(run.spec, job_id=run.job.job_id, epochs_available=range(1, EPOCHS + 1))
    spec = parse_try(job, prompt=TRY_PROMPTS, epochs=",".join(map(str, TRY_EPOCHS)), seed=TRY_SEED)
    loras = {
        e["epoch"]: LoraRef(run.job.keys.checkpoint(e["epoch"]), e["checkpoint"]["sha256"], e["checkpoint"]["size"])
        for e in run.final["epochs"]
    }
    entry = request_entry(
        job, spec, tid="t1", loras=loras, presign_get=run.bucket.presign_get, presign_put=run.bucket.presign_put
    )
    run.bucket.put(requests_key(job.job_id), requests_document([entry]))
    manifest = try_pod_manifest(run.job.manifest, store=run.bucket, expires_s=3600, poll_s=1.0)
    run.bucket.put(TRY_MANIFEST_KEY, json.dumps(manifest).encode())
    agent = Agent(write_pyz(run.volume.parent / "try-agent.pyz"), run.volume, run.volume.parent / "pod")
    extra = {
        "LORABOT_TIME_SCALE": "1",
        "LORABOT_MANIFEST_URL": run.bucket.presign_get(TRY_MANIFEST_KEY),
        "RUNPOD_POD_ID": "try-pod-1",
        **agent.guard_env(run.job),
    }
    started = time.monotonic()
    pod = agent.start(run.job, "serve", extra=extra)
    try:
        deadline = time.monotonic() + TRAINER_DEADLINE_S
        while True:
            body = run.bucket.objects.get(status_key(job.job_id, "t1"))
            status = json.loads(body) if body else {}
            if status.get("phase") in ("done", "failed"):
                break
            if pod.poll() is not None:
                raise AssertionError(f"the TRY pod exited ({pod.returncode}): {pod.communicate()[0]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"/try did not finish in {TRAINER_DEADLINE_S:.0f} s")
            time.sleep(0.5)
        seconds = time.monotonic() - started
    finally:
        pod.send_signal(signal.SIGTERM)
        try:
            pod.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pod.kill()
            pod.communicate()
    request_dir = run.volume / "lorabot" / "jobs" / job.job_id / "try" / "t1"
    cells = {
        (e, i): data
        for e in spec.epochs
        for i in range(len(spec.prompts))
        if (data := run.bucket.objects.get(cell_key(job.job_id, "t1", e, i))) is not None
    }
    SUMMARY.append(f"measured: /try with the real gen_img.py, {spec.cells} images at 64 px: {seconds:.0f} s")
    yield RealTry(
        spec,
        status,
        cells,
        [p.read_text(errors="replace") for p in sorted(request_dir.glob("run-*.log"))],
        json.loads(run.bucket.read(run.job.keys.status("serve"))),
        seconds,
        agent.violations(),
    )


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


def test_try_runs_the_real_gen_img_once_per_epoch_with_that_epochs_lora_and_uploads_every_cell(
    real_run: RealRun, real_try: RealTry
):
    tried = real_try
    assert tried.status["phase"] == "done", (tried.status, tried.run_logs[-1:] if tried.run_logs else None)
    assert tried.status["cells_done"] == tried.status["cells"] == len(TRY_EPOCHS) * 2
    assert sorted(tried.cells) == [(e, i) for e in TRY_EPOCHS for i in range(2)]
    for data in tried.cells.values():
        assert png_size(data) == (real_run.spec.resolution, real_run.spec.resolution)
    # One run of sd-scripts' gen_img.py per epoch, each loading that epoch's LoRA (by hash, from the agent's cache)
    assert len(tried.run_logs) == len(TRY_EPOCHS)
    for epoch, log in zip(TRY_EPOCHS, tried.run_logs, strict=True):
        sha = next(e["checkpoint"]["sha256"] for e in real_run.final["epochs"] if e["epoch"] == epoch)
        logged_line(log, f"load network weights from: {real_run.volume}/lorabot/jobs/j1/try/loras/{sha}.safetensors")
        assert "weights are loaded" in log
    # the TRY pod never trained and never reached anything but the bucket
    assert tried.serve_status["serve"]["done"] == ["t1"]
    assert real_run.job.status("train")["phase"] == "succeeded"
    assert tried.violations == "", tried.violations


def test_try_cells_follow_their_epoch_and_prompt(real_try: RealTry):
    cells = real_try.cells
    # Same seed and prompt, another epoch's LoRA: another image; same epoch, another prompt: another image.
    assert cells[(TRY_EPOCHS[0], 0)] != cells[(TRY_EPOCHS[1], 0)]
    assert cells[(TRY_EPOCHS[0], 0)] != cells[(TRY_EPOCHS[0], 1)]
