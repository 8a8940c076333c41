"""Money is data: every pod recorded, every cost from recorded times, nothing left running, ledger = RunPod's bill."""

from __future__ import annotations

import pytest

from jobs import ledger
from jobs.queue import JobPlan
from jobs.states import JobStatus, PodRole
from storage.db import session_scope
from storage.models import Volume, VolumeResize
from tests.world.lorabot_world import RTX_3090, RTX_4090, LorabotWorld
from tests.world.money import assert_ledger_matches_runpod

# The money promises are checked on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_dbs


def ledger_total(world: LorabotWorld, job_id: int) -> ledger.CostBreakdown:
    with session_scope(world.sessions) as s:
        return ledger.job_cost(s, job_id, now=world.now())


def assert_ledger_matches_emulator(world: LorabotWorld, job_id: int) -> None:
    assert emulator_pod_cost(world, job_id) > 0
    assert_ledger_matches_runpod(world, job_id)
    assert not ledger_total(world, job_id).live


def emulator_pod_cost(world: LorabotWorld, job_id: int) -> int:
    names = {p.name for p in world.pods(job_id)}
    return sum(p.cost_micros for p in world.emulator.all_pods() if p.name in names)


async def test_cold_then_warm_job_the_warm_one_needs_no_cpu_pod(lorabot_world: LorabotWorld):
    world = lorabot_world
    cold = world.submit(images=4, epochs=2)
    await world.run_until(lambda: world.status(cold).is_terminal(), timeout=90, what="the cold job")
    warm = world.submit(images=5, epochs=2, user_id=1002)
    await world.run_until(lambda: world.status(warm).is_terminal(), timeout=90, what="the warm job")

    assert world.status(cold) is JobStatus.SUCCEEDED and world.status(warm) is JobStatus.SUCCEEDED, world.describe()
    assert [p.role for p in world.pods(cold)] == [PodRole.CPU, PodRole.GPU]
    assert [p.role for p in world.pods(warm)] == [PodRole.GPU]
    assert world.running_pods() == []
    # In order, with the right images, volume, env and start command.
    created = [p for p in world.emulator.all_pods()]
    assert [p.name for p in created] == ["lorabot-j1-cpu", "lorabot-j1-gpu", "lorabot-j2-gpu"]
    assert created[0].image_name.startswith("runpod/base") and created[1].image_name.startswith("runpod/pytorch")
    assert len({p.volume_id for p in created}) == 1 and created[0].volume_id
    assert {p.env["LORABOT_STAGE"] for p in created} == {"prepare", "train"}
    assert all(p.docker_args.startswith("python3 -c") for p in created)
    assert created[1].gpu_type_id == RTX_4090 and created[1].cloud == "SECURE"
    for job_id in (cold, warm):
        assert_ledger_matches_emulator(world, job_id)
    assert ledger_total(world, warm).cpu_pod_micros == 0


async def test_no_4090_in_stock_runs_on_the_next_secure_card_of_the_fallback(lorabot_world: LorabotWorld):
    world = lorabot_world
    world.emulator.set_stock(RTX_4090, "SECURE", 0)
    job_id = world.submit(images=3, epochs=1)
    await world.run_until(lambda: world.status(job_id).is_terminal(), timeout=90)
    assert world.status(job_id) is JobStatus.SUCCEEDED, world.describe()
    gpu = [p for p in world.pods(job_id) if p.role is PodRole.GPU]
    assert [(p.gpu_type_id, p.cloud_type) for p in gpu] == [(RTX_3090, "SECURE")]
    assert all(p.cloud == "SECURE" for p in world.emulator.all_pods())
    assert world.running_pods() == []


async def test_no_stock_anywhere_fails_after_the_deadline_and_keeps_the_cost(make_lorabot_world):
    world = make_lorabot_world(no_stock_deadline_s=600)
    for gpu in (RTX_4090, RTX_3090):
        world.emulator.set_stock(gpu, "SECURE", 0)
    job_id = world.submit(images=3, epochs=1)
    await world.run_until(lambda: world.status(job_id).is_terminal(), timeout=90)

    job = world.job(job_id)
    assert job.status is JobStatus.FAILED_NO_CAPACITY
    assert "no GPU with stock" in (job.failure_reason or "") and "RTX 4090 (secure)" in job.failure_reason
    assert world.running_pods() == []
    # The CPU stage ran and was paid for: its cost is in the ledger, equal to RunPod's bill.
    assert ledger_total(world, job_id).cpu_pod_micros > 0
    assert_ledger_matches_emulator(world, job_id)


