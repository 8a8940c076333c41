"""/cancel mid-training and a bot restart mid-job, end to end against the fake Discord and the lorabot world."""

from __future__ import annotations

from collections import Counter

import pytest

from jobs.ledger import format_usd, job_cost
from jobs.states import JobStatus
from storage.db import session_scope
from tests.world.fixtures_bot import BotWorld, epoch_of
from tests.world.lorabot_world import dataset_zip

pytestmark = pytest.mark.timeout(180)


async def test_cancel_mid_training_terminates_pods_at_once_and_reports_the_final_cost(bot_world: BotWorld) -> None:
    bw = bot_world
    thread, job_id = await bw.job_past_its_first_epoch(name="long", images=8, epochs=8)
    assert bw.world.status(job_id) is JobStatus.TRAINING

    asked = await bw.fake.send_slash("cancel", {"job": f"j{job_id}"})
    reply = await bw.fake.wait_for_reply(asked, timeout=20)

    # One orchestrator step inside /cancel terminated every pod: nothing runs at the emulator any more.
    assert bw.world.running_pods() == []
    assert bw.world.status(job_id) is JobStatus.CANCELLED, reply.text()
    with session_scope(bw.world.sessions) as s:
        total = job_cost(s, job_id, now=bw.world.now()).total_micros
    assert f"Cancelled `j{job_id}`" in reply.content and format_usd(total) in reply.content
    cancelled = await bw.wait_for_thread_message(thread, lambda m: "cancelled" in m.text())
    assert "Final cost" in cancelled.text() and format_usd(total) in cancelled.text()


async def test_cancel_is_refused_to_someone_else(bot_world: BotWorld) -> None:
    bw = bot_world
    plan = await bw.train(
        dataset_zip(4, size=512), name="mine", epochs=2, repeats=1, trigger="kana", class_word="1girl"
    )
    await bw.confirm(plan)
    job_id = bw.latest_job_id()
    mallory = bw.fake.add_user("mallory")
    asked = await bw.fake.send_slash("cancel", {"job": f"j{job_id}"}, user=mallory)
    reply = await bw.fake.wait_for_reply(asked, timeout=20)
    assert "Only the person who started this job" in reply.content
    assert not bw.world.status(job_id).is_terminal() or bw.world.status(job_id) is JobStatus.SUCCEEDED


async def test_restart_mid_job_continues_the_thread_without_a_duplicate(bot_world: BotWorld) -> None:
    bw = bot_world
    thread, job_id = await bw.job_past_its_first_epoch(name="phoenix", images=6, epochs=4)

    await bw.restart()
    assert not bw.world.status(job_id).is_terminal(), "the restart must happen in the middle of the job"

    await bw.wait_for_status(job_id, lambda s: s.is_terminal())
    assert bw.world.status(job_id) is JobStatus.SUCCEEDED, bw.world.describe()
    await bw.wait_for_thread_message(thread, lambda m: "done" in m.text())
    messages = bw.fake.messages_in(thread)
    epochs = [epoch_of(m.text()) for m in messages if epoch_of(m.text())]
    assert epochs == ["1", "2", "3", "4"]
    nonces = Counter(m.payload.get("nonce") for m in messages)
    assert all(count == 1 for count in nonces.values()), nonces
    assert sum("done" in m.text() for m in messages) == 1
    assert bw.world.running_pods() == []


async def test_a_plan_offered_before_a_restart_can_still_be_confirmed(bot_world: BotWorld) -> None:
    """Confirm outlives the bot: the plan is rebuilt from its packed dataset and its saved options."""
    bw = bot_world
    plan = await bw.train(dataset_zip(6, size=512), name="phoenix", epochs=2, repeats=3, trigger="kana")
    stranger_id = bw.fake.add_user("eve")

    await bw.restart()

    confirm_id = next(c for c in plan.custom_ids() if c.endswith(":confirm"))
    refused = await bw.fake.click(plan, confirm_id, user=stranger_id)
    await bw.fake.wait_for_response(refused)
    assert "Only the person who asked" in str(refused.response.data if refused.response else "")

    thread = await bw.confirm(plan)
    job_id = bw.latest_job_id()
    job = bw.world.job(job_id)
    assert job.name == "phoenix" and job.spec_json["epochs"] == 2 and job.spec_json["repeats"] == 3
    await bw.wait_for_status(job_id, lambda s: s.is_terminal())
    assert bw.world.status(job_id) is JobStatus.SUCCEEDED, bw.world.describe()
    await bw.wait_for_thread_message(thread, lambda m: "done" in m.text())
    assert bw.world.running_pods() == []
