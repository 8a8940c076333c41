"""Which data center a job runs in: a pure function of what each one offers now.

lorabot keeps one Network Volume per data center the operator lists (``runpod.data_centers``), and a GPU pod can only
mount the volume of its own data center, so choosing the data center chooses both the GPU and the cache. The rule:
- only data centers with a suitable GPU in stock now (Secure Cloud, the fallback list, the price cap) can run the
  job; among them the cheapest for this job wins, where a cold volume adds the CPU stage it needs first. So a warm
  data center is preferred exactly when its GPU costs less extra than the CPU stage it saves; on a tie the warm one
  wins too (it also starts sooner), then the operator's order;
- with no suitable GPU in stock anywhere, the job still starts somewhere (its CPU stage may run while stock returns):
  the first warm data center, else the first listed.
No I/O here: the orchestrator surveys the catalog and the DB and passes the result in, and tells the thread the
``reason``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from jobs.cloud import GpuOffer
from jobs.estimate import StageFigures
from jobs.prices import format_usd


@dataclass(frozen=True)
class Site:
    """One data center as placement sees it: the GPU a job would get there now (None: none suitable in stock) and
    whether its volume already holds the environment and the model (no CPU stage)."""

    data_center_id: str
    offer: GpuOffer | None
    warm: bool


@dataclass(frozen=True)
class Placement:
    data_center_id: str
    offer: GpuOffer | None
    warm: bool
    # What the job is expected to cost there from now on (GPU time, plus the CPU stage when cold), in µ$.
    cost_micros: int
    # One sentence for the thread: where and why.
    reason: str


def gpu_cost_micros(offer: GpuOffer, gpu_seconds: int) -> int:
    return int((Decimal(offer.price_micros_per_hr) * gpu_seconds / 3600).to_integral_value(rounding=ROUND_HALF_UP))


def cold_cpu_stage_micros(model_bytes: int, cpu_hourly_micros: int, stages: StageFigures | None = None) -> int:
    """What a cold CPU stage costs (pod start, environment build, model download), as ``jobs.estimate`` times it."""
    stages = stages or StageFigures()
    seconds = stages.cpu_pod_start_s + stages.env_build_s + model_bytes // stages.download_bytes_per_s
    return int((Decimal(cpu_hourly_micros) * seconds / 3600).to_integral_value(rounding=ROUND_HALF_UP))


def site_cost_micros(site: Site, *, gpu_seconds: int, cpu_stage_micros: int) -> int | None:
    """The job's cost from now on in this data center; None where it cannot run now (no suitable GPU in stock)."""
    if site.offer is None:
        return None
    return gpu_cost_micros(site.offer, gpu_seconds) + (0 if site.warm else cpu_stage_micros)


def place(sites: Sequence[Site], *, gpu_seconds: int, cpu_stage_micros: int) -> Placement:
    """Choose the data center for a job (see the module's rule). ``sites`` are in the operator's order."""
    if not sites:
        raise ValueError("no data center to place the job in: runpod.data_centers is empty")
    priced = [
        (cost, site)
        for site in sites
        if (cost := site_cost_micros(site, gpu_seconds=gpu_seconds, cpu_stage_micros=cpu_stage_micros)) is not None
    ]
    if not priced:
        fallback = next((site for site in sites if site.warm), sites[0])
        where = "its volume is warm" if fallback.warm else "the first data center listed"
        return Placement(
            fallback.data_center_id,
            None,
            fallback.warm,
            0,
            f"{fallback.data_center_id}: no suitable GPU is in stock in any data center now "
            f"({', '.join(s.data_center_id for s in sites)}); waiting there, {where}",
        )
    order = {site.data_center_id: index for index, site in enumerate(sites)}
    # Cheapest first; on equal cost the warm volume (it also starts sooner), then the operator's order.
    cost, chosen = min(priced, key=lambda item: (item[0], not item[1].warm, order[item[1].data_center_id]))
    return Placement(
        chosen.data_center_id,
        chosen.offer,
        chosen.warm,
        cost,
        _reason(chosen, cost, priced, sites, gpu_seconds=gpu_seconds, cpu_stage_micros=cpu_stage_micros),
    )


def _reason(
    chosen: Site,
    cost: int,
    priced: list[tuple[int, Site]],
    sites: Sequence[Site],
    *,
    gpu_seconds: int,
    cpu_stage_micros: int,
) -> str:
    assert chosen.offer is not None
    gpu = f"{chosen.offer.display_name} at {format_usd(chosen.offer.price_micros_per_hr)}/h"
    volume = "warm volume, no CPU stage" if chosen.warm else "cold volume, a CPU stage first"
    head = f"{chosen.data_center_id}: {gpu}, {volume}"
    empty = [s.data_center_id for s in sites if s.offer is None]
    others = [(c, s) for c, s in priced if s is not chosen]
    if not others:
        why = "the only data center with a suitable GPU in stock now"
    else:
        runner_cost, runner = min(others, key=lambda item: item[0])
        assert runner.offer is not None
        extra_gpu = gpu_cost_micros(chosen.offer, gpu_seconds) - gpu_cost_micros(runner.offer, gpu_seconds)
        if chosen.warm and not runner.warm:
            why = (
                f"its GPU costs {format_usd(max(extra_gpu, 0))} more for this job than {runner.data_center_id}'s "
                f"(cold), less than the {format_usd(cpu_stage_micros)} CPU stage it saves"
            )
        elif runner.warm and not chosen.warm:
            why = (
                f"its GPU saves {format_usd(-extra_gpu)} for this job over {runner.data_center_id}'s warm volume, "
                f"more than the {format_usd(cpu_stage_micros)} CPU stage it adds"
            )
        else:
            why = f"about {format_usd(runner_cost - cost)} cheaper than {runner.data_center_id} for this job"
            if runner_cost == cost:
                why = f"as cheap as {runner.data_center_id}, listed first"
    tail = f"; no suitable GPU in stock in {', '.join(empty)}" if empty else ""
    return f"{head}: {why}{tail}"
