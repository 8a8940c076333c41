"""In Discord, /train's plan and /models quote the live catalog's Secure Cloud prices and say how old they are and
whose they are (the test world's bot runs the $0 sandbox, whose emulated catalog must not pass for RunPod's)."""

from __future__ import annotations

import dataclasses

import pytest

from jobs.sandbox.emulator import RunpodEmulator
from tests.world.fixtures_bot import BotWorld
from tests.world.lorabot_world import dataset_zip

pytestmark = pytest.mark.timeout(120)
RTX_4090 = "NVIDIA GeForce RTX 4090"


def set_secure_price(emulator: RunpodEmulator, gpu_id: str, micros: int) -> None:
    """RunPod changes a price (the emulator has no knob for it: its catalog entry is replaced)."""
    with emulator.account.lock:
        gpu = emulator.account.catalog.gpu_types[gpu_id]
        emulator.account.catalog.gpu_types[gpu_id] = dataclasses.replace(gpu, secure_micros=micros)


async def test_the_train_plan_quotes_runpods_live_secure_price(bot_world: BotWorld) -> None:
    bw = bot_world
    set_secure_price(bw.world.emulator, RTX_4090, 790_000)
    plan = await bw.train(dataset_zip(4, size=256), name="live", epochs=1, repeats=1, trigger="kana")

    text = plan.text()
    assert "Prices: sandbox prices (simulated, $0), less than a minute old" in text, text
    assert "Estimated cost (secure cloud)" in text and "community" not in text
    assert "GPU RTX 4090 (Secure Cloud)" in text


async def test_models_lists_the_gpus_with_live_prices_and_stock(bot_world: BotWorld) -> None:
    bw = bot_world
    set_secure_price(bw.world.emulator, RTX_4090, 790_000)
    asked = await bw.fake.send_slash("models", {})
    reply = await bw.fake.wait_for_reply(asked, timeout=10)

    assert "illustrious-xl-v0.1" in reply.content
    assert "`4090` · RTX 4090 · 24 GB · $0.79/h · stock " in reply.content
    assert "Prices: sandbox prices (simulated, $0), less than a minute old" in reply.content
