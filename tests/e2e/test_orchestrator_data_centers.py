"""Several data centers: a job runs where a suitable GPU is in stock, on that data center's own Network Volume, and
a warm volume wins when its GPU costs less extra than the CPU stage it saves. A job that loses its GPUs during the
CPU stage moves before it trains. Every pod ends terminated and the ledger still matches RunPod's bill."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from jobs import ledger
from jobs.orchestrator import GpuChoice
from jobs.states import CostKind, JobStatus, NoticeKind, PodRole
from storage.db import session_scope
from storage.models import CostItem, Volume
from tests.world.lorabot_world import RTX_4090, LorabotWorld
from tests.world.money import assert_ledger_matches_runpod

pytestmark = pytest.mark.both_dbs

DC1, DC2 = "EU-RO-1", "US-KS-2"
ONLY_4090 = (GpuChoice(RTX_4090, "SECURE"),)


def volumes(world: LorabotWorld) -> list[tuple[str, str | None]]:
    with session_scope(world.sessions) as s:
        return [(v.data_center_id, v.runpod_volume_id) for v in s.query(Volume).order_by(Volume.id)]


def placement_text(world: LorabotWorld, job_id: int) -> str:
    """What the thread was told when the job started: where it runs and why."""
    started = [n for n in world.notices(job_id, NoticeKind.PREPARING) if "warm" in n.payload_json]
    return str(started[0].payload_json["text"])


async def test_jobs_run_where_the_gpus_are_and_the_warm_volume_decides(
    make_lorabot_world: Callable[..., LorabotWorld],
):
    world = make_lorabot_world(data_centers=(DC1, DC2), gpu_fallback=ONLY_4090, max_concurrent_jobs=1)
    world.emulator.set_stock(RTX_4090, "SECURE", 0, DC1)
    world.emulator.set_stock(RTX_4090, "SECURE", 2, DC2)

    # No 4090 in DC1, stock in DC2: the job runs in DC2 on a volume made there for it.
    first = world.submit(images=4, epochs=2)
    await world.run_until(lambda: world.status(first).is_terminal(), timeout=90, what="the first job")
    assert world.status(first) is JobStatus.SUCCEEDED, world.describe()
    assert world.job(first).data_center_id == DC2
    assert [(p.role, p.data_center_id) for p in world.pods(first)] == [(PodRole.CPU, DC2), (PodRole.GPU, DC2)]
    assert [dc for dc, _ in volumes(world)] == [DC2]
    assert {v.data_center_id for v in world.emulator.volumes()} == {DC2}
    text = placement_text(world, first)
    assert text.startswith(f"{DC2}: ") and f"no suitable GPU in stock in {DC1}" in text, text

    # A second job in DC2 is warm: no CPU pod. A third waits in the queue meanwhile, and stock returns to DC1.
    second = world.submit(images=4, epochs=2, name="second")
    third = world.submit(images=4, epochs=2, name="third")
    await world.run_until(lambda: world.status(second) is not JobStatus.QUEUED, what="the second job to start")
    assert world.status(third) is JobStatus.QUEUED
    world.emulator.set_stock(RTX_4090, "SECURE", 2, DC1)
    await world.run_until(
        lambda: world.status(second).is_terminal() and world.status(third).is_terminal(),
        timeout=120,
        what="the second and third jobs",
    )
    for job_id in (second, third):
        assert world.status(job_id) is JobStatus.SUCCEEDED, world.describe()
        assert world.job(job_id).cpu_needed is False
        assert [(p.role, p.data_center_id) for p in world.pods(job_id)] == [(PodRole.GPU, DC2)]
    # Same 4090 price in both: the warm volume saves the CPU stage, as the third job's thread was told.
    text = placement_text(world, third)
    assert text.startswith(f"{DC2}: ") and "warm volume" in text and "CPU stage it saves" in text, text
    assert [dc for dc, _ in volumes(world)] == [DC2], "DC1 never got a volume: no job ran there"

    assert world.running_pods() == []
    world.wait_for_no_processes()
    for job_id in (first, second, third):
        assert_ledger_matches_runpod(world, job_id, case=f"j{job_id}")


async def test_a_job_whose_gpus_vanish_during_its_cpu_stage_moves_and_prepares_again(
    make_lorabot_world: Callable[..., LorabotWorld],
):
    world = make_lorabot_world(data_centers=(DC1, DC2), gpu_fallback=ONLY_4090)
    world.emulator.set_stock(RTX_4090, "SECURE", 2, DC1)
    world.emulator.set_stock(RTX_4090, "SECURE", 2, DC2)
    job_id = world.submit(images=4, epochs=2)

    def cpu_pod_made() -> bool:
        return any(p.role is PodRole.CPU and p.runpod_pod_id for p in world.pods(job_id))

    await world.run_until(cpu_pod_made, what="the CPU pod in DC1")
    assert world.job(job_id).data_center_id == DC1
    world.emulator.set_stock(RTX_4090, "SECURE", 0, DC1)
    await world.run_until(lambda: world.status(job_id).is_terminal(), timeout=120, what="the moved job")

    assert world.status(job_id) is JobStatus.SUCCEEDED, world.describe()
    pods = [(p.role, p.data_center_id) for p in world.pods(job_id)]
    assert pods == [(PodRole.CPU, DC1), (PodRole.CPU, DC2), (PodRole.GPU, DC2)]
    assert [dc for dc, _ in volumes(world)] == [DC1, DC2]
    infos = [str(n.payload_json.get("text")) for n in world.notices(job_id, NoticeKind.INFO)]
    moved = [text for text in infos if "moved to" in text]
    assert len(moved) == 1, moved
    assert f"moved to {DC2} before training (no suitable GPU is in stock in {DC1} any more)" in moved[0]
    assert "the CPU stage runs again there" in moved[0] and "Estimate now about $" in moved[0]
    assert world.running_pods() == []
    world.wait_for_no_processes()
    assert_ledger_matches_runpod(world, job_id, case="moved")

    # The volume line is split: DC1's volume for the first CPU pod's time there, DC2's from its CPU pod to the end.
    now = world.now()
    with session_scope(world.sessions) as s:
        items = s.query(CostItem).filter_by(job_id=job_id, kind=CostKind.VOLUME).order_by(CostItem.started_at).all()
        volume_micros = ledger.job_cost(s, job_id, now=now).volume_micros
        split = ledger.job_volume_by_data_center(s, job_id, now=now)
        month = ledger.volumes_month_cost(s, ledger.month_of(world.job(job_id).created_at), now=now)
    by_dc = {dc: [p for p in world.pods(job_id) if p.data_center_id == dc] for dc in (DC1, DC2)}
    windows = [ledger.job_volume_window(by_dc[dc], now) for dc in (DC1, DC2)]
    assert [(i.started_at, i.ended_at) for i in items] == windows
    assert all(i.note and dc in i.note for i, dc in zip(items, (DC1, DC2), strict=True))
    assert split == {DC1: items[0].amount_micros, DC2: items[1].amount_micros} and 0 not in split.values()
    assert sum(split.values()) == volume_micros == month.jobs_share_micros
    assert {dc.data_center_id: dc.jobs_share_micros for dc in month.data_centers} == split
    assert all(dc.jobs_share_micros <= dc.kept_micros for dc in month.data_centers), month
