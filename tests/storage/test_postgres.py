"""What a naive port to PostgreSQL gets wrong, checked on a real server (and, where it is about behaviour, on SQLite
too): migrations from empty and from the previous revision, time zones when the server's is not UTC, two sessions
racing one transition, the same notice inserted by two sessions at once."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from jobs.states import JobStatus, NoticeKind
from storage.db import alembic_config, make_engine, make_session_factory, migrate, session_scope
from storage.models import Base, Job, Notice
from storage.queries import pending_notices
from storage.transitions import InvalidTransition, add_notice, transition
from tests.world.fixtures_db import T0, new_job

# The newest revision and the one before it, from the migrations folder (other work adds revisions too).
_SCRIPTS = ScriptDirectory.from_config(alembic_config("sqlite://"))
HEAD = str(_SCRIPTS.get_current_head())
PREVIOUS = str(_SCRIPTS.get_revision(HEAD).down_revision)
TABLES = {
    "jobs", "pods", "volumes", "volume_cache", "cost_items", "notices", "datasets", "budgets", "runpod_bills",
    "runpod_bill_syncs", "leases", "volume_resizes", "try_requests", "test_windows",
}  # fmt: skip


def _version(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one())
    finally:
        engine.dispose()


# -- migrations on a real server ------------------------------------------------------------------------------------


def test_migrate_builds_the_models_schema_on_an_empty_postgresql_database(empty_postgres_url: str) -> None:
    migrate(empty_postgres_url)
    engine = make_engine(empty_postgres_url)
    try:
        assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            # Real time zones on PostgreSQL, not naive timestamps.
            kinds = {c["name"]: c["type"] for c in inspect(connection).get_columns("jobs")}
            assert kinds["created_at"].timezone is True
    finally:
        engine.dispose()
    assert _version(empty_postgres_url) == HEAD
    migrate(empty_postgres_url)  # a second start-up changes nothing
    assert _version(empty_postgres_url) == HEAD


def test_a_postgresql_database_at_the_previous_revision_upgrades_and_keeps_its_rows(empty_postgres_url: str) -> None:
    """The revision before the newest → head on a server with rows in it: the rows stay, the lease table is empty."""
    command.upgrade(alembic_config(empty_postgres_url), PREVIOUS)
    engine = make_engine(empty_postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO jobs (id, user_id, name, output_name, status, state_version, spec_json, plan_json,"
                    " dataset_sha256, dataset_size, base_model, gpu_spot, attempts, created_at, queued_at,"
                    " last_status_seq, last_epoch_notified, estimate_micros, updated_at) VALUES (1, 7, 'kana', 'kana',"
                    " 'succeeded', 5, '{}', '{}', :sha, 1, 'm', false, 1, :t, :t, 0, 0, 0, :t)"
                ),
                {"sha": "ab" * 32, "t": T0},
            )
            connection.execute(
                text(
                    "INSERT INTO pods (id, job_id, role, name, attempt, status, spot, created_at)"
                    " VALUES (7, 1, 'gpu', 'lorabot-j1-gpu', 1, 'terminated', false, :t)"
                ),
                {"t": T0},
            )
            connection.execute(
                text(
                    "INSERT INTO cost_items (job_id, pod_id, kind, started_at, ended_at, rate_micros_per_hour,"
                    " amount_micros, final) VALUES (1, 7, 'gpu_pod', :t, :t, 690000, 690000, true)"
                ),
                {"t": T0},
            )
    finally:
        engine.dispose()

    migrate(empty_postgres_url)

    assert _version(empty_postgres_url) == HEAD
    engine = make_engine(empty_postgres_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT name, container_disk_gb FROM pods")).all() == [
                ("lorabot-j1-gpu", None)
            ]
            assert connection.execute(text("SELECT amount_micros, disk_micros FROM cost_items")).all() == [(690_000, 0)]
            assert connection.execute(text("SELECT count(*) FROM leases")).scalar_one() == 0
    finally:
        engine.dispose()


def test_the_newest_migration_downgrades_and_upgrades_again_on_postgresql(empty_postgres_url: str) -> None:
    config = alembic_config(empty_postgres_url)
    command.upgrade(config, "head")
    command.downgrade(config, PREVIOUS)
    assert _version(empty_postgres_url) == PREVIOUS
    command.upgrade(config, "head")
    assert _version(empty_postgres_url) == HEAD


# -- time zones -----------------------------------------------------------------------------------------------------


@pytest.mark.both_dbs
def test_aware_times_round_trip_as_utc_whatever_the_server_zone(db_url: str, db_backend: str) -> None:
    """A session whose server time zone is Tokyo (PostgreSQL hands timestamptz back in it) still reads aware UTC
    times equal to what was written, and compares them right in SQL."""
    options: dict[str, Any] = {}
    if db_backend == "postgresql":
        options["connect_args"] = {"options": "-c timezone=Asia/Tokyo"}
    engine = make_engine(db_url, **options)
    sessions = make_session_factory(engine)
    berlin = dt.timezone(dt.timedelta(hours=1))
    written = dt.datetime(2026, 11, 24, 13, 30, 15, 123456, tzinfo=berlin)  # 12:30:15 UTC
    try:
        with session_scope(sessions) as s:
            job_id = new_job(s, now=written)
            add_notice(s, job_id=job_id, kind=NoticeKind.INFO, key="tz", payload={}, now=written)
            s.execute(select(Notice)).scalar_one().next_attempt_at = written
        with session_scope(sessions) as s:
            job = s.get_one(Job, job_id)
            assert job.created_at == written
            assert job.created_at.utcoffset() == dt.timedelta(0)
            assert job.created_at.isoformat() == "2026-11-24T12:30:15.123456+00:00"
            # Compared in SQL: due one microsecond after, not due one before (no zone shift in the comparison).
            assert [n.idempotency_key for n in pending_notices(s, now=written + dt.timedelta(microseconds=1))] == ["tz"]
            assert pending_notices(s, now=written - dt.timedelta(microseconds=1)) == []
            if db_backend == "postgresql":
                assert s.execute(text("SHOW timezone")).scalar_one() == "Asia/Tokyo"
    finally:
        engine.dispose()


# -- two sessions at once -------------------------------------------------------------------------------------------


def _while_first_holds(
    sessions: sessionmaker[Session], first: Callable[[Session], object], second: Callable[[Session], object]
) -> object:
    """Run ``first`` in a transaction left open, start ``second`` in another session (it must wait for the first's
    lock), commit the first, and return what the second returned or raised."""
    holder = sessions()
    first(holder)
    holder.flush()
    started = threading.Event()

    def run_second() -> object:
        started.set()
        try:
            with session_scope(sessions) as s:
                return second(s)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(run_second)
        started.wait()
        time.sleep(0.3)  # the second session is now blocked on the first one's row (or write) lock
        assert not future.done(), "the second writer should wait for the first's lock"
        holder.commit()
        holder.close()
        return future.result(timeout=20)


@pytest.mark.both_dbs
def test_a_transition_racing_an_open_one_waits_then_loses(db_sessions: sessionmaker[Session]) -> None:
    """PostgreSQL's READ COMMITTED re-checks the WHERE after the lock: the loser sees PREPARING, matches no row, and
    raises; nothing is written twice and one notice exists."""
    with session_scope(db_sessions) as s:
        job_id = new_job(s)

    outcome = _while_first_holds(
        db_sessions,
        lambda s: transition(s, job_id, JobStatus.PREPARING, now=T0, expected=JobStatus.QUEUED),
        lambda s: transition(s, job_id, JobStatus.CANCELLED, now=T0, expected=JobStatus.QUEUED),
    )

    assert isinstance(outcome, InvalidTransition), outcome
    assert "PREPARING" in str(outcome)
    with session_scope(db_sessions) as s:
        job = s.get_one(Job, job_id)
        assert (job.status, job.state_version) == (JobStatus.PREPARING, 1)
        assert [n.idempotency_key for n in s.execute(select(Notice)).scalars()] == [f"j{job_id}:1:preparing"]


@pytest.mark.both_dbs
def test_the_same_notice_inserted_by_two_sessions_at_once_is_queued_once(db_sessions: sessionmaker[Session]) -> None:
    with session_scope(db_sessions) as s:
        job_id = new_job(s)

    def insert(payload: dict[str, int]) -> Callable[[Session], bool]:
        return lambda s: add_notice(s, job_id=job_id, kind=NoticeKind.EPOCH, key="j:epoch:1", payload=payload, now=T0)

    second = _while_first_holds(db_sessions, insert({"epoch": 1}), insert({"epoch": 99}))

    assert second is False
    with session_scope(db_sessions) as s:
        assert [n.payload_json for n in s.execute(select(Notice)).scalars()] == [{"epoch": 1}]


def test_the_postgresql_url_without_a_driver_uses_psycopg_3(empty_postgres_url: str) -> None:
    """An operator writes postgresql://…; lorabot connects with psycopg 3 (the extra it ships), not psycopg2."""
    plain = empty_postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    engine = make_engine(plain)
    try:
        assert engine.dialect.driver == "psycopg"
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
