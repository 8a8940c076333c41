"""The cost ledger: what each job, user, team and month spent, in integer micro-dollars (1 $ = 1,000,000 µ$).

Rules (they are the contract behind every figure the bot shows):
- **Pods** bill per second from the moment RunPod created them (``pods.api_created_at``) until they are gone
  (``pods.terminated_at``; ``now`` while they still exist). A started second counts as a whole one.
  ``cost = billed_seconds × rate_micros_per_hour // 3600``: the exact product, floored to a whole micro-dollar
  once per pod, so the error is below 1 µ$ per pod and sums never drift (no float anywhere).
- **Container disk** bills over the same seconds as its pod, at $0.10/GB/month
  (``CONTAINER_DISK_PRICE_MICROS_PER_GB_MONTH``, facts/runpod.md), a month being 30 days:
  ``cost = billed_seconds × GB × price // 2,592,000``, floored once per pod. It is part of the pod's line (CPU pod /
  GPU pod), and ``CostBreakdown.disk_micros`` says how much of those lines it is, as RunPod's own bill splits it out.
  A pod row without a disk size (written before migration 0003) counts 0 GB.
- **Network Volume**: $0.07/GB/month (``VOLUME_PRICE_MICROS_PER_GB_MONTH``), a month being 720 hours (30 days;
  seed 000's dashboard: 30 GB → $2.10/month → $0.003/h). RunPod prorates it "by the hour" (facts/runpod.md), so a
  started hour counts as a whole one (an upper bound: RunPod's billing page now says "per second", which can only
  be lower, by less than one hour of volume, ~$0.003 for 30 GB). A job pays for its volume from its first pod's
  creation to its last pod's end; idle hours between jobs belong to no job: ``volumes_month_cost`` shows them.
  A volume grown at RunPod (``volume_resizes``) costs its new size from that moment: each started hour of a window
  is billed at the largest size the volume had in that hour (``resized_volume_cost_micros``).
  A job moved to another data center before training (one volume per data center) pays each volume for its own
  stay there: from its first pod in that data center to its last pod's end there (``job_volume_stays``), one
  volume item per stay; the gap between the stays belongs to no job.
- **Months** are UTC calendar months; a job's whole cost belongs to the month it was created in (a job lasts
  hours, and a budget check needs one month to charge the estimate to).
- **Budgets** count a running job at the larger of its cost so far and its estimate (it is expected to spend it),
  a finished job at its cost; either way plus the estimates of its confirmed /try requests not finished yet.
- **/try and the test window** (``CostKind.TRY_GPU``): a /try pod's whole time is on that line. The training pod
  kept warm for the test window is one pod at RunPod and one charge here (so the bill still matches), split at the
  window's ``opened_at``: the part before is its GPU pod line, the rest (``total − before``) the try line.

Every function takes ``now`` explicitly: the orchestrator runs on the emulator's simulated clock in tests.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.names import job_public_id
from jobs.states import CostKind, PodRole
from storage.models import CostItem, Job, Pod, Volume, VolumeResize
from storage.queries import get_budget_limit
from storage.tries import reserved_try_micros, windows_by_pod

MICROS_PER_USD = 1_000_000
SECONDS_PER_HOUR = 3600
# RunPod quotes storage per month; seed 000's $2.10/month ↔ $0.003/h for 30 GB matches a 30-day month.
HOURS_PER_BILLING_MONTH = 720
SECONDS_PER_BILLING_MONTH = HOURS_PER_BILLING_MONTH * SECONDS_PER_HOUR
# $0.07 per GB per month (RunPod Network Volume, facts/runpod.md).
VOLUME_PRICE_MICROS_PER_GB_MONTH = 70_000
# $0.10 per GB per month while the pod exists (RunPod container disk, facts/runpod.md).
CONTAINER_DISK_PRICE_MICROS_PER_GB_MONTH = 100_000
# Below half a cent a cost prints as "<$0.01" rather than a misleading "$0.00".
_HALF_CENT_MICROS = 5_000

_MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")
_POD_KIND = {PodRole.CPU: CostKind.CPU_POD, PodRole.GPU: CostKind.GPU_POD, PodRole.TRY: CostKind.TRY_GPU}


# -- pure maths ----------------------------------------------------------------------------------------------------


def usd_to_micros(amount: Decimal | str | int | float) -> int:
    """A dollar amount (RunPod's ``costPerHr`` is a JSON float like 0.69) → micro-dollars, rounded half up.

    A float goes through its shortest decimal text (``str(0.69)`` is ``"0.69"``), never through binary maths.
    """
    try:
        value = Decimal(str(amount)) if isinstance(amount, float) else Decimal(amount)
    except InvalidOperation:
        raise ValueError(f"not a dollar amount: {amount!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"a price must be a finite amount ≥ $0, got {amount!r}")
    return int((value * MICROS_PER_USD).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def billed_seconds(start: dt.datetime, end: dt.datetime) -> int:
    """Whole seconds billed between two instants; a started second counts."""
    if end < start:
        raise ValueError(f"billing window ends ({end.isoformat()}) before it starts ({start.isoformat()})")
    delta = end - start
    whole = delta.days * 86_400 + delta.seconds
    return whole + (1 if delta.microseconds else 0)


def pod_cost_micros(seconds: int, rate_micros_per_hour: int) -> int:
    """Exact per-second cost, floored once to a whole micro-dollar (see the module's rules)."""
    if seconds < 0 or rate_micros_per_hour < 0:
        raise ValueError(f"seconds and rate must be ≥ 0, got {seconds} s at {rate_micros_per_hour} µ$/h")
    return seconds * rate_micros_per_hour // SECONDS_PER_HOUR


def disk_cost_micros(
    seconds: int, size_gb: int, *, price_micros_per_gb_month: int = CONTAINER_DISK_PRICE_MICROS_PER_GB_MONTH
) -> int:
    """Container disk for ``seconds`` billed seconds: ``seconds × GB × price / 30 days``, floored once."""
    if seconds < 0 or size_gb < 0 or price_micros_per_gb_month < 0:
        raise ValueError(
            f"seconds, size and price must be ≥ 0, got {seconds} s, {size_gb} GB, "
            f"{price_micros_per_gb_month} µ$/GB/month"
        )
    return seconds * size_gb * price_micros_per_gb_month // SECONDS_PER_BILLING_MONTH


def volume_billed_hours(start: dt.datetime, end: dt.datetime) -> int:
    """Hours of volume billed between two instants; a started hour counts."""
    return math.ceil(billed_seconds(start, end) / SECONDS_PER_HOUR)


def volume_cost_micros(
    size_gb: int, hours: int, *, price_micros_per_gb_month: int = VOLUME_PRICE_MICROS_PER_GB_MONTH
) -> int:
    """``size_gb × price/GB/month × hours / 720``, floored once to a whole micro-dollar."""
    if size_gb < 0 or hours < 0 or price_micros_per_gb_month < 0:
        raise ValueError(f"size, hours and price must be ≥ 0, got {size_gb} GB, {hours} h, {price_micros_per_gb_month}")
    return size_gb * price_micros_per_gb_month * hours // HOURS_PER_BILLING_MONTH


def resized_volume_cost_micros(
    sizes: Sequence[tuple[dt.datetime, int]],
    start: dt.datetime,
    end: dt.datetime,
    *,
    price_micros_per_gb_month: int = VOLUME_PRICE_MICROS_PER_GB_MONTH,
) -> int:
    """A volume's cost over ``start``..``end`` when its size changed: ``sizes`` is (since, GB), oldest first, the
    first one in force from before ``start``. Each started hour from ``start`` is billed at the largest size in
    force during it, the GB-hours summed and priced once (floored): with one size, ``volume_cost_micros``."""
    if not sizes:
        raise ValueError("a volume has at least one size")
    gb_hours = 0
    for hour in range(volume_billed_hours(start, end)):
        slot_start = start + dt.timedelta(hours=hour)
        slot_end = slot_start + dt.timedelta(hours=1)
        in_force = [size for since, size in sizes if since < slot_end]
        before = [size for since, size in sizes if since <= slot_start]
        # the size at the slot's start (the last change before it), and every change inside the slot
        gb_hours += max([before[-1] if before else sizes[0][1], *in_force[len(before) :]])
    return volume_cost_micros(1, gb_hours, price_micros_per_gb_month=price_micros_per_gb_month)


def volume_sizes(session: Session, volume: Volume) -> list[tuple[dt.datetime, int]]:
    """(since, GB) of every size the volume has had, oldest first: its size at creation, then each resize."""
    resizes = (
        session.execute(
            select(VolumeResize)
            .where(VolumeResize.volume_id == volume.id)
            .order_by(VolumeResize.resized_at, VolumeResize.id)
        )
        .scalars()
        .all()
    )
    first = resizes[0].from_gb if resizes else volume.size_gb
    return [(volume.created_at, first), *((r.resized_at, r.to_gb) for r in resizes)]


def volume_window_cost_micros(
    session: Session,
    volume: Volume,
    start: dt.datetime,
    end: dt.datetime,
    *,
    price_micros_per_gb_month: int = VOLUME_PRICE_MICROS_PER_GB_MONTH,
) -> int:
    return resized_volume_cost_micros(
        volume_sizes(session, volume), start, end, price_micros_per_gb_month=price_micros_per_gb_month
    )


def volume_rate_micros_per_hour(
    size_gb: int, *, price_micros_per_gb_month: int = VOLUME_PRICE_MICROS_PER_GB_MONTH
) -> int:
    """The hourly rate shown next to a volume cost (rounded half up; the cost itself uses the exact fraction)."""
    exact = Decimal(size_gb * price_micros_per_gb_month) / HOURS_PER_BILLING_MONTH
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def format_usd(micros: int) -> str:
    """``750_000`` → ``"$0.75"``: cents, rounded half up; ``"<$0.01"`` for a positive amount under half a cent."""
    if 0 < micros < _HALF_CENT_MICROS:
        return "<$0.01"
    sign = "-" if micros < 0 else ""
    dollars = (Decimal(abs(micros)) / MICROS_PER_USD).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"{sign}${dollars:,.2f}"


def month_of(moment: dt.datetime) -> str:
    """The UTC month (``"2026-11"``) an instant falls in."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m")


def month_bounds(month: str) -> tuple[dt.datetime, dt.datetime]:
    """``"2026-11"`` → [2026-11-01T00:00Z, 2026-12-01T00:00Z)."""
    match = _MONTH.fullmatch(month)
    if match is None:
        raise ValueError(f"a month looks like 2026-11 (year-month), got {month[:20]!r}")
    year, number = int(match.group(1)), int(match.group(2))
    start = dt.datetime(year, number, 1, tzinfo=dt.UTC)
    end = dt.datetime(year + number // 12, number % 12 + 1, 1, tzinfo=dt.UTC)
    return start, end


# -- one pod -------------------------------------------------------------------------------------------------------


def pod_billing_window(pod: Pod, now: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
    """From RunPod's creation to termination (or ``now``); None while RunPod has not created the pod."""
    if pod.api_created_at is None:
        return None
    end = pod.terminated_at or now
    return pod.api_created_at, max(end, pod.api_created_at)


@dataclass(frozen=True)
class PodCharge:
    """What a pod cost over some billed seconds: compute at its hourly rate plus its container disk."""

    seconds: int
    compute_micros: int
    disk_micros: int

    @property
    def total_micros(self) -> int:
        return self.compute_micros + self.disk_micros


def pod_charge(pod: Pod, now: dt.datetime) -> PodCharge:
    """The pod's charge at ``now``: final once it is terminated, growing with ``now`` while it lives; nothing while
    RunPod has not created it or its price is unknown."""
    window = pod_billing_window(pod, now)
    if window is None or pod.cost_per_hr_micros is None:
        return PodCharge(seconds=0, compute_micros=0, disk_micros=0)
    seconds = billed_seconds(*window)
    return PodCharge(
        seconds=seconds,
        compute_micros=pod_cost_micros(seconds, pod.cost_per_hr_micros),
        disk_micros=disk_cost_micros(seconds, pod.container_disk_gb or 0),
    )


@dataclass(frozen=True)
class PodPart:
    """One ledger line's share of a pod: its kind, the time it covers and its charge."""

    kind: CostKind
    start: dt.datetime
    end: dt.datetime
    charge: PodCharge


def pod_parts(pod: Pod, now: dt.datetime, split_at: dt.datetime | None = None) -> list[PodPart]:
    """The pod's charge by ledger line: one part (its role's kind) or, for a training pod kept warm for a test window
    that opened at ``split_at``, its GPU part up to then and the TRY_GPU part after. The parts add up to exactly
    ``pod_charge(pod, now)`` (the try part is the whole minus the GPU part), so RunPod's bill still matches; empty
    while RunPod has not created the pod or its price is unknown."""
    window = pod_billing_window(pod, now)
    if window is None or pod.cost_per_hr_micros is None:
        return []
    whole = pod_charge(pod, now)
    start, end = window
    if split_at is None or pod.role is not PodRole.GPU or split_at >= end:
        return [PodPart(_POD_KIND[pod.role], start, end, whole)]
    split = max(split_at, start)
    seconds = billed_seconds(start, split)
    before = PodCharge(
        seconds=seconds,
        compute_micros=pod_cost_micros(seconds, pod.cost_per_hr_micros),
        disk_micros=disk_cost_micros(seconds, pod.container_disk_gb or 0),
    )
    after = PodCharge(
        seconds=whole.seconds - before.seconds,
        compute_micros=whole.compute_micros - before.compute_micros,
        disk_micros=whole.disk_micros - before.disk_micros,
    )
    return [PodPart(CostKind.GPU_POD, start, split, before), PodPart(CostKind.TRY_GPU, split, end, after)]


def _split_at(session: Session, pod: Pod) -> dt.datetime | None:
    window = windows_by_pod(session, [pod.id]).get(pod.id)
    return window.opened_at if window is not None else None


def pod_cost_so_far(pod: Pod, now: dt.datetime) -> int:
    """The pod's cost at ``now`` (compute and container disk)."""
    return pod_charge(pod, now).total_micros


@dataclass(frozen=True)
class UptimeDrift:
    """Our billed seconds against RunPod's ``uptimeSeconds`` at the same instant (the pod's last look).

    RunPod's uptime starts when the container starts, so a positive drift of about the image pull time is normal;
    a negative drift means we missed billing time (e.g. the create was recorded late).
    """

    pod_name: str
    recorded_seconds: int
    api_seconds: int

    @property
    def drift_seconds(self) -> int:
        return self.recorded_seconds - self.api_seconds


def uptime_drift(pod: Pod) -> UptimeDrift | None:
    if pod.api_created_at is None or pod.uptime_seconds_api is None or pod.last_seen_at is None:
        return None
    seen_at = pod.last_seen_at if pod.terminated_at is None else min(pod.last_seen_at, pod.terminated_at)
    recorded = billed_seconds(pod.api_created_at, max(seen_at, pod.api_created_at))
    return UptimeDrift(pod_name=pod.name, recorded_seconds=recorded, api_seconds=pod.uptime_seconds_api)


def close_pod_cost(session: Session, pod: Pod) -> CostItem | None:
    """Write the final cost item(s) of a terminated pod (once: a second call returns the first item); a training pod
    kept warm for a test window gets two, split at the window's opening (``pod_parts``).

    None for a pod that is not terminated yet, or that RunPod never created (nothing was billed).
    """
    existing = session.execute(select(CostItem).where(CostItem.pod_id == pod.id).order_by(CostItem.id)).scalars()
    first = existing.first()
    if first is not None:
        return first
    if pod.terminated_at is None or pod.api_created_at is None or pod.cost_per_hr_micros is None:
        return None
    end = max(pod.terminated_at, pod.api_created_at)
    disk_gb = pod.container_disk_gb or 0
    items = [
        CostItem(
            job_id=pod.job_id,
            pod_id=pod.id,
            kind=part.kind,
            started_at=part.start,
            ended_at=part.end,
            rate_micros_per_hour=pod.cost_per_hr_micros,
            amount_micros=part.charge.total_micros,
            disk_micros=part.charge.disk_micros,
            final=True,
            note=(
                f"{pod.name}{' (test window)' if part.kind is CostKind.TRY_GPU and pod.role is PodRole.GPU else ''}: "
                f"{part.charge.seconds} s at {format_usd(pod.cost_per_hr_micros)}/h"
                f" + {disk_gb} GB container disk at {format_usd(CONTAINER_DISK_PRICE_MICROS_PER_GB_MONTH)}/GB/month"
            ),
        )
        for part in pod_parts(pod, end, _split_at(session, pod))
    ]
    session.add_all(items)
    session.flush()
    return items[0] if items else None


# -- one job -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostBreakdown:
    """Seed 000's table: volume / CPU pod / GPU pod (+ artifact storage), in micro-dollars.

    The pod lines hold each pod's compute and its container disk; ``disk_micros`` is the disk part of them (already
    inside ``total_micros``, never added again), so the table can show the split RunPod's bill shows.
    """

    volume_micros: int = 0
    cpu_pod_micros: int = 0
    gpu_pod_micros: int = 0
    storage_micros: int = 0
    disk_micros: int = 0
    # True while a pod may still be billing: the figures grow with ``now``.
    live: bool = False
    # GPU time after training: /try pods and the test window (a line of its own, ``CostKind.TRY_GPU``).
    try_micros: int = 0

    @property
    def total_micros(self) -> int:
        return self.volume_micros + self.cpu_pod_micros + self.gpu_pod_micros + self.storage_micros + self.try_micros

    @property
    def pods_micros(self) -> int:
        """Every pod line (what RunPod's pod bill covers): CPU, GPU and try."""
        return self.cpu_pod_micros + self.gpu_pod_micros + self.try_micros

    def __add__(self, other: CostBreakdown) -> CostBreakdown:
        return CostBreakdown(
            volume_micros=self.volume_micros + other.volume_micros,
            cpu_pod_micros=self.cpu_pod_micros + other.cpu_pod_micros,
            gpu_pod_micros=self.gpu_pod_micros + other.gpu_pod_micros,
            storage_micros=self.storage_micros + other.storage_micros,
            disk_micros=self.disk_micros + other.disk_micros,
            live=self.live or other.live,
            try_micros=self.try_micros + other.try_micros,
        )

    def by_kind(self) -> dict[CostKind, int]:
        return {
            CostKind.VOLUME: self.volume_micros,
            CostKind.CPU_POD: self.cpu_pod_micros,
            CostKind.GPU_POD: self.gpu_pod_micros,
            CostKind.STORAGE: self.storage_micros,
            CostKind.TRY_GPU: self.try_micros,
        }


def job_volume_window(pods: Iterable[Pod], now: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
    """From the job's first pod creation to its last pod's end (``now`` while one lives)."""
    windows = [window for pod in pods if (window := pod_billing_window(pod, now)) is not None]
    if not windows:
        return None
    return min(start for start, _ in windows), max(end for _, end in windows)


@dataclass(frozen=True)
class VolumeStay:
    """A job's time on one data center's volume: from its first pod there to its last pod's end there."""

    data_center_id: str
    volume: Volume
    start: dt.datetime
    end: dt.datetime


def job_volume_stays(session: Session, job: Job, pods: Sequence[Pod], now: dt.datetime) -> list[VolumeStay]:
    """The volumes the job's pods mounted, oldest first: one stay per run of consecutive pods in one data center
    (a pod mounts its data center's volume). A job that never moved has one. A pod row without a data center (from
    before pods recorded it) counts as the job's own volume's."""
    current = session.get(Volume, job.volume_id) if job.volume_id is not None else None
    default_dc = job.data_center_id or (current.data_center_id if current is not None else None)
    runs: list[tuple[str, list[Pod]]] = []
    for pod in sorted(pods, key=lambda p: p.id):
        dc = pod.data_center_id or default_dc
        if dc is None:
            continue
        if runs and runs[-1][0] == dc:
            runs[-1][1].append(pod)
        else:
            runs.append((dc, [pod]))
    stays = []
    for dc, run in runs:
        window = job_volume_window(run, now)
        volume = None if window is None else _volume_of(session, dc, window[0], current)
        if window is not None and volume is not None:
            stays.append(VolumeStay(dc, volume, *window))
    return sorted(stays, key=lambda stay: stay.start)


def _volume_of(session: Session, dc: str, at: dt.datetime, current: Volume | None) -> Volume | None:
    """The volume a pod of data center ``dc`` mounted at ``at``: the job's own when it is there, else that data
    center's newest volume made by then (lorabot keeps one per data center; a replaced one has a successor)."""
    if current is not None and current.data_center_id == dc:
        return current
    candidates = session.execute(select(Volume).where(Volume.data_center_id == dc).order_by(Volume.id)).scalars().all()
    made = [volume for volume in candidates if volume.created_at <= at]
    return made[-1] if made else (candidates[0] if candidates else None)


def close_volume_cost(
    session: Session,
    job_id: int,
    *,
    now: dt.datetime,
    price_micros_per_gb_month: int = VOLUME_PRICE_MICROS_PER_GB_MONTH,
) -> list[CostItem]:
    """Write the job's final volume items once all its pods are gone, one per volume stay (once: a second call
    returns the first call's items); empty when there is nothing to bill yet."""
    existing = _volume_items(session, job_id)
    if existing:
        return existing
    job, _volume, pods = _job_volume_and_pods(session, job_id)
    if any(pod.terminated_at is None for pod in pods if pod.api_created_at is not None):
        return []
    items = []
    for stay in job_volume_stays(session, job, pods, now):
        window = (stay.start, stay.end)
        hours = volume_billed_hours(*window)
        sizes = volume_sizes(session, stay.volume)
        # the size at the window's start, then each size it grew to inside the window
        at_start = [size for since, size in sizes if since <= window[0]][-1:] or [sizes[0][1]]
        grown = list(dict.fromkeys([*at_start, *(size for since, size in sizes if window[0] < since < window[1])]))
        items.append(
            CostItem(
                job_id=job.id,
                pod_id=None,
                kind=CostKind.VOLUME,
                started_at=window[0],
                ended_at=window[1],
                rate_micros_per_hour=volume_rate_micros_per_hour(
                    stay.volume.size_gb, price_micros_per_gb_month=price_micros_per_gb_month
                ),
                amount_micros=volume_window_cost_micros(
                    session, stay.volume, *window, price_micros_per_gb_month=price_micros_per_gb_month
                ),
                final=True,
                note=f"{' → '.join(f'{gb} GB' for gb in grown)} × {format_usd(price_micros_per_gb_month)}/GB/month, "
                f"{hours} started hour(s) on the {stay.data_center_id} volume",
            )
        )
    session.add_all(items)
    session.flush()
    return items


def job_cost(
    session: Session,
    job_id: int,
    *,
    now: dt.datetime,
    price_micros_per_gb_month: int = VOLUME_PRICE_MICROS_PER_GB_MONTH,
) -> CostBreakdown:
    """A job's cost at ``now``: closed cost items as written, everything still open computed live."""
    job, _volume, pods = _job_volume_and_pods(session, job_id)
    items = session.execute(select(CostItem).where(CostItem.job_id == job.id)).scalars().all()
    amounts = dict.fromkeys(CostKind, 0)
    disk = 0
    for item in items:
        amounts[item.kind] += item.amount_micros
        disk += item.disk_micros
    closed_pod_ids = {item.pod_id for item in items if item.pod_id is not None}
    live = False
    open_pods = [pod for pod in pods if pod.id not in closed_pod_ids]
    windows = windows_by_pod(session, [pod.id for pod in open_pods])
    for pod in open_pods:
        test_window = windows.get(pod.id)
        for part in pod_parts(pod, now, test_window.opened_at if test_window is not None else None):
            amounts[part.kind] += part.charge.total_micros
            disk += part.charge.disk_micros
        live = live or (pod.terminated_at is None and pod.api_created_at is not None)
    if not any(item.kind is CostKind.VOLUME for item in items):
        amounts[CostKind.VOLUME] += sum(
            volume_window_cost_micros(
                session, stay.volume, stay.start, stay.end, price_micros_per_gb_month=price_micros_per_gb_month
            )
            for stay in job_volume_stays(session, job, pods, now)
        )
    return CostBreakdown(
        volume_micros=amounts[CostKind.VOLUME],
        cpu_pod_micros=amounts[CostKind.CPU_POD],
        gpu_pod_micros=amounts[CostKind.GPU_POD],
        storage_micros=amounts[CostKind.STORAGE],
        disk_micros=disk,
        live=live,
        try_micros=amounts[CostKind.TRY_GPU],
    )


def exceeds_job_budget(session: Session, job_id: int, *, now: dt.datetime) -> bool:
    """True when a job with its own ``budget_micros`` has spent more than that (the tick then stops it)."""
    job = _get_job(session, job_id)
    if job.budget_micros is None:
        return False
    return job_cost(session, job_id, now=now).total_micros > job.budget_micros


def _job_volume_and_pods(session: Session, job_id: int) -> tuple[Job, Volume | None, Sequence[Pod]]:
    job = _get_job(session, job_id)
    volume = session.get(Volume, job.volume_id) if job.volume_id is not None else None
    pods = session.execute(select(Pod).where(Pod.job_id == job_id).order_by(Pod.id)).scalars().all()
    return job, volume, pods


def _volume_items(session: Session, job_id: int) -> list[CostItem]:
    statement = (
        select(CostItem)
        .where(CostItem.job_id == job_id, CostItem.kind == CostKind.VOLUME)
        .order_by(CostItem.started_at, CostItem.id)
    )
    return list(session.execute(statement).scalars().all())


def job_volume_by_data_center(
    session: Session,
    job_id: int,
    *,
    now: dt.datetime,
    price_micros_per_gb_month: int = VOLUME_PRICE_MICROS_PER_GB_MONTH,
) -> dict[str, int]:
    """The job's volume line split by data center; the parts add up to ``job_cost(...).volume_micros``. Closed items
    as written (each is one stay: its data center is the stay that starts when it does; an item from before moves
    were split goes to the job's data center), else live from the stays."""
    job, volume, pods = _job_volume_and_pods(session, job_id)
    stays = job_volume_stays(session, job, pods, now)
    items = _volume_items(session, job_id)
    split: dict[str, int] = {}
    if items:
        fallback = job.data_center_id or (volume.data_center_id if volume is not None else "?")
        starts = {stay.start: stay.data_center_id for stay in stays}
        for item in items:
            dc = starts.get(item.started_at, fallback)
            split[dc] = split.get(dc, 0) + item.amount_micros
        return split
    for stay in stays:
        cost = volume_window_cost_micros(
            session, stay.volume, stay.start, stay.end, price_micros_per_gb_month=price_micros_per_gb_month
        )
        split[stay.data_center_id] = split.get(stay.data_center_id, 0) + cost
    return split


def _get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise LookupError(f"job {job_public_id(job_id)} does not exist")
    return job


# -- users, team, months -------------------------------------------------------------------------------------------


def _jobs_of_month(session: Session, month: str, user_id: int | None) -> Sequence[Job]:
    start, end = month_bounds(month)
    statement = select(Job).where(Job.created_at >= start, Job.created_at < end)
    if user_id is not None:
        statement = statement.where(Job.user_id == user_id)
    return session.execute(statement.order_by(Job.id)).scalars().all()


def user_month_cost(session: Session, user_id: int, month: str, *, now: dt.datetime) -> CostBreakdown:
    return sum((job_cost(session, job.id, now=now) for job in _jobs_of_month(session, month, user_id)), CostBreakdown())


def team_month_cost(session: Session, month: str, *, now: dt.datetime) -> CostBreakdown:
    return sum((job_cost(session, job.id, now=now) for job in _jobs_of_month(session, month, None)), CostBreakdown())


def month_cost_by_user(session: Session, month: str, *, now: dt.datetime) -> dict[int, CostBreakdown]:
    """Every user's cost in ``month`` (for ``/cost`` without a user: the team's table)."""
    totals: dict[int, CostBreakdown] = {}
    for job in _jobs_of_month(session, month, None):
        totals[job.user_id] = totals.get(job.user_id, CostBreakdown()) + job_cost(session, job.id, now=now)
    return totals


@dataclass(frozen=True)
class DataCenterVolumes:
    """One data center's share of a month's volume bill (lorabot keeps one volume per data center)."""

    data_center_id: str
    kept_micros: int
    gb: int
    # The month's jobs' volume lines for their stays in this data center (a moved job pays a part in each).
    jobs_share_micros: int = 0

    @property
    def between_jobs_micros(self) -> int:
        return max(self.kept_micros - self.jobs_share_micros, 0)


@dataclass(frozen=True)
class VolumesMonth:
    """What the Network Volumes cost in a month, as RunPod bills them: every hour they exist, jobs or not."""

    kept_micros: int  # all volumes' hours inside the month (up to ``now``)
    jobs_share_micros: int  # the part already charged to the month's jobs (their volume lines)
    gb: int  # total size of the volumes that existed in the month
    # The same month split by data center, in the order their volumes were made.
    data_centers: tuple[DataCenterVolumes, ...] = ()

    @property
    def between_jobs_micros(self) -> int:
        """Hours no job paid for: the cache kept warm between jobs (jobs running at once each pay their hours).
        With the split per data center, the sum of each one's: jobs in one data center pay no other's idle hours."""
        if self.data_centers:
            return sum(dc.between_jobs_micros for dc in self.data_centers)
        return max(self.kept_micros - self.jobs_share_micros, 0)


def volumes_month_cost(
    session: Session,
    month: str,
    *,
    now: dt.datetime,
    price_micros_per_gb_month: int = VOLUME_PRICE_MICROS_PER_GB_MONTH,
    jobs_share_micros: int | None = None,
) -> VolumesMonth:
    """The month's bill for every volume lorabot made: from its creation (or the month's start) to its deletion
    (or ``now``, or the month's end), a started hour counting whole, as in the module's rules.

    ``jobs_share_micros`` is the month's jobs' volume lines when the caller has them already (``team_month_cost``'s
    ``volume_micros``); without it they are summed here."""
    start, end = month_bounds(month)
    kept = gb = 0
    # Data center -> [kept µ$, GB]: a volume replaced in the month (deleted by hand) adds to its data center's line.
    by_center: dict[str, list[int]] = {}
    for volume in session.execute(select(Volume).order_by(Volume.id)).scalars():
        lived_from = max(volume.created_at, start)
        lived_to = min(volume.deleted_at or now, end, now)
        if lived_to <= lived_from:
            continue
        cost = volume_window_cost_micros(
            session, volume, lived_from, lived_to, price_micros_per_gb_month=price_micros_per_gb_month
        )
        kept += cost
        gb += volume.size_gb
        line = by_center.setdefault(volume.data_center_id, [0, 0])
        line[0] += cost
        line[1] += volume.size_gb
    # Each job's volume line per data center: a job moved before training pays each volume for its stay there.
    shares: dict[str, int] = {}
    for job in _jobs_of_month(session, month, None):
        split = job_volume_by_data_center(session, job.id, now=now, price_micros_per_gb_month=price_micros_per_gb_month)
        for dc, micros in split.items():
            shares[dc] = shares.get(dc, 0) + micros
            by_center.setdefault(dc, [0, 0])  # a data center whose volume is gone: its jobs' share still shows
    if jobs_share_micros is None:
        jobs_share_micros = sum(shares.values())
    return VolumesMonth(
        kept_micros=kept,
        jobs_share_micros=jobs_share_micros,
        gb=gb,
        data_centers=tuple(
            DataCenterVolumes(dc, cost, size, shares.get(dc, 0)) for dc, (cost, size) in by_center.items()
        ),
    )


def committed_micros(session: Session, month: str, *, now: dt.datetime, user_id: int | None) -> int:
    """Spent plus reserved in ``month`` by a user (or the team, ``user_id=None``): a job that has not finished
    counts at least its estimate, so five queued jobs cannot each pass the budget check on their own."""
    total = 0
    jobs = _jobs_of_month(session, month, user_id)
    for job in jobs:
        spent = job_cost(session, job.id, now=now).total_micros
        total += spent if job.status.is_terminal() else max(spent, job.estimate_micros)
    # A confirmed /try is expected to spend its estimate (counted on top of what its pod has spent so far: an
    # overcount while it runs, never an undercount).
    return total + reserved_try_micros(session, [job.id for job in jobs])


@dataclass(frozen=True)
class BudgetCheck:
    """The answer to "may this user start a job estimated at N?"; ``reason`` says which limit and by how much."""

    allowed: bool
    reason: str | None
    user_committed_micros: int
    user_limit_micros: int | None
    team_committed_micros: int
    team_limit_micros: int | None


def would_exceed(
    session: Session,
    user_id: int,
    month: str,
    estimate_micros: int,
    *,
    now: dt.datetime,
    default_user_limit_micros: int | None = None,
    default_team_limit_micros: int | None = None,
) -> BudgetCheck:
    """Check a new job's estimate against the user's and the team's budget for ``month``.

    A limit stored in the ``budgets`` table wins over the configured default; no limit at all means unlimited.
    """
    if estimate_micros < 0:
        raise ValueError(f"an estimate must be ≥ 0, got {estimate_micros}")
    user_limit = _limit(session, user_id, month, default_user_limit_micros)
    team_limit = _limit(session, None, month, default_team_limit_micros)
    user_committed = committed_micros(session, month, now=now, user_id=user_id)
    team_committed = committed_micros(session, month, now=now, user_id=None)
    reason = None
    if user_limit is not None and user_committed + estimate_micros > user_limit:
        reason = (
            f"this job (about {format_usd(estimate_micros)}) would take your {month} spending to "
            f"{format_usd(user_committed + estimate_micros)}, over your budget of {format_usd(user_limit)} "
            f"({format_usd(max(user_limit - user_committed, 0))} left)"
        )
    elif team_limit is not None and team_committed + estimate_micros > team_limit:
        reason = (
            f"this job (about {format_usd(estimate_micros)}) would take the team's {month} spending to "
            f"{format_usd(team_committed + estimate_micros)}, over the team budget of {format_usd(team_limit)} "
            f"({format_usd(max(team_limit - team_committed, 0))} left)"
        )
    return BudgetCheck(
        allowed=reason is None,
        reason=reason,
        user_committed_micros=user_committed,
        user_limit_micros=user_limit,
        team_committed_micros=team_committed,
        team_limit_micros=team_limit,
    )


def remaining_budget(
    session: Session,
    user_id: int | None,
    month: str,
    *,
    now: dt.datetime,
    default_limit_micros: int | None = None,
) -> int | None:
    """What a user (or the team, ``user_id=None``) may still commit in ``month``; None when unlimited, ≥ 0."""
    limit = _limit(session, user_id, month, default_limit_micros)
    if limit is None:
        return None
    return max(limit - committed_micros(session, month, now=now, user_id=user_id), 0)


def _limit(session: Session, user_id: int | None, month: str, default: int | None) -> int | None:
    stored = get_budget_limit(session, user_id=user_id, month=month)
    return stored if stored is not None else default
