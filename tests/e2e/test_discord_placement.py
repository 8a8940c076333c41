"""The plan a user confirms says where the job will run and why, when the operator lists several data centers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from jobs.orchestrator import GpuChoice
from tests.world.fixtures_bot import BotWorld
from tests.world.lorabot_world import RTX_4090, dataset_zip

pytestmark = pytest.mark.timeout(120)
DC1, DC2 = "EU-RO-1", "US-KS-2"


async def test_the_plan_names_the_data_center_with_stock_and_why(
    make_bot_world: Callable[..., contextlib.AbstractAsyncContextManager[BotWorld]],
) -> None:
    async with make_bot_world(data_centers=(DC1, DC2), gpu_fallback=(GpuChoice(RTX_4090, "SECURE"),)) as bw:
        bw.world.emulator.set_stock(RTX_4090, "SECURE", 0, DC1)
        bw.world.emulator.set_stock(RTX_4090, "SECURE", 3, DC2)
        plan = await bw.train(dataset_zip(3, size=64), name="where", trigger="kana", class_word="1girl", epochs=1)
        where = [f for e in plan.payload["embeds"] for f in e.get("fields", []) if f["name"] == "Where"]
        assert len(where) == 1, plan.payload["embeds"]
        assert DC2 in where[0]["value"] and "Checked again when the job leaves the queue" in where[0]["value"]


async def test_one_data_center_adds_no_where_line(bot_world: BotWorld) -> None:
    plan = await bot_world.train(dataset_zip(3, size=64), name="here", trigger="kana", class_word="1girl", epochs=1)
    assert not [f for e in plan.payload["embeds"] for f in e.get("fields", []) if f["name"] == "Where"]
