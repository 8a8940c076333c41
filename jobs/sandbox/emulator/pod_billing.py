"""RunPod's own bill per pod (`GET /v2/billing/pods`), computed from the account's billing intervals.

Compute is billed per started second at the pod's hourly price (the same seconds and micro-dollars as
`Account.billed`), and the container disk at $0.10/GB/month for every billed second, prorated over a 30-day
month. Each interval's seconds are cut into time buckets; a bucket's amount is the difference of the
interval's cumulative amounts at its edges, so the buckets of an interval add up to the interval's own cost
to the micro-dollar and a client summing the records reconciles with the pod's bill exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from jobs.sandbox.emulator import billing
from jobs.sandbox.emulator.records import Pod
from jobs.sandbox.emulator.state import Account

BUCKET_SIZES = ("hour", "day", "week", "month", "year")
DEFAULT_BUCKET_SIZE = "day"
DEFAULT_WINDOW = timedelta(days=30)
CONTAINER_DISK_MICROS_PER_GB_MONTH = 100_000
SECONDS_PER_MONTH = 30 * 24 * 3600


class BillingQueryError(ValueError):
    """A contract-valid query RunPod would refuse (400)."""


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    bucket_size: str
    pod_id: str | None


def floor_bucket(moment: datetime, size: str) -> datetime:
    moment = moment.astimezone(UTC)
    if size == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if size == "day":
        return day
    if size == "week":  # ISO weeks start on Monday
        return day - timedelta(days=day.weekday())
    if size == "month":
        return day.replace(day=1)
    if size == "year":
        return day.replace(month=1, day=1)
    raise BillingQueryError(f"unknown bucket size {size!r}")


def next_bucket(start: datetime, size: str) -> datetime:
    if size == "hour":
        return start + timedelta(hours=1)
    if size == "day":
        return start + timedelta(days=1)
    if size == "week":
        return start + timedelta(weeks=1)
    if size == "month":
        return (
            start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        )
    if size == "year":
        return start.replace(year=start.year + 1)
    raise BillingQueryError(f"unknown bucket size {size!r}")


def resolve_window(
    now: datetime,
    *,
    bucket_size: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    last_n: int | None = None,
    pod_id: str | None = None,
) -> Window:
    """The query's window snapped to bucket edges: start down, end up; `last_n` buckets end with the current one."""
    size = bucket_size or DEFAULT_BUCKET_SIZE
    if last_n is not None:
        if start is not None or end is not None:
            raise BillingQueryError("lastN cannot be combined with startTime or endTime.")
        first = floor_bucket(now, size)
        for _ in range(last_n - 1):
            first = floor_bucket(first - timedelta(microseconds=1), size)
        return Window(first, next_bucket(floor_bucket(now, size), size), size, pod_id)
    window_start = floor_bucket(start if start is not None else now - DEFAULT_WINDOW, size)
    window_end = end if end is not None else now
    if floor_bucket(window_end, size) != window_end:
        window_end = next_bucket(floor_bucket(window_end, size), size)
    if window_end <= window_start:
        raise BillingQueryError("endTime must be after startTime.")
    return Window(window_start, window_end, size, pod_id)


def _round(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def disk_cost_micros(seconds: int, disk_gb: int) -> int:
    """Container disk for `seconds` billed seconds, rounded half up to the micro-dollar."""
    return _round(Decimal(seconds) * disk_gb * CONTAINER_DISK_MICROS_PER_GB_MONTH / SECONDS_PER_MONTH)


def dollars(micros: int) -> float:
    # Six decimals: a client adding Decimal(str(amount)) gets back the exact micro-dollars.
    return round(micros / billing.MICROS_PER_DOLLAR, 6)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod_buckets(account: Account, pod: Pod, window: Window) -> dict[datetime, list[int]]:
    """{bucket start: [compute micros, disk micros]} for the buckets of `window` in which `pod` billed."""
    clock = account.clock
    now = clock.now()
    found: dict[datetime, list[int]] = {}
    for interval in pod.billing:
        end = now if interval.end is None else interval.end
        seconds = billing.billed_seconds([(interval.start, interval.end)], now)
        if seconds == 0:
            continue

        def billed_before(edge: datetime, start: float = interval.start, total: int = seconds) -> int:
            # Second k covers [start + k, start + k + 1) and belongs to the bucket its start falls in.
            offset = (edge - clock.start).total_seconds() - start
            return min(total, max(0, math.ceil(offset - 1e-9)))

        bucket = floor_bucket(max(clock.to_datetime(interval.start), window.start), window.bucket_size)
        stop = min(clock.to_datetime(max(end, interval.start + seconds)), window.end)
        while bucket < stop:
            following = next_bucket(bucket, window.bucket_size)
            before, after = billed_before(bucket), billed_before(following)
            if after > before:
                amounts = found.setdefault(bucket, [0, 0])
                amounts[0] += billing.cost_micros(after, interval.cost_per_hr_micros) - billing.cost_micros(
                    before, interval.cost_per_hr_micros
                )
                amounts[1] += disk_cost_micros(after, pod.container_disk_gb) - disk_cost_micros(
                    before, pod.container_disk_gb
                )
            bucket = following
    return found


def _amounts(kind: str, compute: int, disk: int) -> dict[str, float]:
    gpu, cpu = (compute, 0) if kind == "gpu" else (0, compute)
    return {
        "gpuAmount": dollars(gpu),
        "cpuAmount": dollars(cpu),
        "diskAmount": dollars(disk),
        "totalAmount": dollars(gpu + cpu + disk),
    }


def list_pod_billing(account: Account, window: Window) -> dict[str, Any]:
    """A `ListPodBillingResponse` body: one record per pod per bucket in which it billed."""
    records: list[dict[str, Any]] = []
    totals = {"gpu": 0, "cpu": 0, "disk": 0}
    with account.lock:
        account.tick()
        pods = [account.pods[window.pod_id]] if window.pod_id in account.pods else []
        if window.pod_id is None:
            pods = list(account.pods.values())
        for pod in pods:
            for bucket, (compute, disk) in sorted(_pod_buckets(account, pod, window).items()):
                totals[pod.kind] += compute
                totals["disk"] += disk
                records.append(
                    {
                        "podId": pod.id,
                        "startTime": _stamp(bucket),
                        "endTime": _stamp(next_bucket(bucket, window.bucket_size)),
                        **_amounts(pod.kind, compute, disk),
                    }
                )
    records.sort(key=lambda record: (record["startTime"], record["podId"]))
    return {
        "records": records,
        "metadata": {
            "query": {
                "startTime": _stamp(window.start),
                "endTime": _stamp(window.end),
                "bucketSize": window.bucket_size,
                "podId": window.pod_id,
            },
            "recordCount": len(records),
            "uniquePodCount": len({record["podId"] for record in records}),
            "totals": {
                "gpuAmount": dollars(totals["gpu"]),
                "cpuAmount": dollars(totals["cpu"]),
                "diskAmount": dollars(totals["disk"]),
                "totalAmount": dollars(totals["gpu"] + totals["cpu"] + totals["disk"]),
            },
        },
    }


def pod_billing_for(account: Account, pod_id: str | None, bucket_size: str = DEFAULT_BUCKET_SIZE) -> dict[str, Any]:
    """What `GET /v2/billing/pods?podId=…&bucketSize=…` answers now (default window: the last 30 days)."""
    window = resolve_window(account.clock.utcnow(), bucket_size=bucket_size, pod_id=pod_id)
    return list_pod_billing(account, window)
