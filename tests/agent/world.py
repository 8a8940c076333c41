"""The agent's test world: a bucket with a job in it, a volume folder, and the agent run as the pod would run it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from PIL import Image

from jobs.agent_bundle import build_agent
from jobs.manifest import JobKeys, ModelSource, build_manifest, dataset_key
from jobs.sandbox.hub import StandinHub
from jobs.sandbox.recipe import sandbox_recipe
from jobs.sdscripts import tokenizer_manifest


class Store(Protocol):
    """What a job needs of a bucket: this folder's Bucket, or the world's moto-backed S3World."""

    def presign_get(self, key: str, expires_s: int = 3600) -> str: ...

    def presign_put(self, key: str, expires_s: int = 3600) -> str: ...

    def put(self, key: str, data: bytes) -> None: ...

    def read(self, key: str) -> bytes: ...


REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "jobs" / "sandbox" / "sdscripts"
NETGUARD = REPO / "tests" / "world" / "netguard"
SCRIPT = "sdxl_train_network.py"
_HUB: StandinHub | None = None


def standin_hub() -> StandinHub:
    """One stand-in Hub for the whole test run: CPU stages fetch the trainer's tokenizers from it."""
    global _HUB
    if _HUB is None:
        _HUB = StandinHub().start()
    return _HUB


# Simulated seconds per real second: an epoch of the stand-in (2 steps, a checkpoint, a state, 2 samples) takes
# ~5 simulated seconds, i.e. a quarter of a real second.
TIME_SCALE = 20.0
MODEL_BYTES = hashlib.sha256(b"base model").digest() * 4096  # 128 KiB stands in for 6.9 GB
DATASET_TOML = """[general]
caption_extension = ".txt"

[[datasets]]
resolution = 512
batch_size = 1

  [[datasets.subsets]]
  image_dir = "{data_dir}/1_kana"
  num_repeats = 1
"""
PROMPTS = "kana, 1girl, smile --w 512 --h 512 --d 1\nkana, 1girl, standing --w 512 --h 512 --d 2\n"


FIXED_TIME = (2026, 1, 1, 0, 0, 0)


def dataset_zip(images: int = 2) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for index in range(images):
            png = io.BytesIO()
            Image.new("RGB", (64, 64), (index * 40, 80, 120)).save(png, "PNG")
            # Fixed timestamps: the same dataset must be the same bytes (it is cached by hash), whatever the clock.
            zf.writestr(zipfile.ZipInfo(f"1_kana/{index:03d}.png", FIXED_TIME), png.getvalue())
            zf.writestr(zipfile.ZipInfo(f"1_kana/{index:03d}.txt", FIXED_TIME), "kana, 1girl")
    return buffer.getvalue()


@dataclass
class Job:
    job_id: str
    output_name: str
    manifest: dict[str, Any]
    bucket: Store

    @property
    def keys(self) -> JobKeys:
        return JobKeys(self.job_id, self.output_name)

    @property
    def manifest_url(self) -> str:
        return self.bucket.presign_get(self.keys.manifest)

    def status(self, stage: str) -> dict[str, Any]:
        return json.loads(self.bucket.read(self.keys.status(stage)))

    def history(self, stage: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.bucket.read(self.keys.history(stage)).splitlines()]


