"""The plan a user confirms says where the job will run and why, when the operator lists several data centers; a job
that moved between two shows its volume share in both in `/cost`'s month."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest

from bot import render
from jobs import ledger
from jobs.orchestrator import GpuChoice
from jobs.states import JobStatus, PodRole
from storage.db import session_scope
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


async def test_cost_shows_a_moved_jobs_volume_share_in_both_data_centers(
    make_bot_world: Callable[..., contextlib.AbstractAsyncContextManager[BotWorld]],
) -> None:
    async with make_bot_world(data_centers=(DC1, DC2), gpu_fallback=(GpuChoice(RTX_4090, "SECURE"),)) as bw:
        world = bw.world
        world.emulator.set_stock(RTX_4090, "SECURE", 2, DC1)
        world.emulator.set_stock(RTX_4090, "SECURE", 2, DC2)
        plan = await bw.train(dataset_zip(3, size=64), name="moved", trigger="kana", class_word="1girl", epochs=1)
        await bw.confirm(plan)
        job_id = bw.latest_job_id()

        def cpu_pod_made() -> bool:
            return any(p.role is PodRole.CPU and p.runpod_pod_id for p in world.pods(job_id))

        for _ in range(600):  # the CPU stage starts in DC1, then DC1's 4090s are gone
            if cpu_pod_made():
                break
            await asyncio.sleep(0.05)
        assert cpu_pod_made(), world.describe()
        world.emulator.set_stock(RTX_4090, "SECURE", 0, DC1)
        await bw.wait_for_status(job_id, lambda s: s.is_terminal(), timeout=120)
        assert world.status(job_id) is JobStatus.SUCCEEDED, world.describe()
        assert [p.data_center_id for p in world.pods(job_id)] == [DC1, DC2, DC2]

        with session_scope(world.sessions) as s:
            split = ledger.job_volume_by_data_center(s, job_id, now=world.now())
        assert set(split) == {DC1, DC2} and 0 not in split.values(), split
        reply = await bw.fake.wait_for_reply(await bw.fake.send_slash("cost", {}))
        text = reply.text()
        assert "2 data centers" in text, text
        block = text[text.index("In jobs above") :].splitlines()
        # The jobs' share, then one line per data center: both hold this job's part.
        assert [line.split()[0] for line in block[1:3]] == [DC1, DC2], block
        assert block[1].endswith(render.usd(split[DC1])) and block[2].endswith(render.usd(split[DC2]))
