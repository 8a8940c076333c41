"""Prices in integer micro-dollars per hour, from RunPod's live catalog or, when RunPod cannot be asked, a table.

lorabot quotes the Secure Cloud only: every GPU pod trains on the Network Volume the CPU pod prepared, and RunPod
mounts Network Volumes only on Secure Cloud pods (RunPod offers no spot pods any more either). The built-in table
keeps seed 000's measured figures: CPU pod (2 vCPU / 8 GB) $0.08/h, RTX 4090 secure $0.69/h (community $0.44/h,
kept for a future community path but never quoted), Network Volume $0.07/GB/month prorated by the hour. Every other
GPU figure is a plausible default. `LivePriceProvider` replaces the GPU prices with RunPod's own, read through
`AsyncCloud.list_gpu_offers`, and says how old they are.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Literal, Protocol

from jobs.cloud import CloudError

if TYPE_CHECKING:
    from jobs.cloud import AsyncCloud
    from jobs.cloud import GpuOffer as CloudGpuOffer

log = logging.getLogger(__name__)

Cloud = Literal["secure", "community"]
# The clouds a plan is priced in. Community comes back when lorabot has a path that needs no Network Volume.
QUOTED_CLOUDS: tuple[Cloud, ...] = ("secure",)
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
    # RunPod's stock level in the Secure Cloud ("High", "Medium", "Low"; None = none free). Known only when live.
    stock: str | None = None

    def price(self, cloud: Cloud) -> int | None:
        return self.hourly_micros.get(cloud)


# Whose catalog a live table came from, as plans and price lists say it.
RUNPOD_ORIGIN = "live RunPod prices"
SANDBOX_ORIGIN = "sandbox prices (simulated, $0)"


@dataclass(frozen=True)
class PriceSource:
    """Where a table's prices came from, for every plan and price list to say."""

    live: bool
    age_s: int = 0
    # Why the built-in table is in use: RunPod's error, cut short.
    reason: str | None = None
    # Whose catalog answered: RunPod's, or the $0 sandbox's emulator (whose prices only imitate RunPod's).
    origin: str = RUNPOD_ORIGIN

    def describe(self) -> str:
        if self.live:
            return f"{self.origin}, {_age(self.age_s)} old"
        if self.reason:
            return f"built-in prices (RunPod could not be asked: {self.reason})"
        return "built-in prices"


BUILT_IN = PriceSource(live=False)


@dataclass(frozen=True)
class PriceTable:
    cpu_pod_hourly_micros: int
    volume_gb_month_micros: int
    gpus: tuple[GpuOffer, ...] = field(default_factory=tuple)
    source: PriceSource = BUILT_IN

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
    """Where prices come from. `refresh()` may ask RunPod (the bot awaits it before planning); `get_table()` never
    does, so planning, which runs in a worker thread, stays synchronous."""

    async def refresh(self) -> None: ...

    def get_table(self) -> PriceTable: ...


def _offer(gpu_id: str, display: str, vram: int, secure: str | None, community: str | None, *aliases: str) -> GpuOffer:
    return GpuOffer(
        gpu_id=gpu_id,
        display_name=display,
        vram_gb=vram,
        hourly_micros={
            "secure": usd_to_micros(secure) if secure else None,
            "community": usd_to_micros(community) if community else None,
        },
        aliases=aliases,
    )


# RTX 4090 secure/community are seed 000's measured prices; every other GPU is a default in the range RunPod listed
# in 2025-2026. Community prices are data for a future community path: no plan quotes them.
DEFAULT_GPUS: tuple[GpuOffer, ...] = (
    _offer("NVIDIA GeForce RTX 4090", "RTX 4090", 24, "0.69", "0.44", "4090", "rtx4090"),
    _offer("NVIDIA GeForce RTX 3090", "RTX 3090", 24, "0.43", "0.22", "3090", "rtx3090"),
    _offer("NVIDIA RTX A5000", "RTX A5000", 24, "0.27", "0.16", "a5000"),
    _offer("NVIDIA L4", "L4", 24, "0.43", None, "l4"),
    _offer("NVIDIA RTX A6000", "RTX A6000", 48, "0.49", "0.33", "a6000"),
    _offer("NVIDIA A40", "A40", 48, "0.40", None, "a40"),
    _offer("NVIDIA RTX 4000 Ada Generation", "RTX 4000 Ada", 20, "0.26", "0.20", "4000ada", "rtx4000ada"),
    _offer("NVIDIA RTX A4000", "RTX A4000", 16, "0.32", "0.17", "a4000"),
)


def built_in_table() -> PriceTable:
    return PriceTable(
        cpu_pod_hourly_micros=usd_to_micros("0.08"),
        volume_gb_month_micros=usd_to_micros("0.07"),
        gpus=DEFAULT_GPUS,
    )