def put_job(
    bucket: Store,
    job_id: str = "j1",
    *,
    epochs: int = 3,
    model_sha256: str | None = "auto",
    dataset: bytes | None = None,
    upload_dataset: bool = True,
    stages: list[str] | None = None,
    status_interval_s: float = 5.0,
    ready_timeout_s: int = 600,
    extra_models: dict[str, bytes] | None = None,
    trainer_silence_s: int = 1200,
    model: tuple[str, bytes] = ("base.safetensors", MODEL_BYTES),
    extra_args: list[str] | None = None,
) -> Job:
    """Upload the model, the dataset and a manifest for a job on the stand-in trainer; return the job."""
    data = dataset if dataset is not None else dataset_zip()
    data_sha = hashlib.sha256(data).hexdigest()
    if upload_dataset:
        bucket.put(dataset_key(data_sha), data)
    model_name, model_bytes = model
    bucket.put(f"models/{model_name}", model_bytes)
    sha = hashlib.sha256(model_bytes).hexdigest() if model_sha256 == "auto" else model_sha256
    output_name = "kana"
    extras = []
    for filename, content in (extra_models or {}).items():
        bucket.put(f"models/{filename}", content)
        extras.append(
            ModelSource(
                url=bucket.presign_get(f"models/{filename}"),
                filename=filename,
                size=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
            )
        )
    args = [
        "--pretrained_model_name_or_path={model_path}",
        "--tokenizer_cache_dir={tokenizers_dir}",
        "--dataset_config={job_dir}/dataset.toml",
        "--output_dir={output_dir}",
        f"--output_name={output_name}",
        "--network_module=networks.lora",
        "--network_dim=4",
        f"--max_train_epochs={epochs}",
        "--save_every_n_epochs=1",
        "--save_state",
        "--sample_prompts={job_dir}/sample_prompts.txt",
        "--sample_every_n_epochs=1",
        "--save_model_as=safetensors",
        "--seed=42",
        *(extra_args or []),
    ]
    manifest = build_manifest(
        job_id=job_id,
        output_name=output_name,
        stages=stages or ["train"],
        env_recipe=sandbox_recipe(STANDIN),
        model=ModelSource(
            url=bucket.presign_get(f"models/{model_name}"),
            filename=model_name,
            size=len(model_bytes),
            sha256=sha,
            token_env="HF_TOKEN",
            extra_files=tuple(extras),
        ),
        dataset_sha256=data_sha,
        dataset_size=len(data),
        script=SCRIPT,
        args=args,
        files={"dataset.toml": DATASET_TOML, "sample_prompts.txt": PROMPTS},
        epochs=epochs,
        sample_prompts=2,
        store=bucket,
        expires_s=3600,
        status_interval_s=status_interval_s,
        ready_timeout_s=ready_timeout_s,
        trainer_silence_s=trainer_silence_s,
        tokenizers=tokenizer_manifest(SCRIPT, standin_hub().url),
    )
    job = Job(job_id, output_name, manifest, bucket)
    bucket.put(job.keys.manifest, json.dumps(manifest).encode())
    return job


class Agent:
    """Runs the zipapp exactly as a pod's start command would, with the pod's environment."""

    def __init__(self, pyz: Path, volume: Path, workdir: Path) -> None:
        self.pyz, self.volume, self.workdir = pyz, volume, workdir

    def env(self, job: Job, stage: str, gpu: bool, extra: dict[str, str] | None) -> dict[str, str]:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.workdir),
            "LORABOT_MANIFEST_URL": job.manifest_url,
            "LORABOT_AGENT_URL": job.bucket.presign_get("agent.pyz"),
            "LORABOT_STAGE": stage,
            "LORABOT_VOLUME": str(self.volume),
            "LORABOT_TIME_SCALE": str(TIME_SCALE),
            "RUNPOD_POD_ID": f"pod-{stage}",
            "HF_TOKEN": "hf_secretvalue123",
        }
        if gpu:
            env["LORABOT_FAKE_GPU"] = "NVIDIA GeForce RTX 4090"
            env.update(self.guard_env(job))
        env.update(extra or {})
        return env

    @property
    def violations_log(self) -> Path:
        return self.workdir / "net-violations.log"

    def guard_env(self, job: Job) -> dict[str, str]:
        """A GPU pod's Python processes may reach the bucket and nothing else (tests/world/netguard)."""
        bucket = urlsplit(job.manifest_url)
        return {
            "PYTHONPATH": str(NETGUARD),
            "LORABOT_NET_ALLOW": f"{bucket.hostname}:{bucket.port}",
            "LORABOT_NET_VIOLATIONS": str(self.violations_log),
        }

    def violations(self) -> str:
        return self.violations_log.read_text() if self.violations_log.exists() else ""

    def start(
        self,
        job: Job,
        stage: str,
        *,
        gpu: bool = False,
        extra: dict[str, str] | None = None,
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(self.pyz), stage],
            cwd=self.workdir,
            env=self.env(job, stage, gpu, extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(
        self, job: Job, stage: str, *, gpu: bool = False, extra: dict[str, str] | None = None, timeout: float = 60
    ) -> tuple[int, str]:
        proc = self.start(job, stage, gpu=gpu, extra=extra)
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def write_pyz(path: Path) -> Path:
    data, _sha = build_agent()
    path.write_bytes(data)
    return path
