"""RunPod's REST v2 answers to a create, one case each, the way its createPod table says to handle them: 422 (our
bug: fail, never retry), 400 on every candidate (not placeable: wait, then give up at the deadline), 402 (no
balance: nobody gets a new pod, running ones go on, queued ones wait and start once it is back), 403 on one
candidate (skip it), a 429 storm (wait Retry-After) and 5xx on terminate (retry). Each ends with zero pods, a
specific message, and the ledger equal to RunPod's bill."""

from __future__ import annotations

import time
from collections.abc import Callable

from jobs.states import JobStatus, NoticeKind, PodRole
from tests.faults.harness import When, check_promises, cpu_pod_created, drive, epochs_announced
from tests.world.lorabot_world import RTX_3090, RTX_4090, LorabotWorld


def texts(world: LorabotWorld, job_id: int) -> list[str]:
    return [str(n.payload_json.get("text", "")) for n in world.notices(job_id, NoticeKind.INFO)]


async def test_a_create_body_that_breaks_runpods_contract_fails_the_job_as_our_bug(
    fault_world: Callable[..., LorabotWorld],
) -> None:
    started = time.monotonic()
    world = fault_world(container_disk_gb=0)  # a lorabot bug: the contract's disk minimum is 1
    job_id = world.submit(images=3, epochs=1)

    result = await drive(world, job_id)

    creates = [r for r in world.emulator.requests if r.operation == "createPod"]
    assert [r.http_status for r in creates] == [422], "a 422 is never retried"
    job = world.job(job_id)
    assert "HTTP 422" in (job.failure_reason or "") and "lorabot bug" in (job.failure_reason or "")
    assert world.emulator.all_pods() == []
    check_promises(
        world,
        job_id,
        case="RunPod 422 on create",
        fault="the CPU pod's body breaks RunPod's contract (disk 0)",
        state="queued → preparing",
        expect=JobStatus.FAILED_INTERNAL,
        drive_result=result,
        started=started,
    )


async def test_every_candidate_refused_with_400_waits_then_fails_at_the_no_stock_deadline(
    fault_world: Callable[..., LorabotWorld],
) -> None:
    started = time.monotonic()
    world = fault_world(no_stock_deadline_s=600)
    for gpu in (RTX_4090, RTX_3090):
        world.emulator.unplaceable(gpu, "SECURE")  # the catalog shows stock; every create answers 400
    job_id = world.submit(images=3, epochs=1)

    result = await drive(world, job_id, timeout=90)

    refused = [r for r in world.emulator.requests if r.operation == "createPod" and r.http_status == 400]
    assert len(refused) >= 2, "each candidate was asked"
    assert world.notices(job_id, NoticeKind.WAITING_GPU), "the thread was told the job waits for a GPU"
    assert "no GPU with stock" in (world.job(job_id).failure_reason or "")
    assert not [p for p in world.emulator.all_pods() if p.gpu_type_id], "no GPU pod was ever created"
    check_promises(
        world,
        job_id,
        case="RunPod 400 on every candidate",
        fault="every GPU create answers 400 (no instances) although the catalog shows stock; deadline 600 s",
        state="preparing",
        expect=JobStatus.FAILED_NO_CAPACITY,
        drive_result=result,
        started=started,
    )


async def test_one_forbidden_candidate_is_skipped_for_the_next(fault_world: Callable[..., LorabotWorld]) -> None:
    started = time.monotonic()
    world = fault_world()
    world.emulator.forbid(RTX_4090, "SECURE")
    job_id = world.submit(images=3, epochs=1)

    result = await drive(world, job_id)

    statuses = [r.http_status for r in world.emulator.requests if r.operation == "createPod"]
    assert 403 in statuses
    gpus = [p for p in world.pods(job_id) if p.role is PodRole.GPU and p.runpod_pod_id]
    assert [p.gpu_type_id for p in gpus] == [RTX_3090]
    check_promises(
        world,
        job_id,
        case="RunPod 403 on one candidate",
        fault="the account may not use secure RTX 4090s (403)",
        state="preparing",
        expect=JobStatus.SUCCEEDED,
        drive_result=result,
        started=started,
    )


