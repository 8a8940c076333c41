"""Interaction ack latency while 20 `/train` uploads of 200 MB are downloaded and ingested at once.

    python -m bench.ack_latency [--uploads 20] [--size-mb 200] [--light-every 0.2]

The bot is `lorabot run` in its own process (sandbox cloud, SQLite, local store: the defaults without a RunPod key),
connected to the fake Discord that this process plays, CDN included (attachments are served from disk with
sendfile). The zips are made once into `$TMPDIR/lorabot-bench/ack/`, like the e2e load test's: 20 PNGs with
captions (a valid dataset, so ingest accepts it) plus incompressible random bytes in STORED entries, so every byte
really travels and is really read by ingest.

Phases: (1) quiet: light interactions (`/status`, `/queue`, `/cost` in turn, one every `--light-every` s) with
nothing else going on; (2) load: the `/train` uploads all fired at once, and the same light stream until every
`/train` has its plan. Ack latency is the fake's `response.delay_s`: from the gateway dispatch of the interaction
to the bot's callback POST arriving (deferred or answered), as Discord would time its 3 s rule. Goal: p99 < 0.5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.botproc import MIB, bot_env, log_tail, read_memory, start_bot, stop_bot
from tests.world.fake_discord import FakeDiscord, InteractionRecord, patch_discord_py
from tests.world.lorabot_world import padded_dataset_zip

GOAL_P99_S = 0.5
IMAGES = 20
BLOB_MIB = 45
LIGHT: tuple[tuple[str, dict[str, str]], ...] = (("status", {}), ("queue", {}), ("cost", {}))
QUIET_COUNT = 30


def cache_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "lorabot-bench" / "ack"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_zip(path: Path, index: int, size_mib: int) -> Path:
    """The e2e load test's dataset shape, cached: built once, reused by later runs."""
    return path if path.exists() else padded_dataset_zip(path, index, size_mib, images=IMAGES, blob_mib=BLOB_MIB)


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile: with 20 values p99 is the largest, never an interpolation below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class Row:
    kind: str
    delays: list[float]

    def line(self) -> str:
        d = self.delays
        p99 = quantile(d, 0.99)
        return (
            f"| {self.kind} | {len(d)} | {quantile(d, 0.5) * 1000:.0f} | {p99 * 1000:.0f} | {max(d) * 1000:.0f} | "
            f"{'met' if p99 < GOAL_P99_S else 'MISSED'} |"
        )


def delays_of(records: Sequence[InteractionRecord]) -> list[float]:
    missing = [r.label for r in records if r.response is None]
    if missing:
        raise RuntimeError(f"{len(missing)} interactions were never acknowledged: {missing[:5]}")
    return [r.response.delay_s for r in records if r.response is not None]


async def light_stream(
    fake: FakeDiscord, every_s: float, stop: asyncio.Event, count: int | None
) -> list[InteractionRecord]:
    sent: list[InteractionRecord] = []
    while not stop.is_set() and (count is None or len(sent) < count):
        name, options = LIGHT[len(sent) % len(LIGHT)]
        sent.append(await fake.send_slash(name, options))
        await asyncio.sleep(every_s)
    return sent


async def loop_lag(stop: asyncio.Event, period_s: float = 0.01) -> list[float]:
    """How late this process's own event loop wakes up (the fake Discord's side of every ack), sampled every 10 ms."""
    lags = []
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        planned = loop.time() + period_s
        await asyncio.sleep(period_s)
        lags.append(max(0.0, loop.time() - planned))
    return lags


