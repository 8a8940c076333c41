"""The agent in the full test world: emulated RunPod pods on one Network Volume, moto S3 as the bucket.

The pods run the real start command (jobs/manifest.py `start_command()`): download the zipapp by presigned URL,
exec it with LORABOT_STAGE. The GPU pod is created before the CPU pod has finished, so it must wait for READY.
"""

from __future__ import annotations

import runpod

from jobs.agent_bundle import build_agent
from jobs.manifest import start_command
from jobs.sandbox.emulator import RunpodEmulator
from tests.world.s3 import S3World

from .world import put_job, wait_for

RTX_4090 = "NVIDIA GeForce RTX 4090"


def pod_env(job, stage: str, s3_world: S3World) -> dict[str, str]:
    return {
        "LORABOT_AGENT_URL": s3_world.presign_get("agent/lorabot.pyz"),
        "LORABOT_MANIFEST_URL": job.manifest_url,
        "LORABOT_STAGE": stage,
        "LORABOT_VOLUME": "/workspace",
        "HF_TOKEN": "hf_secretvalue123",
    }


async def test_cpu_pod_prepares_the_volume_and_gpu_pod_trains_on_it(runpod_emulator: RunpodEmulator, s3_world: S3World):
    agent, _sha = build_agent()
    s3_world.put("agent/lorabot.pyz", agent)
    job = put_job(s3_world, "j7", epochs=3)
    volume = runpod_emulator.create_volume("lorabot-cache", 30, "US-KS-2")
    # The GPU pod is up first (as when the orchestrator reserves it early): its agent has to wait for READY.
    runpod_emulator.set_startup_delay("gpu", 1)
    runpod_emulator.set_startup_delay("cpu", 60)

    gpu = runpod.create_pod(
        "lorabot-j7-gpu",
        "runpod/pytorch",
        RTX_4090,
        network_volume_id=volume.id,
        volume_mount_path="/workspace",
        docker_args=start_command(),
        env=pod_env(job, "train", s3_world),
    )["id"]
    cpu = runpod.create_pod(
        "lorabot-j7-cpu",
        "runpod/base",
        instance_id="cpu3g-2-8",
        network_volume_id=volume.id,
        volume_mount_path="/workspace",
        docker_args=start_command(),
        env=pod_env(job, "prepare", s3_world),
    )["id"]

    def phase(stage: str) -> str | None:
        return job.status(stage)["phase"] if s3_world.exists(job.keys.status(stage)) else None

    wait_for(lambda: phase("prepare") == "ready", timeout=60, what="READY from the CPU pod")
    wait_for(lambda: phase("train") in ("succeeded", "failed"), timeout=60, what="the GPU pod to finish")
    train = job.status("train")
    assert train["phase"] == "succeeded", (train["error"], runpod_emulator.pod_log(gpu))
    assert train["pod_id"] == gpu and job.status("prepare")["pod_id"] == cpu
    assert "waiting_for_ready" in [entry["phase"] for entry in job.history("train")]
    keys = s3_world.keys("jobs/j7/")
    for epoch in (1, 2, 3):
        assert job.keys.checkpoint(epoch) in keys
        assert {job.keys.sample(epoch, 0), job.keys.sample(epoch, 1)} <= set(keys)
    assert job.keys.final in keys and job.keys.history("train") in keys
    assert (runpod_emulator.volume_path(volume.id) / "lorabot/jobs/j7/READY").is_file()
