"""A bot that dies after creating a job's thread but before saving its id finds that thread again on restart:
the job keeps one thread, with every epoch in it. Only the bot's own thread counts, whatever others name theirs."""

from __future__ import annotations

import pytest

from bot.notifier import thread_prefix
from jobs.states import JobStatus
from storage.db import session_scope
from storage.models import Job
from tests.world.fixtures_bot import BotWorld, epoch_of

pytestmark = pytest.mark.timeout(180)


def _forget_thread(bw: BotWorld, job_id: int) -> None:
    """What the DB holds when the process died between Discord's answer and the write of the thread's id."""
    with session_scope(bw.world.sessions) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.thread_id is not None
        job.thread_id = None


async def test_a_thread_made_just_before_a_crash_is_found_again_not_made_twice(bot_world: BotWorld) -> None:
    bw = bot_world
    thread, job_id = await bw.job_past_its_first_epoch(name="phoenix", images=4, epochs=3)

    await bw.restart(while_down=lambda: _forget_thread(bw, job_id))
    await bw.wait_for_status(job_id, lambda s: s.is_terminal())

    assert bw.world.status(job_id) is JobStatus.SUCCEEDED, bw.world.describe()
    await bw.wait_for_thread_message(thread, lambda m: "done" in m.text())
    ours = [t for t in bw.fake.threads if t.name and t.name.startswith(thread_prefix(job_id))]
    assert [t.id for t in ours] == [thread.id], [t.name for t in ours]
    assert bw.world.job(job_id).thread_id == thread.id
    epochs = [epoch_of(m.text()) for m in bw.fake.messages_in(thread) if epoch_of(m.text())]
    assert epochs == ["1", "2", "3"]


async def test_a_users_thread_with_the_jobs_name_is_not_taken_for_the_jobs_thread(bot_world: BotWorld) -> None:
    bw = bot_world
    thread, job_id = await bw.job_past_its_first_epoch(name="phoenix", images=4, epochs=2)
    mallory = bw.fake.add_user("mallory")
    decoy = bw.fake.world.create_thread(
        bw.fake.channel, {"name": f"{thread_prefix(job_id)}phoenix", "type": 11}, mallory
    )

    def forget_thread_and_archive_ours() -> None:
        _forget_thread(bw, job_id)
        thread.archived = True  # only the decoy is left active with the job's name

    await bw.restart(while_down=forget_thread_and_archive_ours)
    await bw.wait_for_status(job_id, lambda s: s.is_terminal())

    assert bw.world.status(job_id) is JobStatus.SUCCEEDED, bw.world.describe()
    new_thread_id = await bw.fake.wait_for(lambda: bw.world.job(job_id).thread_id, timeout=30, what="a new thread")
    assert new_thread_id not in (decoy.id, thread.id)
    new_thread = bw.fake.world.channels[new_thread_id]
    await bw.wait_for_thread_message(new_thread, lambda m: "done" in m.text())
    assert not [m for m in bw.fake.messages_in(decoy) if m.author_id == bw.fake.bot_user.id]
