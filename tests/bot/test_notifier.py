"""The outbox worker with the real bot and the fake Discord: each notice reaches the job's thread once, in order,
through 5xx and 429 answers and a crash between "Discord accepted" and "we wrote it down"."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import update

from bot.notifier import backoff_seconds, nonce_for
from jobs.states import JobStatus, NoticeKind
from storage.db import session_scope
from storage.models import Notice
from storage.transitions import add_notice, create_job, transition
from tests.world.fixtures_bot import BotWorld

pytestmark = pytest.mark.timeout(60)


def _finished_job(bw: BotWorld, lines: int) -> int:
    """A cancelled job (the orchestrator leaves it alone) with `lines` INFO notices after its CANCELLED one."""
    now = bw.world.now()
    with session_scope(bw.world.sessions) as s:
        job = create_job(
            s,
            user_id=bw.fake.default_user.id,
            name="outbox",
            output_name="outbox",
            dataset_sha256="0" * 64,
            dataset_size=1,
            base_model="sdxl-1.0",
            now=now,
            guild_id=bw.fake.guild.id,
            channel_id=bw.fake.channel.id,
        )
        transition(s, job.id, JobStatus.CANCELLED, now=now, reason="test")
        for index in range(lines):
            add_notice(
                s,
                job_id=job.id,
                kind=NoticeKind.INFO,
                key=f"t:{job.id}:{index}",
                now=now,
                payload={"text": f"line {index}"},
            )
        return job.id


def _notices(bw: BotWorld, job_id: int) -> list[Notice]:
    return bw.world.notices(job_id)


async def test_every_notice_reaches_the_thread_once_in_order(bot_world: BotWorld) -> None:
    bw = bot_world
    job_id = _finished_job(bw, 3)
    bw.bot.notifier.wake()
    await bw.fake.wait_for(lambda: all(n.sent_at for n in _notices(bw, job_id)), what="all notices sent")
    thread = bw.thread_of(job_id)
    assert thread is not None and thread.name == f"j{job_id} · outbox"
    messages = bw.fake.messages_in(thread)
    assert [m.payload.get("nonce") for m in messages] == [nonce_for(n.id) for n in _notices(bw, job_id)]
    assert "cancelled" in messages[0].text() and [m.content.split()[-1] for m in messages[1:]] == ["0", "1", "2"]
    assert [n.discord_message_id for n in _notices(bw, job_id)] == [m.id for m in messages]


async def test_a_crash_after_sending_does_not_post_twice(bot_world: BotWorld) -> None:
    bw = bot_world
    job_id = _finished_job(bw, 1)
    bw.bot.notifier.wake()
    await bw.fake.wait_for(lambda: all(n.sent_at for n in _notices(bw, job_id)), what="all notices sent")
    thread = bw.thread_of(job_id)
    assert thread is not None
    before = [m.id for m in bw.fake.messages_in(thread)]
    # The bot died after Discord accepted the message and before the DB said so: the notice looks unsent.
    with session_scope(bw.world.sessions) as s:
        s.execute(update(Notice).where(Notice.job_id == job_id).values(sent_at=None, discord_message_id=None))
    bw.bot.notifier.wake()
    await bw.fake.wait_for(lambda: all(n.sent_at for n in _notices(bw, job_id)), what="the resend")

    assert [m.id for m in bw.fake.messages_in(thread)] == before
    assert [n.discord_message_id for n in _notices(bw, job_id)] == before


async def test_discord_errors_hold_the_notice_and_later_ones_until_it_goes_through(bot_world: BotWorld) -> None:
    bw = bot_world
    # discord.py itself retries a 5xx five times; six failures make this send fail for the notifier.
    bw.fake.fail_next("POST /channels/*/messages", status=503, times=6)
    job_id = _finished_job(bw, 2)
    bw.bot.notifier.wake()
    await bw.fake.wait_for(lambda: _notices(bw, job_id)[0].attempts >= 1, timeout=30, what="a failed attempt")
    first = _notices(bw, job_id)[0]
    assert first.sent_at is None and "503" in (first.last_error or "")
    assert all(n.sent_at is None for n in _notices(bw, job_id)[1:]), "later notices wait for the first"
    await bw.fake.wait_for(lambda: all(n.sent_at for n in _notices(bw, job_id)), timeout=30, what="delivery")
    thread = bw.thread_of(job_id)
    assert thread is not None
    assert len(bw.fake.messages_in(thread)) == 3
    assert bw.fake.bot_token not in (first.last_error or "")


async def test_the_worker_stops_when_it_is_woken_in_the_same_step_as_it_is_stopped(bot_world: BotWorld) -> None:
    """A wake and a stop together used to lose the cancel (Python 3.11's wait_for), and the bot never closed."""
    notifier = bot_world.bot.notifier
    for _ in range(5):
        await asyncio.sleep(0.05)  # idle: waiting for a wake or the next poll
        notifier.wake()
        await asyncio.wait_for(notifier.stop(), timeout=5)
        notifier.start()
    await bot_world.fake.wait_for(lambda: notifier._task is not None and not notifier._task.done(), what="restart")


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert backoff_seconds(50) == 600.0
