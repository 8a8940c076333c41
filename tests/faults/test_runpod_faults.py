"""RunPod misbehaves: 5xx, Cloudflare 502 pages, timeouts and dropped connections in each state and at seeded
random ticks; no stock that comes and goes; lost GPU hosts; pods that never start; an agent that stops
reporting; the clock jumping past deadlines. Every case ends succeeded or failed with a reason, nothing left."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from jobs.states import JobStatus, NoticeKind, PodRole
from tests.faults.harness import (
    When,
    check_promises,
    cpu_pod_created,
    current_gpu_runpod_id,
    drive,
    epochs_announced,
    freeze_pod,
    gpu_pod_created,
)
from tests.world.lorabot_world import RTX_3090, RTX_4090, LorabotWorld

Condition = Callable[[LorabotWorld, int], bool]


def in_state(status: JobStatus) -> Condition:
    return lambda world, job_id: world.status(job_id) is status


def gpu_reserved_while_preparing(world: LorabotWorld, job_id: int) -> bool:
    return world.status(job_id) is JobStatus.PREPARING and gpu_pod_created(world, job_id)


def last_epoch_training(world: LorabotWorld, job_id: int) -> bool:
    return epochs_announced(world, job_id) >= 1 and world.status(job_id) is JobStatus.TRAINING


API_FAULTS: dict[str, tuple[Condition, int | str, int]] = {
    "queued": (in_state(JobStatus.QUEUED), 500, 2),
    "preparing, cpu pod starting": (cpu_pod_created, 502, 3),
    "preparing, gpu reserved": (gpu_reserved_while_preparing, 503, 4),
    "training": (in_state(JobStatus.TRAINING), "timeout", 2),
    "training, epoch announced": (last_epoch_training, "disconnect", 3),
}


@pytest.mark.parametrize("moment", list(API_FAULTS))
async def test_runpod_errors_in_each_state_are_retried(fault_world: Callable[..., LorabotWorld], moment: str) -> None:
    started = time.monotonic()
    world = fault_world()
    condition, status, count = API_FAULTS[moment]
    job_id = world.submit(images=3, epochs=2)
    hook = When(condition, lambda: world.emulator.fail_next(count, status))

    result = await drive(world, job_id, hooks=[hook])

    assert hook.fired_in, "the fault was never injected"
    injected = [r for r in world.emulator.requests if any("injected fault" in e for e in r.errors)]
    assert len(injected) == count
    check_promises(
        world,
        job_id,
        case=f"RunPod {status} ×{count}: {moment}",
        fault=f"next {count} RunPod API calls answer {status}",
        state=hook.fired_in,
        expect=JobStatus.SUCCEEDED,
        drive_result=result,
        started=started,
    )


@pytest.mark.parametrize("seed", [3, 5, 8])
async def test_runpod_errors_at_seeded_random_ticks(fault_world: Callable[..., LorabotWorld], seed: int) -> None:
    started = time.monotonic()
    rng = random.Random(seed)
    plan = sorted(rng.sample(range(1, 40), 3))  # three bursts, at these ticks
    statuses: list[int | str] = [500, 502, 503, "timeout", "disconnect"]
    kinds = [(rng.choice(statuses), rng.randint(1, 4)) for _ in plan]
    world = fault_world()
    job_id = world.submit(images=3, epochs=2)
    ticks = {"n": 0}

    def at_tick(n: int) -> Condition:
        def condition(_world: LorabotWorld, _job: int) -> bool:
            return ticks["n"] >= n

        return condition

    def counting() -> bool:
        ticks["n"] += 1
        return False

    hooks = [When(lambda w, j: counting(), lambda: None)]

    def burst(status: int | str, count: int) -> Callable[[], None]:
        return lambda: world.emulator.fail_next(count, status)

    for tick, (status, count) in zip(plan, kinds, strict=True):
        hooks.append(When(at_tick(tick), burst(status, count)))

    result = await drive(world, job_id, hooks=hooks)

    fired = [h.fired_in for h in hooks[1:] if h.fired_in]
    check_promises(
        world,
        job_id,
        case=f"RunPod errors, random seed {seed}",
        fault=", ".join(f"{c}×{s} at tick {t}" for t, (s, c) in zip(plan, kinds, strict=True)),
        state=" → ".join(fired) or "(job ended first)",
        expect=JobStatus.SUCCEEDED,
        drive_result=result,
        started=started,
    )


async def test_4090_stock_gone_mid_run_falls_back_to_the_next_secure_card(
    fault_world: Callable[..., LorabotWorld],
) -> None:
    started = time.monotonic()
    world = fault_world()
    job_id = world.submit(images=3, epochs=2)
    hook = When(cpu_pod_created, lambda: world.emulator.set_stock(RTX_4090, "SECURE", 0))

    result = await drive(world, job_id, hooks=[hook])

    gpus = [(p.gpu_type_id, p.cloud_type) for p in world.pods(job_id) if p.role is PodRole.GPU and p.runpod_pod_id]
    assert gpus == [(RTX_3090, "SECURE")], "the volume mounts only in the Secure Cloud: the fallback stays there"
    check_promises(
        world,
        job_id,
        case="no stock: secure 4090 gone mid-run",
        fault="secure 4090 stock → 0 while the CPU pod runs",
        state=hook.fired_in or "",
        expect=JobStatus.SUCCEEDED,
        drive_result=result,
        started=started,
    )


async def test_no_stock_anywhere_then_stock_returns_reserves_later(fault_world: Callable[..., LorabotWorld]) -> None:
    started = time.monotonic()
    world = fault_world(no_stock_deadline_s=3600)
    for gpu in (RTX_4090, RTX_3090):
        world.emulator.set_stock(gpu, "SECURE", 0)
    job_id = world.submit(images=3, epochs=2)

    def waiting(w: LorabotWorld, j: int) -> bool:
        return bool(w.notices(j, NoticeKind.WAITING_GPU))

    hook = When(waiting, lambda: world.emulator.set_stock(RTX_4090, "SECURE", 2))

    result = await drive(world, job_id, hooks=[hook])

    assert len(world.notices(job_id, NoticeKind.WAITING_GPU)) == 1, "the thread is told once that the job waits"
    check_promises(
        world,
        job_id,
        case="no stock anywhere, then restocked",
        fault="secure 4090 and 3090 stock 0 until the job says it waits",
        state=hook.fired_in or "",
        expect=JobStatus.SUCCEEDED,
        drive_result=result,
        started=started,
    )


HOST_LOST_MOMENTS: dict[str, Condition] = {
    "preparing, gpu waiting for READY": gpu_reserved_while_preparing,
    "training, after epoch 1": lambda w, j: epochs_announced(w, j) >= 1 and w.status(j) is JobStatus.TRAINING,
}


@pytest.mark.parametrize("moment", list(HOST_LOST_MOMENTS))
async def test_a_lost_gpu_host_is_replaced_and_training_resumes_from_the_last_saved_epoch(
    fault_world: Callable[..., LorabotWorld], moment: str
) -> None:
    """RunPod shows a pod whose host died as ERROR (the container is gone, billing stopped): the job goes on on a
    new GPU pod, which resumes from the last saved epoch instead of training again."""
    started = time.monotonic()
    # RunPod's ERROR carries no time, so the ledger bills a lost host until the bot's terminate while RunPod stopped
    # at the loss; the money check allows the window after the bot's last healthy look (tests/world/timed_cloud.py).
    world = fault_world()
    job_id = world.submit(images=3, epochs=3)
    lost: list[str] = []

    def lose_host() -> None:
        lost.append(current_gpu_runpod_id(world, job_id))
        world.emulator.lose_host(lost[0])

    hook = When(HOST_LOST_MOMENTS[moment], lose_host)

    result = await drive(world, job_id, hooks=[hook])

    gpus = [p for p in world.pods(job_id) if p.role is PodRole.GPU and p.runpod_pod_id]
    assert len(gpus) == 2 and gpus[0].runpod_pod_id == lost[0], [p.name for p in gpus]
    assert "ERROR" in (gpus[0].exit_reason or ""), gpus[0].exit_reason
    if moment.startswith("training"):
        assert "in ERROR at RunPod" in world.notices(job_id, NoticeKind.INTERRUPTED)[0].payload_json["reason"]
        second = world.emulator.pod_log(str(gpus[1].runpod_pod_id))
        assert "resuming from kana-000001-state" in second or "resuming from kana-000002-state" in second, second
    check_promises(
        world,
        job_id,
        case=f"GPU host lost: {moment}",
        fault="the GPU pod's host dies (SIGKILL, RunPod status ERROR, billing stopped)",
        state=hook.fired_in or "",
        expect=JobStatus.SUCCEEDED,
        drive_result=result,
        started=started,
    )


@pytest.mark.parametrize("pods", [1, 2])
async def test_a_cpu_pod_that_never_starts_is_replaced_once(
    fault_world: Callable[..., LorabotWorld], pods: int
) -> None:
    started = time.monotonic()
    world = fault_world(startup_timeout_s=300)
    world.emulator.never_start_next_pod(pods)
    job_id = world.submit(images=3, epochs=2)

    result = await drive(world, job_id)

    cpus = [p for p in world.pods(job_id) if p.role is PodRole.CPU and p.runpod_pod_id]
    assert len(cpus) == 2 and "stuck" in (cpus[0].exit_reason or ""), [p.exit_reason for p in cpus]
    if pods == 2:
        assert "stuck" in (world.job(job_id).failure_reason or "")
    check_promises(
        world,
        job_id,
        case=f"pod never starts: {pods} CPU pod(s) in a row",
        fault=f"{pods} CPU pod(s) keep runtime null (startup timeout 300 s, 2 CPU attempts)",
        state="preparing, cpu pod starting",
        expect=JobStatus.SUCCEEDED if pods == 1 else JobStatus.FAILED_INTERNAL,
        drive_result=result,
        started=started,
    )


async def test_a_gpu_pod_that_never_starts_is_replaced(fault_world: Callable[..., LorabotWorld]) -> None:
    started = time.monotonic()
    world = fault_world(startup_timeout_s=400)
    job_id = world.submit(images=3, epochs=2)
    hook = When(cpu_pod_created, lambda: world.emulator.never_start_next_pod())

    result = await drive(world, job_id, hooks=[hook])

    gpus = [p for p in world.pods(job_id) if p.role is PodRole.GPU and p.runpod_pod_id]
    assert len(gpus) == 2 and "never" in "never" and gpus[0].exit_reason, [p.exit_reason for p in gpus]
    check_promises(
        world,
        job_id,
        case="pod never starts: GPU pod",
        fault="first GPU pod keeps runtime null (startup timeout 400 s)",
        state=hook.fired_in or "",
        expect=JobStatus.SUCCEEDED,
        drive_result=result,
        started=started,
    )


async def test_an_agent_that_stops_reporting_is_replaced(fault_world: Callable[..., LorabotWorld]) -> None:
    started = time.monotonic()
    world = fault_world(status_stale_s=180)
    job_id = world.submit(images=3, epochs=3)
    hook = When(lambda w, j: epochs_announced(w, j) >= 1, lambda: freeze_pod(current_gpu_runpod_id(world, job_id)))

    result = await drive(world, job_id, hooks=[hook])

    interrupted = world.notices(job_id, NoticeKind.INTERRUPTED)
    assert interrupted and "stopped reporting" in interrupted[0].payload_json["reason"]
    check_promises(
        world,
        job_id,
        case="agent stops reporting (SIGSTOP)",
        fault="every process of the GPU pod SIGSTOPped after epoch 1 (stale after 180 s)",
        state=hook.fired_in or "",
        expect=JobStatus.SUCCEEDED,
        drive_result=result,
        started=started,
    )


CLOCK_JUMPS: dict[str, tuple[Condition, float, set[JobStatus]]] = {
    "preparing, +5 min": (cpu_pod_created, 300, {JobStatus.SUCCEEDED}),
    "training, +7 h (past the 6 h wall time)": (in_state(JobStatus.TRAINING), 7 * 3600, {JobStatus.FAILED_TIMEOUT}),
}


@pytest.mark.parametrize("moment", list(CLOCK_JUMPS))
async def test_clock_jumps(fault_world: Callable[..., LorabotWorld], moment: str) -> None:
    started = time.monotonic()
    world = fault_world()
    condition, seconds, expect = CLOCK_JUMPS[moment]
    job_id = world.submit(images=3, epochs=2)
    hook = When(condition, lambda: world.emulator.advance(seconds))

    result = await drive(world, job_id, hooks=[hook])

    check_promises(
        world,
        job_id,
        case=f"clock jump: {moment}",
        fault=f"simulated clock jumps {seconds:.0f} s forward",
        state=hook.fired_in or "",
        expect=expect,
        drive_result=result,
        started=started,
    )


async def test_clock_jump_past_the_no_stock_deadline_fails_with_the_gpus_tried(
    fault_world: Callable[..., LorabotWorld],
) -> None:
    started = time.monotonic()
    world = fault_world(no_stock_deadline_s=1800)
    for gpu in (RTX_4090, RTX_3090):
        world.emulator.set_stock(gpu, "SECURE", 0)
    job_id = world.submit(images=3, epochs=2)
    hook = When(lambda w, j: bool(w.notices(j, NoticeKind.WAITING_GPU)), lambda: world.emulator.advance(1900))

    result = await drive(world, job_id, hooks=[hook])

    reason = world.job(job_id).failure_reason or ""
    assert f"{RTX_4090} (secure)" in reason and f"{RTX_3090} (secure)" in reason, reason
    check_promises(
        world,
        job_id,
        case="clock jump: waiting for a GPU, past the no-stock deadline",
        fault="no secure 4090/3090 stock; clock jumps 1900 s (deadline 1800 s)",
        state=hook.fired_in or "",
        expect={JobStatus.FAILED_NO_CAPACITY},
        drive_result=result,
        started=started,
    )
