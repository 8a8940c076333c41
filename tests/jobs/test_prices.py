"""Live prices: what RunPod's catalog says now, at most 10 minutes old, and the built-in table (saying so) when RunPod
cannot be asked. Every plan and price list names where its prices came from."""

from __future__ import annotations

import dataclasses

import pytest

from jobs.cloud import AsyncCloud
from jobs.planning import make_plan
from jobs.prices import LivePriceProvider, PriceSource, StaticPriceProvider, built_in_table
from jobs.runpod_graphql import GraphqlClient
from jobs.sandbox.emulator import RunpodEmulator
from jobs.spec import UserOptions
from tests.jobs.data.specs import CATALOG, PRESETS, seed_dataset

RTX_4090 = "NVIDIA GeForce RTX 4090"
SEED = UserOptions(trigger="kanachan", class_word="1girl", repeats=10, sample_prompts=("kanachan, 1girl",))


class FakeClock:
    """Monotonic seconds the test moves by hand, so the cache expires without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def emulator(make_runpod_emulator) -> RunpodEmulator:
    return make_runpod_emulator(time_scale=600.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def prices(emulator: RunpodEmulator, clock: FakeClock) -> LivePriceProvider:
    # The emulator speaks RunPod's GraphQL; the REST transport answers in the same types.
    cloud = AsyncCloud(GraphqlClient(emulator.api_key, emulator.base_url), base_delay_s=0.01)
    return LivePriceProvider(cloud, data_center_id="EU-RO-1", clock=clock)


def set_secure_price(emulator: RunpodEmulator, gpu_id: str, usd_per_hr: str) -> None:
    """RunPod changes a price (the emulator has no knob for it: its catalog entry is replaced)."""
    catalog = emulator.account.catalog
    with emulator.account.lock:
        gpu = catalog.gpu_types[gpu_id]
        catalog.gpu_types[gpu_id] = dataclasses.replace(gpu, secure_micros=int(float(usd_per_hr) * 1_000_000))


def plan_text(prices: LivePriceProvider) -> str:
    plan = make_plan(seed_dataset(), SEED, presets=PRESETS, catalog=CATALOG, prices=prices)
    return plan.estimate.render_table()


async def test_before_runpod_is_asked_the_table_is_the_built_in_one(prices: LivePriceProvider) -> None:
    table = prices.get_table()
    assert not table.source.live and table.source.describe() == "built-in prices"
    assert prices.age_s is None


async def test_the_plan_uses_runpods_live_price_and_says_how_old_it_is(
    prices: LivePriceProvider, emulator: RunpodEmulator, clock: FakeClock
) -> None:
    set_secure_price(emulator, RTX_4090, "0.74")
    emulator.set_stock(RTX_4090, "SECURE", 1, "EU-RO-1")
    await prices.refresh()
    clock.now += 180

    table = prices.get_table()
    rtx4090 = table.gpu("4090")
    assert (rtx4090.price("secure"), rtx4090.live, rtx4090.stock) == (740_000, True, "Low")
    assert prices.age_s == 180
    text = plan_text(prices)
    assert "$0.74/h" in text and "Secure Cloud stock: Low" in text
    assert text.endswith("Prices: live RunPod prices, 3 min old.")


async def test_a_changed_price_reaches_the_plan_once_the_cache_expires(
    prices: LivePriceProvider, emulator: RunpodEmulator, clock: FakeClock
) -> None:
    await prices.refresh()
    before = plan_text(prices)
    assert "$0.69/h" in before

    set_secure_price(emulator, RTX_4090, "0.89")
    clock.now += 9 * 60
    await prices.refresh()  # still fresh: RunPod is not asked again
    assert plan_text(prices) == before.replace("less than a minute old", "9 min old")

    clock.now += 60
    await prices.refresh()
    after = plan_text(prices)
    assert "$0.89/h" in after and "$0.69/h" not in after
    assert after.endswith("Prices: live RunPod prices, less than a minute old.")
    assert _total(after) > _total(before)


async def test_when_runpod_fails_the_plan_uses_the_built_in_table_and_says_why(
    prices: LivePriceProvider, emulator: RunpodEmulator, clock: FakeClock
) -> None:
    set_secure_price(emulator, RTX_4090, "0.89")
    emulator.fail_next(5, 500)  # more than AsyncCloud's three tries
    await prices.refresh()

    table = prices.get_table()
    assert table.gpus == built_in_table().gpus and prices.age_s is None
    text = plan_text(prices)
    assert "$0.69/h" in text
    assert text.endswith(
        "Prices: built-in prices (RunPod could not be asked: Something went wrong. Please try again later or contact"
        " support.)."
    )

    # RunPod is not asked again at once (an outage must not slow every /train), but a minute later it is.
    clock.now += 30
    await prices.refresh()
    assert not prices.get_table().source.live
    clock.now += 31
    await prices.refresh()
    assert prices.get_table().gpu("4090").price("secure") == 890_000


async def test_a_gpu_runpod_does_not_offer_in_the_secure_cloud_has_no_price_and_only_runpods_gpus_are_added(
    prices: LivePriceProvider,
) -> None:
    await prices.refresh()
    table = prices.get_table()
    assert table.gpu("rtx4000ada").price("secure") is None  # not sold by the emulated RunPod
    assert table.gpu("NVIDIA H100 80GB HBM3").price("secure") == 2_990_000  # only RunPod knows it
    assert table.gpu("4090").price("community") is None  # never asked: community is not quoted


async def test_the_built_in_provider_needs_no_refresh() -> None:
    provider = StaticPriceProvider()
    await provider.refresh()
    assert provider.get_table() == built_in_table()


def _total(text: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith("| secure |"))
    return float(line.rsplit("**$", 1)[1].split("**")[0])


def test_prices_from_the_sandbox_catalog_say_so_and_never_pass_for_runpods() -> None:
    assert PriceSource(live=True, age_s=20, origin="sandbox prices (simulated, $0)").describe() == (
        "sandbox prices (simulated, $0), less than a minute old"
    )
