"""Every way a job can go wrong ends with the right `error.kind` in status, and no secret leaves the pod."""

from __future__ import annotations

import hashlib
import time

import psutil
import pytest

from .bucket import Bucket
from .world import MODEL_BYTES, Agent, put_job

MODEL_KEY = "models/base.safetensors"


def test_a_torn_model_download_resumes_where_it_stopped(bucket: Bucket, agent: Agent, volume):
    job = put_job(bucket)
    bucket.tear_after[MODEL_KEY] = 50_000
    code, out = agent.run(job, "prepare")
    assert code == 0, out
    model_gets = [r for r in bucket.requests if r.key == MODEL_KEY]
    assert [r.range for r in model_gets] == [None, "bytes=50000-"]
    model = volume / "lorabot/models/base.safetensors"
    assert hashlib.sha256(model.read_bytes()).digest() == hashlib.sha256(MODEL_BYTES).digest()
    assert not list(model.parent.glob("*.part"))


def test_a_model_with_the_wrong_sha256_fails_model_download_and_leaves_nothing(bucket: Bucket, agent: Agent, volume):
    job = put_job(bucket, model_sha256="0" * 64)
    code, _ = agent.run(job, "prepare")
    assert code == 1
    status = job.status("prepare")
    assert status["phase"] == "failed"
    assert status["error"]["kind"] == "model_download"
    assert "expected 0000" in status["error"]["message"]
    assert not list((volume / "lorabot/models").glob("base.safetensors*"))
    assert not (volume / "lorabot/jobs/j1/READY").exists()


def test_a_missing_dataset_fails_with_a_dataset_error(bucket: Bucket, agent: Agent):
    job = put_job(bucket, upload_dataset=False)
    assert agent.run(job, "prepare")[0] == 1
    error = job.status("prepare")["error"]
    assert error == {"kind": "dataset", "message": "dataset download failed: HTTP 404 Not Found"}
    assert b"dataset download failed" in bucket.objects[job.keys.log("prepare")]


def test_a_failed_environment_step_leaves_no_complete_cache(bucket: Bucket, agent: Agent, volume):
    job = put_job(bucket)
    job.manifest["env"]["steps"].append({"name": "broken", "argv": ["{python}", "-c", "raise SystemExit(5)"]})
    bucket.objects[job.keys.manifest] = __import__("json").dumps(job.manifest).encode()
    assert agent.run(job, "prepare")[0] == 1
    assert job.status("prepare")["error"]["kind"] == "env_build"
    assert "'broken' exited with code 5" in job.status("prepare")["error"]["message"]
    assert not list((volume / "lorabot/env").glob("*/COMPLETE"))


@pytest.mark.parametrize(
    ("fault", "kind", "words"),
    [
        ("crash@3", "trainer_crash", "stand-in trainer crashed"),
        ("oom@3", "oom", "ran out of memory"),
        ("nan@3", "nan", "NaN"),
    ],
)
def test_trainer_failures_are_recognised_from_its_log(bucket: Bucket, agent: Agent, fault, kind, words):
    job = put_job(bucket, epochs=3)
    assert agent.run(job, "prepare")[0] == 0
    code, out = agent.run(job, "train", gpu=True, extra={"LORABOT_STANDIN_FAULT": fault})
    assert code == 1, out
    status = job.status("train")
    assert status["phase"] == "failed"
    assert status["error"]["kind"] == kind
    assert words in status["error"]["message"]
    assert job.keys.checkpoint(1) in bucket.objects  # epoch 1 finished before the fault
    assert job.keys.final not in bucket.objects


def test_a_pod_without_a_gpu_fails_fast_with_no_gpu(bucket: Bucket, agent: Agent, volume):
    job = put_job(bucket)
    assert agent.run(job, "prepare")[0] == 0
    assert agent.run(job, "train", gpu=False)[0] == 1
    assert job.status("train")["error"]["kind"] == "no_gpu"
    assert not list((volume / "lorabot/jobs/j1/logs").glob("trainer-*.log"))


def test_a_volume_that_never_gets_ready_times_out(bucket: Bucket, agent: Agent):
    job = put_job(bucket, ready_timeout_s=20)  # simulated seconds: one real second at the test's time scale
    assert agent.run(job, "train", gpu=True)[0] == 1
    status = job.status("train")
    assert status["error"]["kind"] == "ready_timeout"
    assert {entry["phase"] for entry in job.history("train")} == {"waiting_for_ready", "failed"}


def test_uploads_that_fail_for_a_while_are_retried_without_stopping_training(bucket: Bucket, agent: Agent):
    job = put_job(bucket, epochs=2)
    assert agent.run(job, "prepare")[0] == 0
    bucket.failing_puts[job.keys.checkpoint(1)] = 3
    bucket.failing_puts[job.keys.status("train")] = 2
    assert agent.run(job, "train", gpu=True)[0] == 0
    assert job.status("train")["phase"] == "succeeded"
    assert job.keys.checkpoint(1) in bucket.objects


def test_no_secret_reaches_a_log_or_an_upload(bucket: Bucket, agent: Agent, volume):
    job = put_job(bucket, epochs=1)
    assert agent.run(job, "prepare")[0] == 0
    code, out = agent.run(job, "train", gpu=True, extra={"MY_API_KEY": "key-value-987"})
    assert code == 0, out
    secrets = [b"hf_secretvalue123", b"key-value-987", b"X-Sig="]
    for key, body in bucket.objects.items():
        if key.startswith("jobs/j1/") and not key.endswith("manifest.json"):
            assert not any(secret in body for secret in secrets), key
    for log in (volume / "lorabot/jobs/j1/logs").glob("*.log"):
        if log.name in ("prepare.log", "train.log"):
            assert not any(secret in log.read_bytes() for secret in secrets), log
    assert not any(secret.decode() in out for secret in secrets)


def test_a_trainer_that_falls_silent_is_stopped_as_hung_instead_of_billed_for_hours(bucket: Bucket, agent: Agent):
    """The agent keeps reporting, so the bot cannot see it: the agent itself watches sd-scripts' output."""
    job = put_job(bucket, epochs=3, trainer_silence_s=40)
    assert agent.run(job, "prepare")[0] == 0
    started = time.monotonic()
    code, out = agent.run(job, "train", gpu=True, extra={"LORABOT_STANDIN_FAULT": "hang@3"})
    assert code == 1, out
    status = job.status("train")
    assert status["phase"] == "failed" and status["error"]["kind"] == "hang"
    assert "printed nothing for" in status["error"]["message"]
    assert time.monotonic() - started < 20
    assert job.keys.checkpoint(1) in bucket.objects  # what was done before the hang is kept
    pid = int((agent.volume / "lorabot" / "jobs" / job.job_id / "trainer.pid").read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
