"""An environment on the volume that cannot work fails the job at once with what to do, because every new pod would
use the same one; a pod whose torch sees no GPU is the pod's fault, so a new pod is tried first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobs.recipe import GPU_CHECK
from jobs.sandbox.recipe import sandbox_recipe
from jobs.states import JobStatus, NoticeKind, PodRole
from tests.world.lorabot_world import STANDIN, LorabotWorld


def recipe(name: str, **changes: Any) -> dict[str, Any]:
    made = sandbox_recipe(STANDIN)
    made.update(name=f"sandbox-{name}", **changes)
    return made


def started_pods(world: LorabotWorld, job_id: int, role: PodRole) -> int:
    return len([p for p in world.pods(job_id) if p.role is role and p.runpod_pod_id])


def infos(world: LorabotWorld, job_id: int) -> list[str]:
    return [str(n.payload_json.get("text")) for n in world.notices(job_id, NoticeKind.INFO)]


async def test_torch_that_does_not_import_fails_the_job_at_once_saying_the_environment_must_be_rebuilt(
    make_lorabot_world: Callable[..., LorabotWorld],
) -> None:
    """The real recipe's GPU check in the stand-in venv, which has no torch."""
    world = make_lorabot_world(env_recipe=recipe("no-torch", gpu_check=["{venv}/bin/python", "-c", GPU_CHECK]))
    job_id = world.submit(images=3, epochs=2)

    await world.run_until(lambda: world.status(job_id).is_terminal(), timeout=90)

    job = world.job(job_id)
    reason = job.failure_reason or ""
    assert job.status is JobStatus.FAILED_INTERNAL, world.describe()
    assert reason.startswith("train failed (env_broken): the GPU check exited with code 1: "), reason
    assert "ModuleNotFoundError: No module named 'torch'" in reason, reason
    assert "it must be rebuilt" in reason and "lorabot/env/<hash>" in reason, reason
    assert started_pods(world, job_id, PodRole.GPU) == 1
    assert not [text for text in infos(world, job_id) if "trying a new GPU pod" in text]
    assert world.running_pods() == []


async def test_a_venv_of_another_python_than_the_recipe_records_fails_on_the_cpu_pod_without_a_second_one(
    make_lorabot_world: Callable[..., LorabotWorld],
) -> None:
    """The CPU stage checks the venv's interpreter before it marks the environment complete; a GPU pod reserved
    meanwhile is terminated with the job."""
    world = make_lorabot_world(env_recipe=recipe("py-other", python_version="3.0"))
    job_id = world.submit(images=3, epochs=2)

    await world.run_until(lambda: world.status(job_id).is_terminal(), timeout=90)

    job = world.job(job_id)
    reason = job.failure_reason or ""
    assert job.status is JobStatus.FAILED_INTERNAL, world.describe()
    assert reason.startswith("prepare failed (env_mismatch): the venv's interpreter "), reason
    assert "but the recipe records 3.0" in reason, reason
    assert "no new pod is tried" in reason, reason
    assert started_pods(world, job_id, PodRole.CPU) == 1
    assert not [text for text in infos(world, job_id) if "trying a new CPU pod" in text]
    assert world.running_pods() == []


async def test_a_gpu_pod_whose_torch_sees_no_cuda_is_replaced_once_then_the_job_fails_with_no_gpu(
    make_lorabot_world: Callable[..., LorabotWorld],
) -> None:
    no_cuda = "import sys; print('torch 2.6.0+cu124 (CUDA 12.4) finds no CUDA device', file=sys.stderr); sys.exit(3)"
    world = make_lorabot_world(env_recipe=recipe("no-cuda", gpu_check=["{venv}/bin/python", "-c", no_cuda]))
    job_id = world.submit(images=3, epochs=2)

    await world.run_until(lambda: world.status(job_id).is_terminal(), timeout=120)

    job = world.job(job_id)
    reason = job.failure_reason or ""
    assert job.status is JobStatus.FAILED_TRAINER, world.describe()
    assert reason.startswith("train failed (no_gpu): torch imports but does not see a CUDA GPU on this pod"), reason
    assert "finds no CUDA device" in reason, reason
    assert started_pods(world, job_id, PodRole.GPU) == 2
    assert [text for text in infos(world, job_id) if "trying a new GPU pod" in text]
    assert world.running_pods() == []
