"""Discord rate-limits and fails while a job runs, through the real bot: discord.py's own retries, then the
outbox worker's (bot/notifier.py), against the fake Discord's 429s (with retry_after) and 5xx answers. Every notice
reaches the job's thread exactly once and in order; an answer lost after Discord accepted a message is resent with
the same nonce and Discord keeps one copy."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlalchemy import update

from bot.notifier import nonce_for
from jobs.states import JobStatus, NoticeKind
from storage.db import session_scope
from storage.models import Notice
from tests.faults.harness import check_promises
from tests.world.fake_discord.knobs import Knob
from tests.world.fixtures_bot import BotWorld, MakeBotWorld, epoch_of

pytestmark = pytest.mark.timeout(180)

SENDS = "POST /channels/*/messages"


def refuse_sends(bw: BotWorld, statuses: list[int]) -> list[Knob]:
    """Discord refuses the next sends, one knob per refusal, in this order."""
    knobs = []
    for status in statuses:
        if status == 429:
            knobs.append(bw.fake.rate_limit_next(SENDS, retry_after=0.05))
        else:
            knobs.append(bw.fake.fail_next(SENDS, status=status))
    return knobs


def lose_the_answer(bw: BotWorld, notice_id: int) -> None:
    """Discord stored the message but the bot never heard back: the outbox row still says "not sent"."""
    with session_scope(bw.world.sessions) as s:
        s.execute(update(Notice).where(Notice.id == notice_id).values(sent_at=None, discord_message_id=None))
    bw.bot.notifier.wake()


# discord.py retries a 429 itself (5 tries), a 500/502 after 1 + 2n s, and gives a 503 straight back; what it gives
# up on, the outbox retries with back-off. The storms stay small enough for the suite's time.
STORMS = {
    "429 storm": [429] * 25,
    "5xx": [503, 500, 503, 502, 503, 503],
    "429 + 5xx, ack lost": [429] * 10 + [503, 500],
}


@pytest.mark.parametrize("storm", list(STORMS))
async def test_discord_failing_loses_and_doubles_no_notice(make_bot_world: MakeBotWorld, storm: str) -> None:
    started = time.monotonic()
    statuses = STORMS[storm]
    async with make_bot_world(time_scale=120.0) as bw:
        knobs = refuse_sends(bw, statuses)
        thread, job_id = await bw.job_past_its_first_epoch(name="storm", images=3, epochs=2)
        if "ack lost" in storm:
            epoch_1 = next(n for n in bw.world.notices(job_id, NoticeKind.EPOCH) if n.payload_json["epoch"] == 1)
            await bw.fake.wait_for(lambda: bw.world.notice(epoch_1.id).sent_at, what="epoch 1 written down as sent")
            lose_the_answer(bw, epoch_1.id)
        await bw.wait_for_status(job_id, lambda s: s.is_terminal())
        await bw.fake.wait_for(
            lambda: all(n.sent_at for n in bw.world.notices(job_id)), timeout=60, what="every notice delivered"
        )

        assert sum(k.fired for k in knobs) == len(statuses), "the whole storm hit the bot"
        # Contact-sheet refreshes edit one sheet message (its own nonce) instead of posting: every other notice is
        # one message of its own.
        notices = [n for n in bw.world.notices(job_id) if n.kind is not NoticeKind.CONTACT_SHEET]
        ours = [m for m in bw.fake.messages_in(thread) if m.author_id == bw.fake.bot_user.id and m.payload.get("nonce")]
        sent = [m for m in ours if str(m.payload["nonce"]).startswith("lbn")]
        nonces = [m.payload["nonce"] for m in sent]
        assert nonces == [nonce_for(n.id) for n in notices], "every notice once, in the order it was written"
        assert all(count == 1 for count in Counter(nonces).values())
        assert [n.discord_message_id for n in notices] == [m.id for m in sent]
        sheets = [m for m in ours if str(m.payload["nonce"]).startswith("lbs")]
        assert len(sheets) == 1 and "contact sheet" in sheets[0].content, "the sheet posted once, then edited"
        assert [epoch_of(m.text()) for m in sent if epoch_of(m.text())] == ["1", "2"]
        if "ack lost" in storm:
            resent = [r for r in bw.fake.requests_to(SENDS) if nonce_for(epoch_1.id) in str(r.body)]
            assert len([r for r in resent if r.status == 200]) == 2, "sent again, kept once"
        check_promises(
            bw.world,
            job_id,
            case=f"Discord {storm}",
            fault=f"{len(statuses)} sends refused ({'/'.join(map(str, sorted(set(statuses))))}), through discord.py "
            "and the outbox" + ("; epoch 1's answer lost (nonce dedupes)" if "ack lost" in storm else ""),
            state="all states (real notifier)",
            expect=JobStatus.SUCCEEDED,
            started=started,
        )
