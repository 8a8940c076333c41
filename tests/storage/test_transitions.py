"""Guarded job transitions: every illegal move raises and writes nothing; every legal move commits together with
exactly one outbox notice, and a notice exists only if its transition committed."""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from jobs.states import ALLOWED_TRANSITIONS, JobStatus, NoticeKind
from storage.db import make_engine, make_session_factory, session_scope
from storage.models import Job, Notice
from storage.transitions import (
    InvalidTransition,
    NoticeDraft,
    add_notice,
    set_cancelled,
    set_cancelling,
    set_failed,
    set_requeued,
    set_succeeded,
    transition,
)
from tests.world.fixtures_db import T0, new_job

# The store's behaviour is promised on SQLite and PostgreSQL alike.
pytestmark = pytest.mark.both_dbs

S = JobStatus
LATER = T0 + dt.timedelta(minutes=5)
ALL_PAIRS = list(itertools.product(JobStatus, JobStatus))
ILLEGAL = [(source, target) for source, target in ALL_PAIRS if target not in ALLOWED_TRANSITIONS[source]]
LEGAL = [(source, target) for source, target in ALL_PAIRS if target in ALLOWED_TRANSITIONS[source]]


def _job_in(session: Session, status: JobStatus) -> int:
    """Test set-up: a committed job already sitting in ``status`` (written directly, as a past transition would)."""
    job_id = new_job(session)
    finished_at = T0 if status.is_terminal() else None
    reason = "an earlier failure" if status.is_failed() else None
    session.execute(
        update(Job).where(Job.id == job_id).values(status=status, finished_at=finished_at, failure_reason=reason)
    )
    session.commit()
    return job_id


def _row(session: Session, job_id: int) -> tuple[object, ...]:
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    return (job.status, job.state_version, job.updated_at, job.finished_at, job.failure_reason, job.started_at)


def _notice_count(session: Session, job_id: int | None = None) -> int:
    statement = select(func.count(Notice.id))
    if job_id is not None:
        statement = statement.where(Notice.job_id == job_id)
    return int(session.execute(statement).scalar_one())


@pytest.fixture(scope="module")
def pair_sessions(
    migrated_db_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sessionmaker[Session]]:
    """One store for the 196 pair cases (each uses its own job): a fresh engine per case would cost more than
    the case itself, mostly in statement compilation."""
    path = tmp_path_factory.mktemp("pairs") / "lorabot.db"
    shutil.copyfile(migrated_db_template, path)
    engine = make_engine(f"sqlite:///{path}")
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def pair_session(pair_sessions: sessionmaker[Session]) -> Iterator[Session]:
    session = pair_sessions()
    yield session
    session.rollback()
    session.close()


def test_the_pair_tables_cover_every_combination() -> None:
    assert len(LEGAL) + len(ILLEGAL) == len(JobStatus) ** 2 == 196
    assert len(LEGAL) == sum(len(targets) for targets in ALLOWED_TRANSITIONS.values())


@pytest.mark.parametrize(("source", "target"), ILLEGAL, ids=[f"{s.name}->{t.name}" for s, t in ILLEGAL])
def test_an_illegal_transition_raises_and_leaves_the_row_unchanged(
    pair_session: Session, source: JobStatus, target: JobStatus
) -> None:
    job_id = _job_in(pair_session, source)
    before = _row(pair_session, job_id)
    with pytest.raises(InvalidTransition, match=f"j{job_id} cannot go {source.name} → {target.name}"):
        transition(pair_session, job_id, target, now=LATER, reason="tried anyway")
    pair_session.commit()
    assert _row(pair_session, job_id) == before
    assert _notice_count(pair_session, job_id) == 0


@pytest.mark.parametrize(("source", "target"), LEGAL, ids=[f"{s.name}->{t.name}" for s, t in LEGAL])
def test_a_legal_transition_commits_with_its_notice(
    pair_session: Session, pair_sessions: sessionmaker[Session], source: JobStatus, target: JobStatus
) -> None:
    job_id = _job_in(pair_session, source)
    transition(pair_session, job_id, target, now=LATER, reason="because")
    pair_session.commit()

    with pair_sessions() as db_session:  # a second session sees what was committed
        job = db_session.get(Job, job_id)
        assert job is not None
        assert (job.status, job.state_version, job.updated_at) == (target, 1, LATER)
        assert job.finished_at == (LATER if target.is_terminal() else None)
        assert job.failure_reason == ("because" if target.is_failed() else None)
        notices = db_session.execute(select(Notice).where(Notice.job_id == job_id)).scalars().all()
        assert len(notices) == 1
        assert notices[0].payload_json["status"] == target.value
        assert notices[0].idempotency_key.startswith(f"j{job_id}:1:")


