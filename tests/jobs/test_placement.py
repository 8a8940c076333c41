"""The placement rule: where a job runs, from each data center's stock, GPU price and volume warmth."""

from __future__ import annotations

import pytest

from jobs.cloud import GpuOffer
from jobs.placement import Site, cold_cpu_stage_micros, place

RTX_4090 = GpuOffer("NVIDIA GeForce RTX 4090", "RTX 4090", 24, "SECURE", 690_000, "High")
RTX_3090 = GpuOffer("NVIDIA GeForce RTX 3090", "RTX 3090", 24, "SECURE", 430_000, "High")
# One hour of GPU; a CPU stage worth $0.05.
HOUR = 3600
CPU_STAGE = 50_000


def test_only_a_data_center_with_stock_can_take_the_job():
    """No suitable GPU in DC1, one in DC2: DC2, cold or not, and the reason names both."""
    chosen = place(
        [Site("EU-RO-1", None, warm=True), Site("US-KS-2", RTX_4090, warm=False)],
        gpu_seconds=HOUR,
        cpu_stage_micros=CPU_STAGE,
    )
    assert (chosen.data_center_id, chosen.warm) == ("US-KS-2", False)
    assert chosen.cost_micros == 690_000 + CPU_STAGE
    assert "only data center with a suitable GPU in stock" in chosen.reason
    assert "no suitable GPU in stock in EU-RO-1" in chosen.reason


def test_a_warm_volume_wins_when_its_gpu_costs_less_extra_than_the_cpu_stage():
    """Same GPU price: the warm data center, though it is listed second."""
    chosen = place(
        [Site("EU-RO-1", RTX_4090, warm=False), Site("US-KS-2", RTX_4090, warm=True)],
        gpu_seconds=HOUR,
        cpu_stage_micros=CPU_STAGE,
    )
    assert (chosen.data_center_id, chosen.warm) == ("US-KS-2", True)
    assert "less than the $0.05 CPU stage it saves" in chosen.reason


def test_a_cold_volume_wins_when_its_gpu_saves_more_than_the_cpu_stage():
    """A 3090 an hour cheaper by $0.26 beats a warm 4090 whose CPU stage saving is only $0.05."""
    chosen = place(
        [Site("EU-RO-1", RTX_4090, warm=True), Site("US-KS-2", RTX_3090, warm=False)],
        gpu_seconds=HOUR,
        cpu_stage_micros=CPU_STAGE,
    )
    assert (chosen.data_center_id, chosen.warm) == ("US-KS-2", False)
    assert "saves $0.26" in chosen.reason and "more than the $0.05 CPU stage it adds" in chosen.reason


def test_a_short_job_keeps_the_warm_volume_even_on_a_dearer_gpu():
    """Six minutes of GPU: the 3090 saves $0.026, less than the CPU stage, so the warm 4090 stays."""
    chosen = place(
        [Site("EU-RO-1", RTX_4090, warm=True), Site("US-KS-2", RTX_3090, warm=False)],
        gpu_seconds=360,
        cpu_stage_micros=CPU_STAGE,
    )
    assert (chosen.data_center_id, chosen.warm) == ("EU-RO-1", True)


@pytest.mark.parametrize(
    ("warm", "expected"),
    [((False, False), "EU-RO-1"), ((True, True), "EU-RO-1"), ((False, True), "US-KS-2")],
)
def test_equal_cost_goes_to_the_warm_volume_then_the_operators_order(warm: tuple[bool, bool], expected: str):
    """A tie between equals is the first listed; a warm one beats a cold one at the same total."""
    chosen = place(
        [Site("EU-RO-1", RTX_4090, warm=warm[0]), Site("US-KS-2", RTX_4090, warm=warm[1])],
        gpu_seconds=HOUR,
        cpu_stage_micros=0,
    )
    assert chosen.data_center_id == expected


def test_no_stock_anywhere_waits_in_a_warm_data_center_else_the_first():
    """Nothing in stock: the job starts where its CPU stage is not needed, else where the operator listed first."""
    warm_second = place(
        [Site("EU-RO-1", None, warm=False), Site("US-KS-2", None, warm=True)], gpu_seconds=HOUR, cpu_stage_micros=1
    )
    assert (warm_second.data_center_id, warm_second.offer) == ("US-KS-2", None)
    assert "no suitable GPU is in stock in any data center" in warm_second.reason
    cold = place(
        [Site("EU-RO-1", None, warm=False), Site("US-KS-2", None, warm=False)], gpu_seconds=HOUR, cpu_stage_micros=1
    )
    assert cold.data_center_id == "EU-RO-1"


def test_no_data_center_is_refused():
    with pytest.raises(ValueError, match=r"runpod\.data_centers"):
        place([], gpu_seconds=HOUR, cpu_stage_micros=CPU_STAGE)


def test_the_cold_cpu_stage_is_priced_as_the_estimate_times_it():
    """60 s start + 1500 s env build + 6.9 GB at 20 MB/s (345 s) = 1905 s at $0.08/h."""
    assert cold_cpu_stage_micros(6_900_000_000, 80_000) == 42_333
