"""Several writers at once on the SQLite file (the tick, the notifier, a /cancel): the busy timeout makes them
wait instead of failing, and the compare-and-set lets exactly one of them win a race for the same job."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from jobs.states import JobStatus, NoticeKind
from storage.db import session_scope
from storage.models import Job, Notice
from storage.transitions import InvalidTransition, add_notice, transition
from tests.world.fixtures_db import T0, new_job

# The store's behaviour is promised on SQLite and PostgreSQL alike.
pytestmark = pytest.mark.both_dbs

WRITERS = 6


def test_racing_writers_move_a_job_exactly_once(db_sessions: sessionmaker[Session]) -> None:
    with session_scope(db_sessions) as session:
        job_id = new_job(session)
    start = threading.Barrier(WRITERS)

    def race(target: JobStatus) -> str:
        start.wait()
        try:
            with session_scope(db_sessions) as session:
                transition(session, job_id, target, now=T0, expected=JobStatus.QUEUED, reason="race")
            return "won"
        except InvalidTransition:
            return "lost"

    targets = [JobStatus.PREPARING, JobStatus.CANCELLED, JobStatus.FAILED_BUDGET] * (WRITERS // 3)
    with ThreadPoolExecutor(WRITERS) as pool:
        outcomes = list(pool.map(race, targets))

    assert sorted(outcomes) == ["lost"] * (WRITERS - 1) + ["won"]
    with session_scope(db_sessions) as session:
        job = session.get_one(Job, job_id)
        assert job.state_version == 1
        assert session.execute(select(func.count(Notice.id))).scalar_one() == 1


def test_concurrent_outbox_writers_all_commit(db_sessions: sessionmaker[Session]) -> None:
    with session_scope(db_sessions) as session:
        job_id = new_job(session)

    def write(writer: int) -> None:
        for index in range(20):
            with session_scope(db_sessions) as session:
                add_notice(session, job_id=job_id, kind=NoticeKind.INFO, key=f"w{writer}:{index}", payload={}, now=T0)

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(write, range(WRITERS)))
    with session_scope(db_sessions) as session:
        assert session.execute(select(func.count(Notice.id))).scalar_one() == WRITERS * 20
