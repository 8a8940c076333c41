"""Per-second billing in integer micro-dollars, as RunPod bills pods (and Network Volumes by the hour)."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

MICROS_PER_DOLLAR = 1_000_000
SECONDS_PER_HOUR = 3600
# RunPod prices Network Volumes at $0.07/GB/month and prorates by the hour; a month is taken as 30 days.
VOLUME_MICROS_PER_GB_MONTH = 70_000
HOURS_PER_MONTH = 720


def dollars_to_micros(dollars: str | Decimal) -> int:
    """'0.69' → 690000; takes text or Decimal so no float ever enters a sum."""
    return int((Decimal(dollars) * MICROS_PER_DOLLAR).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def micros_to_float(micros: int) -> float:
    """For the GraphQL answer only (RunPod sends prices as JSON numbers)."""
    return float(Decimal(micros) / MICROS_PER_DOLLAR)


def billed_seconds(intervals: list[tuple[float, float | None]], now: float) -> int:
    """Whole seconds billed over [start, end) intervals; an open interval runs to `now`.

    Each interval is rounded up to a whole second: a pod that lived 0.2 s is billed 1 s, like per-second billing.
    """
    total = 0
    for start, end in intervals:
        stop = now if end is None else end
        total += math.ceil(max(0.0, stop - start) - 1e-9)
    return total


def cost_micros(seconds: int, cost_per_hr_micros: int) -> int:
    """Cost of `seconds` at an hourly price, rounded half up to the micro-dollar."""
    value = Decimal(seconds) * cost_per_hr_micros / SECONDS_PER_HOUR
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def volume_cost_micros(size_gb: int, lived_seconds: float) -> int:
    """Network Volume cost: every started hour is billed at size × $0.07/GB/month ÷ 720."""
    hours = math.ceil(max(0.0, lived_seconds) / SECONDS_PER_HOUR - 1e-9)
    value = Decimal(size_gb) * VOLUME_MICROS_PER_GB_MONTH * hours / HOURS_PER_MONTH
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def resized_volume_cost_micros(
    first_size_gb: int, resizes: list[tuple[float, int]], created_at: float, end: float
) -> int:
    """A volume that grew while it lived: every started hour (counted from its creation) is billed at the largest
    size it had in that hour. Without resizes, the same as `volume_cost_micros`."""
    hours = math.ceil(max(0.0, end - created_at) / SECONDS_PER_HOUR - 1e-9)
    gb_hours = 0
    for hour in range(hours):
        slot_end = created_at + (hour + 1) * SECONDS_PER_HOUR
        sizes = [first_size_gb, *(size for at, size in resizes if at < slot_end)]
        gb_hours += max(sizes)
    value = Decimal(gb_hours) * VOLUME_MICROS_PER_GB_MONTH / HOURS_PER_MONTH
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))