async def run(uploads: int, size_mib: int, every_s: float, zips: list[Path], asyncio_debug: bool) -> int:
    root = Path(tempfile.mkdtemp(prefix="lorabot-bench-ack-"))
    # asyncio's debug mode makes the bot log every callback that held its event loop over 100 ms: where a slow
    # ack's time went (it slows the bot a little, so figures from such a run are not the ones to report).
    extra = {"PYTHONASYNCIODEBUG": "1"} if asyncio_debug else {}
    try:
        async with FakeDiscord() as fake:
            fake.set_attachment_size_limit(500 * MIB)  # a Nitro user's limit: 200 MB attachments are allowed
            with patch_discord_py(fake):
                process = await start_bot(bot_env(fake, root / "data", **extra), root)
                try:
                    return await _measure(fake, process.pid, uploads, size_mib, every_s, zips)
                finally:
                    if await stop_bot(process) != 0:
                        print(log_tail(root), file=sys.stderr)
                    if asyncio_debug:
                        slow = [line for line in log_tail(root, 100_000).splitlines() if " took " in line]
                        print(f"bot callbacks that held the event loop > 100 ms: {len(slow)}")
                        print("\n".join(slow[:20]))
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _measure(fake: FakeDiscord, pid: int, uploads: int, size_mib: int, every_s: float, zips: list[Path]) -> int:
    await fake.wait_until_connected(timeout=90)
    await asyncio.sleep(2)  # let the start-up settle (command sync, first ticks) before the quiet phase
    quiet = await light_stream(fake, every_s, asyncio.Event(), QUIET_COUNT)
    for record in quiet:
        await fake.wait_for_reply(record, timeout=15)
    rss_before = read_memory(pid).rss

    started = time.monotonic()
    trains = [
        await fake.send_slash(
            "train",
            {"name": f"load{i}", "dataset": zips[i % len(zips)], "epochs": 1, "trigger": "kana", "class_word": "1girl"},
        )
        for i in range(uploads)
    ]
    done = asyncio.Event()
    lights = asyncio.create_task(light_stream(fake, every_s, done, None))
    lag_task = asyncio.create_task(loop_lag(done))
    peak_hwm = 0
    try:
        replies = []
        for record in trains:
            replies.append(await fake.wait_for_reply(record, timeout=300))
            peak_hwm = max(peak_hwm, read_memory(pid).hwm)
    finally:
        done.set()
        loaded = await lights
        lags = await lag_task
    elapsed = time.monotonic() - started
    for record in loaded:
        await fake.wait_for_response(record, timeout=5)
    peak_hwm = max(peak_hwm, read_memory(pid).hwm)

    planned = sum("Plan for **load" in r.content for r in replies)
    print(
        f"{uploads} x /train with a {size_mib} MiB zip ({size_mib * MIB / 1e6:.0f} MB, {len(zips)} distinct files): "
        f"all {len(replies)} answered in {elapsed:.1f} s ({planned} plans, {len(replies) - planned} refusals), "
        f"{uploads * size_mib * MIB / 1e6 / elapsed:.0f} MB/s downloaded+ingested"
    )
    print(f"bot RSS before the uploads {rss_before / MIB:.0f} MiB; VmHWM after them {peak_hwm / MIB:.0f} MiB")
    print("| interactions | n | p50 ms | p99 ms | max ms | goal p99 < 500 ms |")
    print("|---|---:|---:|---:|---:|---|")
    rows = [
        Row("light, quiet bot (`/status` `/queue` `/cost`)", delays_of(quiet)),
        Row(f"`/train` with a {size_mib} MiB upload", delays_of(trains)),
        Row("light, during the uploads", delays_of(loaded)),
    ]
    for row in rows:
        print(row.line())
    print(
        f"the fake Discord's own event loop (this process) during the uploads: woke late by p50 "
        f"{quantile(lags, 0.5) * 1000:.0f} ms, p99 {quantile(lags, 0.99) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms"
    )
    over = [f for f in fake.failures]
    print(f"fake Discord failures (3 s rule, unknown routes): {len(over)}")
    for failure in over[:5]:
        print(f"  {failure}")
    return 0 if planned == uploads and not over else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--size-mb", type=int, default=200, help="zip size in MiB")
    parser.add_argument("--distinct", type=int, default=20, help="how many different zip files the uploads cycle over")
    parser.add_argument("--light-every", type=float, default=0.2, help="seconds between light interactions")
    parser.add_argument("--asyncio-debug", action="store_true", help="list the bot's slow callbacks (diagnosis)")
    args = parser.parse_args()
    started = time.monotonic()
    zips = [
        build_zip(cache_dir() / f"upload-{i:02d}-{args.size_mb}MiB.zip", i, args.size_mb)
        for i in range(min(args.distinct, args.uploads))
    ]
    print(f"zips ready in {time.monotonic() - started:.1f} s ({cache_dir()})")
    return asyncio.run(run(args.uploads, args.size_mb, args.light_every, zips, args.asyncio_debug))


if __name__ == "__main__":
    sys.exit(main())
