"""Prices in integer micro-dollars per hour, behind a provider interface so live RunPod prices can replace the table.

Seed 000 measured: CPU pod (2 vCPU / 8 GB) $0.08/h, RTX 4090 community $0.44/h and secure $0.69/h, Network Volume
$0.07/GB/month prorated by the hour. Every other figure in `DEFAULT_GPUS` is a plausible default marked as such, to
be replaced by `gpuTypes` prices (communityPrice, securePrice, communitySpotPrice) from a live provider.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal, Protocol

Cloud = Literal["community", "secure", "spot"]
CLOUDS: tuple[Cloud, ...] = ("community", "secure", "spot")
MICROS_PER_USD = 1_000_000
HOURS_PER_MONTH = 730  # RunPod prorates monthly volume prices by the hour over a 730-hour month.


def usd_to_micros(usd: str | Decimal) -> int:
    """'0.44' → 440000. Strings or Decimals only: a float would smuggle binary rounding into money."""
    return int((Decimal(usd) * MICROS_PER_USD).to_integral_value(rounding=ROUND_HALF_UP))


def format_usd(micros: int, places: int = 2) -> str:
    """440000 → '$0.44' (rounded half up at `places`), for display only."""
    quantum = Decimal(1).scaleb(-places)
    value = (Decimal(micros) / MICROS_PER_USD).quantize(quantum, rounding=ROUND_HALF_UP)
    return f"${value}"


@dataclass(frozen=True)
class GpuOffer:
    """One GPU type: RunPod id, VRAM, and hourly prices per cloud (None = not offered there)."""

    gpu_id: str
    display_name: str
    vram_gb: int
    hourly_micros: Mapping[Cloud, int | None]
    aliases: tuple[str, ...] = ()
    # False when the figures are lorabot's defaults rather than prices read from RunPod.
    live: bool = False

    def price(self, cloud: Cloud) -> int | None:
        return self.hourly_micros.get(cloud)


@dataclass(frozen=True)
class PriceTable:
    cpu_pod_hourly_micros: int
    volume_gb_month_micros: int
    gpus: tuple[GpuOffer, ...] = field(default_factory=tuple)

    def gpu(self, name: str) -> GpuOffer:
        """Find a GPU by RunPod id, display name or alias ('4090'); unknown → KeyError naming close matches."""
        wanted = name.strip().lower()
        for offer in self.gpus:
            if wanted in (offer.gpu_id.lower(), offer.display_name.lower(), *offer.aliases):
                return offer
        names = [o.display_name for o in self.gpus] + [a for o in self.gpus for a in o.aliases]
        close = difflib.get_close_matches(wanted, [n.lower() for n in names], n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        known = ", ".join(f"{o.aliases[0] if o.aliases else o.gpu_id} ({o.vram_gb} GB)" for o in self.gpus)
        raise KeyError(f"unknown GPU {name!r}.{hint} Known GPUs: {known}.")

    def volume_hourly_micros(self, size_gb: int) -> Decimal:
        """Prorated hourly price of a volume: exact Decimal, rounded only when a cost is finally summed."""
        return Decimal(self.volume_gb_month_micros * size_gb) / HOURS_PER_MONTH


class PriceProvider(Protocol):
    """Where prices come from: the static table below, or a live provider wrapping RunPod's `gpuTypes` query."""

    def get_table(self) -> PriceTable: ...


def _offer(
    gpu_id: str, display: str, vram: int, community: str | None, secure: str | None, spot: str | None, *aliases: str
) -> GpuOffer:
    return GpuOffer(
        gpu_id=gpu_id,
        display_name=display,
        vram_gb=vram,
        hourly_micros={
            "community": usd_to_micros(community) if community else None,
            "secure": usd_to_micros(secure) if secure else None,
            "spot": usd_to_micros(spot) if spot else None,
        },
        aliases=aliases,
    )


# RTX 4090 community/secure are seed 000's measured prices; the spot price and every other GPU are defaults in the
# range RunPod listed in 2025-2026, to be replaced by live prices.
DEFAULT_GPUS: tuple[GpuOffer, ...] = (
    _offer("NVIDIA GeForce RTX 4090", "RTX 4090", 24, "0.44", "0.69", "0.29", "4090", "rtx4090"),
    _offer("NVIDIA GeForce RTX 3090", "RTX 3090", 24, "0.22", "0.43", "0.15", "3090", "rtx3090"),
    _offer("NVIDIA RTX A5000", "RTX A5000", 24, "0.16", "0.27", "0.11", "a5000"),
    _offer("NVIDIA L4", "L4", 24, None, "0.43", "0.22", "l4"),
    _offer("NVIDIA RTX A6000", "RTX A6000", 48, "0.33", "0.49", "0.25", "a6000"),
    _offer("NVIDIA A40", "A40", 48, None, "0.40", "0.20", "a40"),
    _offer("NVIDIA RTX 4000 Ada Generation", "RTX 4000 Ada", 20, "0.20", "0.26", "0.12", "4000ada", "rtx4000ada"),
    _offer("NVIDIA RTX A4000", "RTX A4000", 16, "0.17", "0.32", "0.10", "a4000"),
)


class StaticPriceProvider:
    """Seed 000's prices plus defaults for other GPUs; pass a table to override any of them."""

    def __init__(self, table: PriceTable | None = None) -> None:
        self._table = table or PriceTable(
            cpu_pod_hourly_micros=usd_to_micros("0.08"),
            volume_gb_month_micros=usd_to_micros("0.07"),
            gpus=DEFAULT_GPUS,
        )

    def get_table(self) -> PriceTable:
        return self._table
