"""The outbox: notices wait in order per job, back off after a failed send, and are marked sent at most once."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from jobs.states import NoticeKind
from storage.queries import pending_notices
from storage.transitions import add_notice, mark_notice_failed, mark_notice_sent
from tests.world.fixtures_db import T0, new_job

# The store's behaviour is promised on SQLite and PostgreSQL alike.
pytestmark = pytest.mark.both_dbs

MINUTE = dt.timedelta(minutes=1)


def _queue(session: Session, job_id: int | None, key: str) -> None:
    add_notice(session, job_id=job_id, kind=NoticeKind.INFO, key=key, payload={"text": key}, now=T0)


def test_pending_notices_come_oldest_first_and_sent_ones_never_again(db_session: Session) -> None:
    job_id = new_job(db_session)
    for key in ["a", "b", "c"]:
        _queue(db_session, job_id, key)
    pending = pending_notices(db_session, now=T0)
    assert [notice.idempotency_key for notice in pending] == ["a"]  # b and c wait behind a (same thread)
    assert mark_notice_sent(db_session, pending[0].id, discord_message_id=555, now=T0 + MINUTE) is True
    assert mark_notice_sent(db_session, pending[0].id, discord_message_id=666, now=T0 + 2 * MINUTE) is False
    db_session.refresh(pending[0])
    assert (pending[0].discord_message_id, pending[0].sent_at) == (555, T0 + MINUTE)
    assert [notice.idempotency_key for notice in pending_notices(db_session, now=T0)] == ["b"]


def test_notices_of_different_jobs_do_not_wait_for_each_other(db_session: Session) -> None:
    first, second = new_job(db_session), new_job(db_session)
    _queue(db_session, first, "first:1")
    _queue(db_session, first, "first:2")
    _queue(db_session, second, "second:1")
    _queue(db_session, None, "reaper:1")
    keys = [notice.idempotency_key for notice in pending_notices(db_session, now=T0)]
    assert keys == ["first:1", "second:1", "reaper:1"]


def test_a_failed_send_backs_off_and_holds_the_rest_of_its_thread(db_session: Session) -> None:
    job_id = new_job(db_session)
    _queue(db_session, job_id, "epoch:1")
    _queue(db_session, job_id, "epoch:2")
    (first,) = pending_notices(db_session, now=T0)
    mark_notice_failed(db_session, first.id, error="Discord 503 " + "x" * 5000, retry_at=T0 + 5 * MINUTE)
    assert pending_notices(db_session, now=T0 + MINUTE) == []
    again = pending_notices(db_session, now=T0 + 5 * MINUTE)
    assert [notice.idempotency_key for notice in again] == ["epoch:1"]
    db_session.refresh(first)
    assert first.attempts == 1
    assert first.last_error is not None and first.last_error.startswith("Discord 503") and len(first.last_error) <= 1000


def test_pending_notices_respects_the_limit(db_session: Session) -> None:
    for index in range(5):
        _queue(db_session, None, f"n{index}")
    assert [notice.idempotency_key for notice in pending_notices(db_session, now=T0, limit=2)] == ["n0", "n1"]