async def test_a_job_over_the_monthly_budget_fails_before_any_pod_is_rented(make_lorabot_world):
    world = make_lorabot_world(user_budget_micros=100_000)  # $0.10 a month; the plan estimates more
    job_id = world.submit(images=3, epochs=2)
    await world.orchestrator.tick()

    job = world.job(job_id)
    assert job.status is JobStatus.FAILED_BUDGET
    assert "over your budget of $0.10" in (job.failure_reason or "") and "nothing was started" in job.failure_reason
    assert world.emulator.all_pods() == [] and world.pods(job_id) == []


async def test_a_job_that_overspends_its_own_budget_is_stopped_while_running(make_lorabot_world):
    world = make_lorabot_world()
    job_id = world.submit(images=3, epochs=8)
    from storage.db import session_scope
    from storage.models import Job

    with session_scope(world.sessions) as s:
        s.get(Job, job_id).budget_micros = 2_000  # $0.002: the CPU pod alone passes it within minutes
    await world.run_until(lambda: world.status(job_id).is_terminal(), timeout=90)

    job = world.job(job_id)
    assert job.status is JobStatus.FAILED_BUDGET, world.describe()
    assert "over its budget" in (job.failure_reason or "")
    assert world.running_pods() == []
    assert_ledger_matches_emulator(world, job_id)


async def test_the_wall_time_limit_counts_from_the_start_not_from_the_queue(make_lorabot_world):
    world = make_lorabot_world(max_concurrent_jobs=0)  # no free slot: the job waits
    job_id = world.submit(images=3, epochs=1)  # a 6 h wall-time limit
    world.emulator.advance(7 * 3600)
    await world.orchestrator.tick()
    assert world.status(job_id) is JobStatus.QUEUED  # waiting is free, and not held against the job

    started = world.with_orchestrator(max_concurrent_jobs=1)
    await started.tick()
    job = world.job(job_id)
    assert job.status is JobStatus.PREPARING
    assert abs((job.deadline_at - world.now()).total_seconds() - 6 * 3600) < 120
    await world.run_until(lambda: world.status(job_id).is_terminal(), orchestrator=started, timeout=60)
    assert world.status(job_id) is JobStatus.SUCCEEDED


async def test_a_job_needing_more_than_the_volume_grows_it_first_and_pays_the_new_size(make_lorabot_world):
    world = make_lorabot_world(volume_size_gb=10)
    job_id = world.submit(images=3, epochs=2)
    need = JobPlan.from_json(world.job(job_id).plan_json).volume_gb
    assert need > 10
    await world.run_until(lambda: world.status(job_id).is_terminal(), timeout=90, what="the job")

    assert world.status(job_id) is JobStatus.SUCCEEDED, world.describe()
    (volume,) = world.emulator.volumes()
    assert volume.size_gb == need  # grown at RunPod (PATCH /v2/network-volumes/{id}, checked by the contract)
    with session_scope(world.sessions) as s:
        row = s.get_one(Volume, world.job(job_id).volume_id)
        (resize,) = s.query(VolumeResize).all()
        assert (row.size_gb, resize.from_gb, resize.to_gb) == (need, 10, need)
        first_pod = min(p.api_created_at for p in world.pods(job_id) if p.api_created_at is not None)
        assert resize.resized_at <= first_pod  # before the CPU stage wrote anything
        cost = ledger.job_cost(s, job_id, now=world.now())
        window = ledger.job_volume_window(world.pods(job_id), world.now())
        assert window is not None
        assert cost.volume_micros == ledger.volume_cost_micros(need, ledger.volume_billed_hours(*window))
    assert_ledger_matches_emulator(world, job_id)


async def test_a_job_needing_more_than_volume_max_gb_is_refused_before_any_pod(make_lorabot_world):
    world = make_lorabot_world(volume_size_gb=10, volume_max_gb=20)
    job_id = world.submit(images=3, epochs=1)
    await world.run_until(lambda: world.status(job_id).is_terminal(), timeout=30, what="the refusal")

    job = world.job(job_id)
    assert job.status is JobStatus.FAILED_INTERNAL
    assert "more than the 20 GB lorabot may grow it to (runpod.volume_max_gb); nothing was started" in (
        job.failure_reason or ""
    ), job.failure_reason
    assert world.pods(job_id) == [] and world.emulator.all_pods() == []
    assert [v.size_gb for v in world.emulator.volumes()] == [10]
