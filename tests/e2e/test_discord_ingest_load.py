"""Every interaction is acknowledged within Discord's 3 s while ten 200 MB zips are downloaded and ingested at once.

The fake Discord flags any interaction not answered within 3 s (teardown fails the test); the test also records
the slowest acknowledgement it saw. The zips are made once per session: 20 PNGs (a valid dataset) plus incompressible
random bytes in STORED entries, so the bytes really travel and are really read.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.world.fake_discord.models import InteractionRecord
from tests.world.fixtures_bot import BotWorld
from tests.world.lorabot_world import padded_dataset_zip

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

MiB = 1024 * 1024
ZIP_COUNT = 10
ZIP_MB = 200
BLOB_MB = 45


@pytest.fixture(scope="session")
def big_zips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("big-zips")
    return [padded_dataset_zip(root / f"big{index}.zip", index, ZIP_MB, blob_mib=BLOB_MB) for index in range(ZIP_COUNT)]


async def test_interactions_are_acknowledged_in_time_while_ten_200mb_zips_ingest(
    bot_world: BotWorld, big_zips: list[Path]
) -> None:
    bw = bot_world
    bw.fake.set_attachment_size_limit(500 * MiB)  # a Nitro user's limit: 200 MB attachments are allowed
    assert all(p.stat().st_size >= 199 * MiB for p in big_zips)
    started = time.monotonic()
    trains = [
        await bw.send_train(path, name=f"big{i}", epochs=1, trigger="kana", class_word="1girl")
        for i, path in enumerate(big_zips)
    ]
    others: list[InteractionRecord] = []
    replies_done = asyncio.Event()

    async def keep_asking() -> None:
        while not replies_done.is_set():
            others.append(await bw.fake.send_slash("queue", {}))
            others.append(await bw.fake.send_slash("models", {}))
            await asyncio.sleep(0.5)

    asker = asyncio.create_task(keep_asking())
    try:
        plans = [await bw.fake.wait_for_reply(t, timeout=240) for t in trains]
    finally:
        replies_done.set()
        await asker
    elapsed = time.monotonic() - started
    for other in others:
        await bw.fake.wait_for_response(other, timeout=5)

    for plan in plans:
        assert "Plan for **big" in plan.content, plan.text()
        assert "20 images" in plan.text()
    everything = trains + others
    delays = [i.response.delay_s for i in everything if i.response is not None]
    assert len(delays) == len(everything)
    slowest = max(delays)
    print(
        f"\n{ZIP_COUNT} x {ZIP_MB} MB ingested in {elapsed:.1f} s; {len(everything)} interactions, "
        f"slowest ack {slowest:.3f} s"
    )
    assert slowest < 3.0
    assert bw.fake.failures == []
