"""The orchestrator dies, the user cancels, the GPU is taken away: the job still ends cleanly and no pod is left."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from jobs.cloud import AsyncCloud, PodInfo, PodRequest
from jobs.orchestrator import Orchestrator
from jobs.states import JobStatus, NoticeKind, PodRole
from tests.world.lorabot_world import LorabotWorld


class ProcessKilled(BaseException):
    """Stands for SIGKILL of the bot: not an Exception, so nothing in the tick catches it."""


class DyingCloud(AsyncCloud):
    """The real cloud client, except that the process 'dies' right after its Nth call has reached RunPod."""

    def __init__(self, inner: AsyncCloud, die_after_call: int) -> None:
        super().__init__(inner.client, base_delay_s=0.05)
        self.calls = 0
        self.die_after_call = die_after_call

    def _count(self) -> None:
        self.calls += 1
        if self.calls == self.die_after_call:
            raise ProcessKilled(f"killed after cloud call {self.calls}")

    async def create_pod(self, req: PodRequest) -> PodInfo:
        info = await super().create_pod(req)
        self._count()  # RunPod made the pod, the bot never wrote its id down
        return info

    async def terminate_pod(self, pod_id: str, *, on_attempt: Callable[[], None] | None = None) -> None:
        await super().terminate_pod(pod_id, on_attempt=on_attempt)
        self._count()

    async def get_pod(self, pod_id: str) -> PodInfo:
        info = await super().get_pod(pod_id)
        self._count()
        return info

    async def list_pods(self, name_prefix: str = "lorabot-") -> list[PodInfo]:
        pods = await super().list_pods(name_prefix)
        self._count()
        return pods


async def run_with_kill(world: LorabotWorld, job_id: int, die_after_call: int) -> bool:
    """Run the job on an orchestrator that dies at its Nth cloud call; True if it died."""
    doomed = Orchestrator(
        sessions=world.sessions,
        cloud=DyingCloud(world.orchestrator.cloud, die_after_call),
        store=world.store,
        config=world.orchestrator.config,
        env_recipe=world.orchestrator.env_recipe,
        agent_bundle=(world.orchestrator._agent_bytes, world.orchestrator._agent_sha),
        clock=world.emulator.clock.utcnow,
    )
    try:
        await world.run_until(lambda: world.status(job_id).is_terminal(), orchestrator=doomed, timeout=60)
    except ProcessKilled:
        return True
    return False


@pytest.mark.parametrize("die_after_call", [1, 2, 3, 4, 6, 9, 14, 20])
async def test_killed_orchestrator_restarts_and_finishes_without_a_second_pod(
    lorabot_world: LorabotWorld, die_after_call: int
):
    world = lorabot_world
    job_id = world.submit(images=3, epochs=2)
    died = await run_with_kill(world, job_id, die_after_call)
    state_at_death = world.status(job_id)

    restarted = world.with_orchestrator()
    await restarted.reap()
    await world.run_until(lambda: world.status(job_id).is_terminal(), orchestrator=restarted, timeout=90)

    assert died, "the orchestrator should have been killed mid-job"
    assert world.status(job_id) is JobStatus.SUCCEEDED, (state_at_death, world.describe())
    names = Counter(p.name for p in world.emulator.all_pods())
    assert all(count == 1 for count in names.values()), names
    assert world.running_pods() == []
    epochs = [n.payload_json["epoch"] for n in world.notices(job_id, NoticeKind.EPOCH)]
    assert epochs == [1, 2]


async def tick_until(world: LorabotWorld, job_id: int, done: Any, what: str) -> None:
    await world.run_until(done, timeout=60, interval=0.1, what=what)


def gpu_pod_created(world: LorabotWorld, job_id: int) -> bool:
    return any(p.role is PodRole.GPU and p.runpod_pod_id for p in world.pods(job_id))


@pytest.mark.parametrize(
    "moment",
    ["queued", "cpu pod starting", "preparing with gpu reserved", "training"],
)
async def test_cancel_at_any_moment_leaves_zero_pods_after_one_call(lorabot_world: LorabotWorld, moment: str):
    world = lorabot_world
    job_id = world.submit(images=3, epochs=6)
    if moment == "cpu pod starting":
        await tick_until(world, job_id, lambda: bool(world.pods(job_id)), "the CPU pod")
    elif moment == "preparing with gpu reserved":
        await tick_until(world, job_id, lambda: gpu_pod_created(world, job_id), "the GPU pod")
        assert world.status(job_id) is JobStatus.PREPARING
    elif moment == "training":
        await tick_until(world, job_id, lambda: bool(world.notices(job_id, NoticeKind.EPOCH)), "the first epoch")

    job = await world.orchestrator.cancel(job_id, by="user 1001")

    assert job.status is JobStatus.CANCELLED
    assert world.running_pods() == []
    notice = world.notices(job_id, NoticeKind.CANCELLED)[-1].payload_json
    assert "total_micros" in notice["cost"] and notice["cost"]["live"] is False
    if moment == "training":  # pods have run for minutes: their container disk is in the bill, and named
        assert 0 < notice["cost"]["disk_micros"] < notice["cost"]["total_micros"]
    again = await world.orchestrator.cancel(job_id, by="user 1001")
    assert again.status is JobStatus.CANCELLED
    assert len(world.notices(job_id, NoticeKind.CANCELLED)) == 1


async def test_a_gpu_host_lost_mid_training_resumes_on_a_new_pod_from_the_last_epoch(make_lorabot_world):
    world = make_lorabot_world()
    job_id = world.submit(images=3, epochs=5)
    await world.run_until(
        lambda: len(world.notices(job_id, NoticeKind.EPOCH)) >= 2, timeout=60, interval=0.1, what="epoch 2"
    )
    first_gpu = next(p for p in world.pods(job_id) if p.role is PodRole.GPU and p.runpod_pod_id)
    world.emulator.lose_host(first_gpu.runpod_pod_id)

    await world.run_until(lambda: world.status(job_id).is_terminal(), timeout=90)

    assert world.status(job_id) is JobStatus.SUCCEEDED, world.describe()
    gpus = [p for p in world.pods(job_id) if p.role is PodRole.GPU and p.runpod_pod_id]
    assert len(gpus) == 2
    assert world.notices(job_id, NoticeKind.INTERRUPTED)
    epochs = [n.payload_json["epoch"] for n in world.notices(job_id, NoticeKind.EPOCH)]
    assert epochs == [1, 2, 3, 4, 5]
    # The second pod resumed: its agent never trained epoch 1 again.
    log = world.emulator.pod_log(gpus[1].runpod_pod_id)
    assert "--resume" in log or "resum" in log.lower(), log[-3000:]
    assert world.running_pods() == []


async def test_the_reaper_terminates_our_pods_that_no_live_job_owns_and_leaves_others(lorabot_world: LorabotWorld):
    world = lorabot_world
    volume = world.emulator.create_volume("lorabot-eu-ro-1", 30, "EU-RO-1")
    cloud = world.orchestrator.cloud

    def pod(name: str) -> PodRequest:
        return PodRequest(
            name=name,
            image="runpod/base",
            args="sleep 600",
            env={},
            network_volume_id=volume.id,
            data_center_id="EU-RO-1",
        )

    orphan = await cloud.create_pod(pod("lorabot-j99-gpu"))  # a job this database never had
    foreign = await cloud.create_pod(pod("someone-elses-pod"))  # not ours: never touched

    reaped = await world.orchestrator.reap()

    assert reaped == ["lorabot-j99-gpu"]
    assert world.emulator.pod(orphan.id).state == "TERMINATED"
    assert world.emulator.pod(foreign.id).state != "TERMINATED"
    await cloud.terminate_pod(foreign.id)


async def test_a_volume_that_vanished_is_replaced_and_the_next_job_runs_cold(make_lorabot_world):
    """The sandbox after a bot restart (its volumes lived in memory), or a volume deleted by hand at RunPod."""
    first_world = make_lorabot_world()
    first = first_world.submit(images=3, epochs=1)
    await first_world.run_until(lambda: first_world.status(first).is_terminal(), timeout=60)
    assert first_world.status(first) is JobStatus.SUCCEEDED

    world = make_lorabot_world()  # same database and bucket, a RunPod account without that volume
    second = world.submit(images=3, epochs=1, user_id=1002)
    await world.run_until(lambda: world.status(second).is_terminal(), timeout=60)

    assert world.status(second) is JobStatus.SUCCEEDED, world.describe()
    assert [p.role for p in world.pods(second)] == [PodRole.CPU, PodRole.GPU]  # the cache went with the volume
    assert len(world.emulator.volumes()) == 1
    assert world.job(second).volume_id != first_world.job(first).volume_id
