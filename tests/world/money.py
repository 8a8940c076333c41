"""Money checks shared by the orchestrator's tests and the fault suite: the ledger against RunPod's own bill."""

from __future__ import annotations

import math
from collections import Counter

from sqlalchemy import select

from jobs import ledger
from storage.db import session_scope
from storage.models import CostItem, Pod
from tests.world.lorabot_world import LorabotWorld


def assert_ledger_matches_runpod(world: LorabotWorld, job_id: int, *, case: str = "") -> None:
    """The job's pod costs in the ledger equal the emulator's billing within 1%, plus what the bot could not know:
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
    """(ledger's pod cost, emulator's billing) for the job's pods, in micro-dollars."""
    with session_scope(world.sessions) as s:
        cost = ledger.job_cost(s, job_id, now=world.now())
        assert not cost.live, "a finished job's cost must be closed"
    names = {p.name for p in world.pods(job_id)}
    billed = sum(p.cost_micros for p in world.emulator.all_pods() if p.name in names)
    return cost.cpu_pod_micros + cost.gpu_pod_micros, billed


def unknowable_micros(world: LorabotWorld, job_id: int) -> int:
    """The money no ledger could place more exactly: the job's create and terminate round trips, plus one second of
    rounding per billed window, since RunPod and the ledger each bill a started second (17.04 s is 18 s to one side
    and 16.98 s is 17 s to the other)."""
    calls = world.cloud_calls
    windows = _billed_windows(world, job_id)
    total = 0.0
    for pod in world.pods(job_id):
        seconds = calls.unknown_seconds(name=pod.name, runpod_id=pod.runpod_pod_id) + windows.get(pod.id, 0)
        total += seconds * (pod.cost_per_hr_micros or 0) / 3600
    return math.ceil(total)


def _billed_windows(world: LorabotWorld, job_id: int) -> Counter[int | None]:
    """How many billing windows the ledger holds for each of the job's pods."""
    with session_scope(world.sessions) as s:
        return Counter(
            s.scalars(select(CostItem.pod_id).where(CostItem.job_id == job_id, CostItem.pod_id.is_not(None)))
        )


def per_pod_costs(world: LorabotWorld, job_id: int) -> str:
    """Each pod's ledger item next to RunPod's bill, for a failure message."""
    billed = {p.name: p for p in world.emulator.all_pods()}
    lines = []
    with session_scope(world.sessions) as s:
        for item in s.query(CostItem).filter(CostItem.job_id == job_id, CostItem.pod_id.is_not(None)):
            pod = s.get(Pod, item.pod_id)
            assert pod is not None
            report = billed.get(pod.name)
            runpod = "-"
            if report is not None:
                born = _clock_time(world, report.created_at)
                gone = _clock_time(world, report.terminated_at)
                runpod = f"{report.cost_micros} ({born}→{gone}, {report.billed_seconds} s)"
            lines.append(
                f"{pod.name}: ledger {item.amount_micros} ({item.started_at:%H:%M:%S.%f}→{item.ended_at:%H:%M:%S.%f}), "
                f"RunPod {runpod}"
            )
    return "\n".join(lines)


def _clock_time(world: LorabotWorld, moment: float | None) -> str:
    if moment is None:
        return "now"
    return f"{world.emulator.clock.to_datetime(moment):%H:%M:%S.%f}"