def test_calling_a_transition_twice_queues_its_notice_once(db_sessions: sessionmaker[Session]) -> None:
    with session_scope(db_sessions) as session:
        job_id = _job_in(session, S.COLLECTING)
    with session_scope(db_sessions) as session:
        set_succeeded(session, job_id, now=LATER)
    with (
        pytest.raises(InvalidTransition, match="cannot go SUCCEEDED → SUCCEEDED"),
        session_scope(db_sessions) as session,
    ):
        set_succeeded(session, job_id, now=LATER + dt.timedelta(seconds=1))
    with session_scope(db_sessions) as session:
        notices = session.execute(select(Notice).where(Notice.job_id == job_id)).scalars().all()
        assert [(notice.kind, notice.idempotency_key) for notice in notices] == [
            (NoticeKind.SUCCEEDED, f"j{job_id}:1:succeeded")
        ]
        job = session.get(Job, job_id)
        assert job is not None and job.finished_at == LATER


def test_a_notice_exists_only_if_its_transition_committed(db_sessions: sessionmaker[Session]) -> None:
    with session_scope(db_sessions) as session:
        job_id = _job_in(session, S.TRAINING)
    with pytest.raises(RuntimeError), session_scope(db_sessions) as session:
        transition(session, job_id, S.COLLECTING, now=LATER)
        raise RuntimeError("the tick crashed before commit")
    with session_scope(db_sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status is S.TRAINING
        assert _notice_count(session, job_id) == 0


def test_a_stale_compare_and_set_loses_to_the_first_writer(db_sessions: sessionmaker[Session]) -> None:
    """Two workers saw TRAINING; the first moves the job on, the second's move from TRAINING must fail."""
    with session_scope(db_sessions) as session:
        job_id = _job_in(session, S.TRAINING)
    with session_scope(db_sessions) as first:
        transition(first, job_id, S.COLLECTING, now=LATER, expected=S.TRAINING)
    with pytest.raises(InvalidTransition, match="COLLECTING → INTERRUPTED"), session_scope(db_sessions) as second:
        transition(second, job_id, S.INTERRUPTED, now=LATER, expected=S.TRAINING, reason="pod lost")
    with session_scope(db_sessions) as session:
        assert _notice_count(session, job_id) == 1


def test_expected_must_itself_be_a_legal_source(db_session: Session) -> None:
    job_id = _job_in(db_session, S.SUCCEEDED)
    with pytest.raises(InvalidTransition, match="SUCCEEDED → TRAINING is not a legal transition"):
        transition(db_session, job_id, S.TRAINING, now=LATER, expected=S.SUCCEEDED)


def test_a_missing_job_is_named_in_the_error(db_session: Session) -> None:
    with pytest.raises(InvalidTransition, match="job j999 does not exist"):
        transition(db_session, 999, S.PREPARING, now=LATER)


def test_a_failure_needs_a_readable_reason_and_a_failure_status(db_session: Session) -> None:
    job_id = _job_in(db_session, S.TRAINING)
    with pytest.raises(ValueError, match="FAILED_TRAINER needs a reason"):
        transition(db_session, job_id, S.FAILED_TRAINER, now=LATER, reason="  ")
    with pytest.raises(ValueError, match="needs a FAILED_\\* status"):
        set_failed(db_session, job_id, S.CANCELLED, now=LATER, reason="x")
    job = set_failed(db_session, job_id, S.FAILED_TRAINER, now=LATER, reason="CUDA out of memory at step 12")
    assert (job.status, job.failure_reason, job.finished_at) == (
        S.FAILED_TRAINER,
        "CUDA out of memory at step 12",
        LATER,
    )


def test_repeated_states_get_distinct_notices(db_session: Session) -> None:
    """TRAINING → INTERRUPTED → TRAINING → INTERRUPTED: both interruptions reach the thread."""
    job_id = _job_in(db_session, S.TRAINING)
    for minute, (target, reason) in enumerate(
        [(S.INTERRUPTED, "spot reclaimed"), (S.TRAINING, None), (S.INTERRUPTED, "host lost"), (S.TRAINING, None)]
    ):
        transition(db_session, job_id, target, now=T0 + dt.timedelta(minutes=minute), reason=reason)
    keys = [notice.idempotency_key for notice in db_session.execute(select(Notice).order_by(Notice.id)).scalars()]
    assert keys == [f"j{job_id}:1:interrupted", f"j{job_id}:2:info", f"j{job_id}:3:interrupted", f"j{job_id}:4:info"]


def test_retry_puts_a_failed_job_back_in_the_queue_with_a_clean_outcome(db_session: Session) -> None:
    job_id = _job_in(db_session, S.TRAINING)
    set_failed(db_session, job_id, S.FAILED_NO_CAPACITY, now=LATER, reason="no 4090 anywhere for 30 min")
    job = set_requeued(db_session, job_id, now=LATER + dt.timedelta(hours=1))
    assert (job.status, job.finished_at, job.failure_reason, job.started_at) == (S.QUEUED, None, None, None)
    assert job.queued_at == LATER + dt.timedelta(hours=1)
    job = transition(db_session, job_id, S.PREPARING, now=LATER + dt.timedelta(hours=2))
    assert job.started_at == LATER + dt.timedelta(hours=2)


def test_cancel_keeps_the_first_request_time(db_session: Session) -> None:
    job_id = _job_in(db_session, S.PREPARING)
    set_cancelling(db_session, job_id, now=LATER, reason="owner pressed Cancel")
    job = set_cancelled(db_session, job_id, now=LATER + dt.timedelta(seconds=30))
    assert (job.cancel_requested_at, job.finished_at) == (LATER, LATER + dt.timedelta(seconds=30))


def test_started_at_is_set_once(db_session: Session) -> None:
    job_id = _job_in(db_session, S.QUEUED)
    transition(db_session, job_id, S.PREPARING, now=LATER)
    job = transition(db_session, job_id, S.TRAINING, now=LATER + dt.timedelta(minutes=30))
    assert job.started_at == LATER


def test_fields_are_written_atomically_with_the_status(db_session: Session) -> None:
    job_id = _job_in(db_session, S.QUEUED)
    job = transition(
        db_session, job_id, S.TRAINING, now=LATER, gpu_type_id="NVIDIA GeForce RTX 4090", gpu_cloud_type="SECURE",
        cpu_needed=False, attempts=1,
    )  # fmt: skip
    assert (job.gpu_type_id, job.gpu_cloud_type, job.cpu_needed, job.attempts) == (
        "NVIDIA GeForce RTX 4090", "SECURE", False, 1
    )  # fmt: skip
    with pytest.raises(TypeError, match="cannot set \\['status'\\]"):
        transition(db_session, job_id, S.COLLECTING, now=LATER, status=S.SUCCEEDED)


def test_a_custom_notice_and_a_silent_transition(db_session: Session) -> None:
    job_id = _job_in(db_session, S.QUEUED)
    draft = NoticeDraft(kind=NoticeKind.WAITING_GPU, payload={"fallback": "secure 4090"}, key=f"j{job_id}:wait:1")
    transition(db_session, job_id, S.PREPARING, now=LATER, notice=draft)
    transition(db_session, job_id, S.TRAINING, now=LATER, notify=False)
    notices = db_session.execute(select(Notice).where(Notice.job_id == job_id)).scalars().all()
    assert [(n.kind, n.idempotency_key, n.payload_json) for n in notices] == [
        (NoticeKind.WAITING_GPU, f"j{job_id}:wait:1", {"status": "preparing", "fallback": "secure 4090"})
    ]


def test_add_notice_ignores_a_duplicate_key(db_session: Session) -> None:
    job_id = _job_in(db_session, S.TRAINING)
    first = add_notice(
        db_session, job_id=job_id, kind=NoticeKind.EPOCH, key=f"j{job_id}:epoch:3", payload={"epoch": 3}, now=T0
    )
    second = add_notice(
        db_session, job_id=job_id, kind=NoticeKind.EPOCH, key=f"j{job_id}:epoch:3", payload={"epoch": 99}, now=LATER
    )
    assert (first, second) == (True, False)
    notices = db_session.execute(select(Notice)).scalars().all()
    assert [notice.payload_json for notice in notices] == [{"epoch": 3}]


def test_a_naive_datetime_is_refused(db_session: Session) -> None:
    job_id = _job_in(db_session, S.QUEUED)
    with pytest.raises(Exception, match="naive datetime"):
        transition(db_session, job_id, S.PREPARING, now=dt.datetime(2026, 11, 24, 12, 0))