async def test_no_balance_holds_new_pods_for_everyone_and_leaves_running_jobs_alone(
    fault_world: Callable[..., LorabotWorld],
) -> None:
    started = time.monotonic()
    world = fault_world(balance_retry_s=120, max_concurrent_jobs=2)
    running = world.submit(images=3, epochs=2)
    await drive(world, running, until=lambda: epochs_announced(world, running) >= 1, timeout=60)
    gpu_before = [p.runpod_pod_id for p in world.pods(running) if p.role is PodRole.GPU]

    world.emulator.set_balance(0.05)  # less than an hour of any pod
    waiting = world.submit(images=3, epochs=1, user_id=1002)
    await drive(world, waiting, until=lambda: any("balance" in t for t in texts(world, waiting)), timeout=60)
    assert world.status(waiting) in (JobStatus.QUEUED, JobStatus.PREPARING)
    assert not [p for p in world.pods(waiting) if p.runpod_pod_id], "no pod was created without balance"
    assert any(r.http_status == 402 for r in world.emulator.requests if r.operation == "createPod")

    # The running job is not touched: it finishes on the pod it had.
    await drive(world, running, timeout=90)
    assert world.status(running) is JobStatus.SUCCEEDED, world.describe()
    assert [p.runpod_pod_id for p in world.pods(running) if p.role is PodRole.GPU] == gpu_before

    world.emulator.set_balance(100)  # the operator tops up: the waiting job goes on by itself
    result = await drive(world, waiting, timeout=90)
    assert "top" in " ".join(texts(world, waiting))
    check_promises(
        world,
        running,
        case="RunPod 402 mid-queue: the running job",
        fault="balance below an hour of any pod while another job waits",
        state="training",
        expect=JobStatus.SUCCEEDED,
        started=started,
    )
    check_promises(
        world,
        waiting,
        case="RunPod 402 mid-queue: the waiting job",
        fault="creates answer 402 until the balance is topped up",
        state="queued → preparing",
        expect=JobStatus.SUCCEEDED,
        drive_result=result,
        started=started,
    )


async def test_a_429_storm_is_waited_out(fault_world: Callable[..., LorabotWorld]) -> None:
    started = time.monotonic()
    world = fault_world()
    job_id = world.submit(images=3, epochs=1)
    hook = When(cpu_pod_created, lambda: world.emulator.rate_limit_next(8, retry_after_s=1))

    result = await drive(world, job_id, hooks=[hook], timeout=90)

    limited = [r for r in world.emulator.requests if r.http_status == 429]
    assert hook.fired_in and len(limited) == 8
    check_promises(
        world,
        job_id,
        case="RunPod 429 storm",
        fault="next 8 RunPod calls answer 429 with Retry-After: 1",
        state=hook.fired_in,
        expect=JobStatus.SUCCEEDED,
        drive_result=result,
        started=started,
    )


async def test_5xx_on_terminate_is_retried_until_the_pod_is_gone(fault_world: Callable[..., LorabotWorld]) -> None:
    started = time.monotonic()
    world = fault_world()
    job_id = world.submit(images=3, epochs=1)
    hook = When(cpu_pod_created, lambda: world.emulator.fail_next(4, 503, operation="deletePod"))

    result = await drive(world, job_id, hooks=[hook])

    deletes = [r for r in world.emulator.requests if r.operation == "deletePod"]
    assert sum(1 for r in deletes if r.http_status == 503) == 4
    assert sum(1 for r in deletes if r.http_status == 204) >= 2  # the CPU pod and the GPU pod went in the end
    check_promises(
        world,
        job_id,
        case="RunPod 5xx on terminate",
        fault="the next 4 deletePod calls answer 503",
        state=hook.fired_in or "?",
        expect=JobStatus.SUCCEEDED,
        drive_result=result,
        started=started,
    )
