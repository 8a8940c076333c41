"""The bot process is killed (right after a RunPod call took effect) in each state and at seeded random points,
then started again: the job finishes, no pod is made twice, none is left, the money and the notices add up."""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable

import pytest

from jobs.states import JobStatus
from tests.faults.harness import KillingCloud, ProcessKilled, check_promises, doomed_orchestrator, drive
from tests.world.lorabot_world import LorabotWorld

DieRule = Callable[[int, str, JobStatus], bool]
# A restart reads everything back from the store: checked on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_dbs


def in_state(status: JobStatus, method: str, nth: int = 1) -> DieRule:
    """Die after the `nth` call of `method` made while the job is in `status`."""
    seen = {"n": 0}

    def rule(_call: int, called: str, job_status: JobStatus) -> bool:
        if called == method and job_status is status:
            seen["n"] += 1
            return seen["n"] == nth
        return False

    return rule


def after_call(n: int) -> DieRule:
    return lambda call, _method, _status: call == n


# Each entry makes a new rule per test: `in_state` counts calls, so one rule shared by the SQLite and the PostgreSQL run
# of a point would already have counted past `nth` in the first run and never kill in the second.
KILL_POINTS: dict[str, Callable[[], DieRule]] = {
    "queued, volume listed": lambda: in_state(JobStatus.QUEUED, "list_volumes"),
    "queued, volume created": lambda: in_state(JobStatus.QUEUED, "create_volume"),
    "preparing, cpu pod created": lambda: in_state(JobStatus.PREPARING, "create_pod"),
    "preparing, cpu pod starting": lambda: in_state(JobStatus.PREPARING, "get_pod", 2),
    "preparing, gpu pod created": lambda: in_state(JobStatus.PREPARING, "create_pod", 2),
    "training, pod observed": lambda: in_state(JobStatus.TRAINING, "get_pod", 2),
    "collecting, pod terminated": lambda: in_state(JobStatus.COLLECTING, "terminate_pod"),
}
# Seeded random points: the same seed kills at the same call every run.
RANDOM_POINTS = {f"random seed {seed}": random.Random(seed).randint(1, 40) for seed in (7, 11, 23)}


async def run_killed_then_restarted(world: LorabotWorld, job_id: int, rule: DieRule) -> str:
    cloud = KillingCloud(world.orchestrator.cloud, world, job_id, rule)
    with contextlib.suppress(ProcessKilled):
        await drive(world, job_id, orchestrator=doomed_orchestrator(world, cloud), timeout=60)
    assert cloud.died_at, "the bot should have been killed mid-job"
    return cloud.died_at


@pytest.mark.parametrize("point", [*KILL_POINTS, *RANDOM_POINTS])
async def test_bot_killed_and_restarted_finishes_the_job_once(
    fault_world: Callable[..., LorabotWorld], point: str
) -> None:
    started = time.monotonic()
    world = fault_world()
    job_id = world.submit(images=3, epochs=2)
    rule = KILL_POINTS[point]() if point in KILL_POINTS else after_call(RANDOM_POINTS[point])

    died_at = await run_killed_then_restarted(world, job_id, rule)
    restarted = world.with_orchestrator()
    await restarted.reap()
    result = await drive(world, job_id, orchestrator=restarted, timeout=90)

    names = Counter(p.name for p in world.emulator.all_pods())
    assert all(count == 1 for count in names.values()), f"a pod was created twice: {names}"
    check_promises(
        world,
        job_id,
        case=f"bot killed: {point}",
        fault="bot process killed after a RunPod call, restarted (+ reaper)",
        state=died_at,
        expect=JobStatus.SUCCEEDED,
        drive_result=result,
        started=started,
    )