class StaticPriceProvider:
    """Seed 000's prices plus defaults for other GPUs; pass a table to override any of them."""

    def __init__(self, table: PriceTable | None = None) -> None:
        self._table = table or built_in_table()

    async def refresh(self) -> None:
        """Nothing to ask: the table is fixed."""

    def get_table(self) -> PriceTable:
        return self._table


class LivePriceProvider:
    """RunPod's live Secure Cloud GPU prices and stock, kept `max_age_s` (10 minutes by default).

    `await refresh()` asks RunPod only when what it holds is older than that; `get_table()` answers from memory with
    the prices' age. When RunPod cannot be asked (any CloudError, or no answer within `timeout_s`) the table is the
    built-in one and its source says why; RunPod is asked again `retry_after_failure_s` later, so an outage does not
    slow every /train by a round of retries. The CPU pod and volume rates always come from the built-in table.
    """

    def __init__(
        self,
        cloud: AsyncCloud,
        *,
        data_center_id: str | None = None,
        max_age_s: float = 600.0,
        retry_after_failure_s: float = 60.0,
        timeout_s: float = 15.0,
        built_in: PriceTable | None = None,
        clock: Callable[[], float] = time.monotonic,
        origin: str = RUNPOD_ORIGIN,
    ) -> None:
        self._cloud = cloud
        self._origin = origin
        self._data_center_id = data_center_id
        self.max_age_s = max_age_s
        self.retry_after_failure_s = retry_after_failure_s
        self.timeout_s = timeout_s
        self._built_in = built_in or built_in_table()
        self._clock = clock
        # One refresh at a time: /train commands arriving together share one call to RunPod.
        self._lock = asyncio.Lock()
        self._gpus: tuple[GpuOffer, ...] | None = None
        self._fetched_at: float | None = None
        self._failed_at: float | None = None
        self._failure: str | None = None

    @property
    def age_s(self) -> float | None:
        """Seconds since the live prices held were read; None when none are held."""
        if self._gpus is None or self._fetched_at is None:
            return None
        return max(0.0, self._clock() - self._fetched_at)

    async def refresh(self) -> None:
        async with self._lock:
            now = self._clock()
            age = self.age_s
            if age is not None and age < self.max_age_s:
                return
            if self._failed_at is not None and now - self._failed_at < self.retry_after_failure_s:
                return
            try:
                async with asyncio.timeout(self.timeout_s):
                    offers = await self._cloud.list_gpu_offers(self._data_center_id, clouds=("SECURE",))
            except CloudError as exc:
                self._fail(now, _short(str(exc)) or type(exc).__name__)
                return
            except TimeoutError:
                self._fail(now, f"no answer in {self.timeout_s:g} s")
                return
            self._gpus = live_gpus(offers, self._built_in.gpus)
            self._fetched_at, self._failed_at, self._failure = now, None, None

    def _fail(self, now: float, reason: str) -> None:
        log.warning("RunPod's GPU prices could not be read (%s); using the built-in table", reason)
        self._gpus, self._fetched_at = None, None
        self._failed_at, self._failure = now, reason

    def get_table(self) -> PriceTable:
        age = self.age_s
        if self._gpus is None or age is None:
            return replace(self._built_in, source=PriceSource(live=False, reason=self._failure))
        source = PriceSource(live=True, age_s=int(age), origin=self._origin)
        return replace(self._built_in, gpus=self._gpus, source=source)


def live_gpus(offers: Sequence[CloudGpuOffer], built_in: Sequence[GpuOffer]) -> tuple[GpuOffer, ...]:
    """RunPod's Secure Cloud offers as the table's GPUs: the built-in GPUs first (their names and aliases, RunPod's
    price and stock; no secure price when RunPod does not offer it there), then the GPUs only RunPod knows."""
    secure = {o.gpu_type_id: o for o in offers if o.cloud == "SECURE" and o.price_micros_per_hr > 0}
    gpus: list[GpuOffer] = []
    for known in built_in:
        offer = secure.pop(known.gpu_id, None)
        if offer is None:
            gpus.append(replace(known, hourly_micros={"secure": None}, live=True, stock=None))
        else:
            gpus.append(
                replace(
                    known,
                    vram_gb=offer.memory_gb or known.vram_gb,
                    hourly_micros={"secure": offer.price_micros_per_hr},
                    live=True,
                    stock=offer.stock,
                )
            )
    for offer in secure.values():
        gpus.append(
            GpuOffer(
                gpu_id=offer.gpu_type_id,
                display_name=offer.display_name,
                vram_gb=offer.memory_gb,
                hourly_micros={"secure": offer.price_micros_per_hr},
                live=True,
                stock=offer.stock,
            )
        )
    return tuple(gpus)


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _age(seconds: int) -> str:
    if seconds < 60:
        return "less than a minute"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
