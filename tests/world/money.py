"""Money checks shared by the orchestrator's tests and the fault suite: the ledger against RunPod's own bill.

RunPod's side is what RunPod itself answers at ``GET /v2/billing/pods`` (through the REST client and ``AsyncCloud``,
as the bot reads it), summed per pod: compute plus container disk. The ledger's side is the job's pod lines, which
hold compute plus container disk too. The emulator's internal counters only name the pods and their times in a
failure message.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from jobs import ledger
from jobs.cloud import AsyncCloud, BillingRecord
from jobs.runpod_rest import RestClient
from storage.db import session_scope
from storage.models import CostItem, Pod
from tests.world.lorabot_world import LorabotWorld


def assert_ledger_matches_runpod(world: LorabotWorld, job_id: int, *, case: str = "") -> None:
    """The job's pod costs in the ledger equal RunPod's billing records within 1%, plus what the bot could not know:
    RunPod bills from the instant a create or terminate took effect, somewhere inside the call's round trip, which
    the scaled clock stretches (120-fold in the fault suite)."""
    in_ledger, billed = pod_costs(world, job_id)
    if billed == 0:
        assert in_ledger == 0, (case, in_ledger, billed)
        return
    unknown = unknowable_micros(world, job_id)
    assert abs(in_ledger - billed) <= billed * 0.01 + unknown, (
        f"{case}: ledger {in_ledger} vs billed {billed} (round trips leave {unknown} unknowable)\n"
        f"{per_pod_costs(world, job_id)}"
    )


def pod_costs(world: LorabotWorld, job_id: int) -> tuple[int, int]:
    """(ledger's pod cost, RunPod's billing records) for the job's pods, compute and container disk, in µ$."""
    with session_scope(world.sessions) as s:
        cost = ledger.job_cost(s, job_id, now=world.now())
        assert not cost.live, "a finished job's cost must be closed"
    billed = sum(sum(record_total(r) for r in records) for records in runpod_bills(world, job_id).values())
    # Every pod line: CPU, GPU and /try (a test window's pod is one RunPod pod split over the GPU and try lines).
    return cost.pods_micros, billed


def record_total(record: BillingRecord) -> int:
    """A record's compute and disk (its parts, not its rounded total: they are what RunPod charged)."""
    return record.gpu_micros + record.cpu_micros + record.disk_micros


def runpod_bills(world: LorabotWorld, job_id: int) -> dict[str, list[BillingRecord]]:
    """RunPod's billing records for every pod at RunPod that carries one of the job's pod names, by RunPod's id.

    Names, not our recorded ids: a pod RunPod made but the bot never learnt of (a lost answer) must be counted too.
    """
    names = {p.name for p in world.pods(job_id)}
    runpod_ids = [p.id for p in world.emulator.all_pods() if p.name in names]
    return fetch_pod_billing(world, runpod_ids)


def fetch_pod_billing(world: LorabotWorld, runpod_ids: Sequence[str]) -> dict[str, list[BillingRecord]]:
    """``AsyncCloud.pod_billing`` over REST for each id. The test's own event loop is busy running the caller, so the
    client runs on a loop of its own in a worker thread (the emulator serves from its own thread)."""

    async def fetch() -> dict[str, list[BillingRecord]]:
        cloud = AsyncCloud(RestClient(world.emulator.api_key, world.emulator.base_url), base_delay_s=0.05)
        try:
            return {pod_id: await cloud.pod_billing(pod_id) for pod_id in runpod_ids}
        finally:
            await cloud.close()

    if not runpod_ids:
        return {}
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(fetch())).result()


def unknowable_micros(world: LorabotWorld, job_id: int) -> int:
    """The money no ledger could place more exactly: the job's create and terminate round trips, plus one second of
    rounding per billed window, since RunPod and the ledger each bill a started second (17.04 s is 18 s to one side
    and 16.98 s is 17 s to the other). Each such second costs the pod's compute and its container disk."""
    calls = world.cloud_calls
    windows = _billed_windows(world, job_id)
    total = 0.0
    for pod in world.pods(job_id):
        seconds = calls.unknown_seconds(name=pod.name, runpod_id=pod.runpod_pod_id) + windows.get(pod.id, 0)
        disk_per_hour = (
            (pod.container_disk_gb or 0)
            * ledger.CONTAINER_DISK_PRICE_MICROS_PER_GB_MONTH
            / ledger.HOURS_PER_BILLING_MONTH
        )
        total += seconds * ((pod.cost_per_hr_micros or 0) + disk_per_hour) / 3600
    return math.ceil(total)


def _billed_windows(world: LorabotWorld, job_id: int) -> Counter[int | None]:
    """How many billing windows the ledger holds for each of the job's pods."""
    with session_scope(world.sessions) as s:
        return Counter(
            s.scalars(select(CostItem.pod_id).where(CostItem.job_id == job_id, CostItem.pod_id.is_not(None)))
        )


def per_pod_costs(world: LorabotWorld, job_id: int) -> str:
    """Each pod's ledger item next to RunPod's bill, for a failure message."""
    reports = {p.id: p for p in world.emulator.all_pods()}
    bills: dict[str, list[tuple[str, list[BillingRecord]]]] = {}
    for runpod_id, records in runpod_bills(world, job_id).items():
        bills.setdefault(reports[runpod_id].name, []).append((runpod_id, records))
    lines = []
    with session_scope(world.sessions) as s:
        for item in s.query(CostItem).filter(CostItem.job_id == job_id, CostItem.pod_id.is_not(None)):
            pod = s.get(Pod, item.pod_id)
            assert pod is not None
            runpod = []
            for runpod_id, records in bills.get(pod.name, []):
                report = reports[runpod_id]
                born = _clock_time(world, report.created_at)
                gone = _clock_time(world, report.terminated_at)
                disk = sum(r.disk_micros for r in records)
                runpod.append(
                    f"{sum(record_total(r) for r in records)} incl. disk {disk} ({born}→{gone}, "
                    f"{report.billed_seconds} s, {len(records)} record(s))"
                )
            lines.append(
                f"{pod.name}: ledger {item.amount_micros} incl. disk {item.disk_micros} "
                f"({item.started_at:%H:%M:%S.%f}→{item.ended_at:%H:%M:%S.%f}), RunPod {'; '.join(runpod) or '-'}"
            )
    return "\n".join(lines)


def _clock_time(world: LorabotWorld, moment: float | None) -> str:
    if moment is None:
        return "now"
    return f"{world.emulator.clock.to_datetime(moment):%H:%M:%S.%f}"
