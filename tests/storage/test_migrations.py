"""The schema comes from alembic: an empty SQLite file is migrated at start-up, a second run changes nothing,
and the migration creates exactly what the models describe."""

from __future__ import annotations

import io
import sqlite3
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from storage.db import DatabaseUrlError, alembic_config, database_url, make_engine, migrate
from storage.models import Base

TABLES = {
    "jobs", "pods", "volumes", "volume_cache", "cost_items", "notices", "datasets", "budgets", "runpod_bills",
    "runpod_bill_syncs", "leases", "volume_resizes", "try_requests", "test_windows",
}  # fmt: skip


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
    return {name for (name,) in rows}


def test_migrate_creates_every_table_on_an_empty_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "lorabot.db"
    path.parent.mkdir()
    migrate(f"sqlite:///{path}")
    assert _tables(path) == TABLES | {"alembic_version"}
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("0008",)]


def test_a_database_made_by_the_first_release_upgrades_and_keeps_its_pods(tmp_path: Path) -> None:
    """0001 → 0002 adds when the create call went out; pods recorded before it keep their rows, with no such time."""
    path = tmp_path / "lorabot.db"
    url = f"sqlite:///{path}"
    config = alembic_config(url)
    command.upgrade(config, "0001")
    with sqlite3.connect(path) as connection:  # a bare connection: foreign keys off, so no job row is needed
        connection.execute(
            "INSERT INTO pods (job_id, role, name, attempt, status, spot, created_at) "
            "VALUES (1, 'gpu', 'lorabot-j1-gpu', 1, 'running', 0, '2026-11-24 12:00:00')"
        )
    migrate(url)
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("0008",)]
        rows = connection.execute("SELECT name, create_requested_at FROM pods").fetchall()
    assert rows == [("lorabot-j1-gpu", None)]


def test_a_database_at_0002_upgrades_with_no_disk_on_old_pods_and_no_disk_in_old_cost_items(tmp_path: Path) -> None:
    """0002 → 0003 adds container disk to pods and cost items: rows from before it read NULL GB (the ledger's 0) and
    0 µ$ of disk, so their amounts stay what they were; the RunPod bill tables start empty."""
    path = tmp_path / "lorabot.db"
    url = f"sqlite:///{path}"
    command.upgrade(alembic_config(url), "0002")
    with sqlite3.connect(path) as connection:
        # The job row too: 0008 rebuilds cost_items (its unique constraint), and the copy checks foreign keys.
        connection.execute(
            "INSERT INTO jobs (id, user_id, name, output_name, status, state_version, spec_json, plan_json, "
            "dataset_sha256, dataset_size, base_model, gpu_spot, attempts, created_at, queued_at, last_status_seq, "
            "last_epoch_notified, estimate_micros, updated_at) VALUES (1, 5, 'kana', 'kana', 'succeeded', 1, '{}', "
            "'{}', 'ab', 1, 'sd15', 0, 1, '2026-11-24 11:00:00', '2026-11-24 11:00:00', 0, 0, 0, "
            "'2026-11-24 13:00:00')"
        )
        connection.execute(
            "INSERT INTO pods (id, job_id, role, name, attempt, status, spot, created_at) "
            "VALUES (7, 1, 'gpu', 'lorabot-j1-gpu', 1, 'terminated', 0, '2026-11-24 12:00:00')"
        )
        connection.execute(
            "INSERT INTO cost_items (job_id, pod_id, kind, started_at, ended_at, rate_micros_per_hour, amount_micros,"
            " final) VALUES (1, 7, 'gpu_pod', '2026-11-24 12:00:00', '2026-11-24 13:00:00', 690000, 690000, 1)"
        )
    migrate(url)
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("0008",)]
        assert connection.execute("SELECT name, container_disk_gb FROM pods").fetchall() == [("lorabot-j1-gpu", None)]
        assert connection.execute("SELECT amount_micros, disk_micros FROM cost_items").fetchall() == [(690_000, 0)]
        assert connection.execute("SELECT count(*) FROM runpod_bills").fetchall() == [(0,)]


def test_0003_downgrades_to_0002_and_upgrades_again(tmp_path: Path) -> None:
    path = tmp_path / "lorabot.db"
    config = alembic_config(f"sqlite:///{path}")
    command.upgrade(config, "head")
    command.downgrade(config, "0002")
    assert _tables(path) == TABLES - {
        "runpod_bills",
        "runpod_bill_syncs",
        "leases",
        "volume_resizes",
        "try_requests",
        "test_windows",
    } | {"alembic_version"}
    command.upgrade(config, "head")
    assert _tables(path) == TABLES | {"alembic_version"}


def test_0006_gives_old_jobs_no_pick_and_no_contact_sheet_and_downgrades(tmp_path: Path) -> None:
    """0005 → 0006: a job from before has no picked epoch (its result stays the final LoRA) and no sheet messages."""
    path = tmp_path / "lorabot.db"
    config = alembic_config(f"sqlite:///{path}")
    command.upgrade(config, "0005")
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO jobs (id, user_id, name, output_name, status, state_version, spec_json, plan_json,"
            " dataset_sha256, dataset_size, base_model, gpu_spot, attempts, created_at, queued_at, last_status_seq,"
            " last_epoch_notified, estimate_micros, updated_at) VALUES (1, 5, 'kana', 'kana', 'succeeded', 3, '{}',"
            " '{}', 'ab', 1, 'sd15', 0, 1, '2026-11-24 12:00:00', '2026-11-24 12:00:00', 0, 3, 0,"
            " '2026-11-24 12:00:00')"
        )
    command.upgrade(config, "head")
    with sqlite3.connect(path) as connection:
        row = connection.execute(
            "SELECT name, picked_epoch, picked_by_user_id, picked_at, contact_sheet_message_ids FROM jobs"
        ).fetchall()
    assert row == [("kana", None, None, None, None)]
    command.downgrade(config, "0005")
    with sqlite3.connect(path) as connection:
        columns = {r[1] for r in connection.execute("PRAGMA table_info(jobs)").fetchall()}
    assert "picked_epoch" not in columns and "name" in columns


def test_migrate_twice_is_a_no_op_and_keeps_the_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lorabot.db'}"
    migrate(url)
    with sqlite3.connect(tmp_path / "lorabot.db") as connection:
        connection.execute("INSERT INTO budgets (subject, month, limit_micros) VALUES ('team', '*', 5)")
        schema_before = connection.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    migrate(url)
    with sqlite3.connect(tmp_path / "lorabot.db") as connection:
        assert connection.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema_before
        assert connection.execute("SELECT limit_micros FROM budgets").fetchall() == [(5,)]


def test_the_migration_creates_exactly_what_the_models_describe(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 10_000
    finally:
        engine.dispose()


def test_foreign_keys_are_enforced(db_engine) -> None:
    from sqlalchemy.exc import IntegrityError

    with db_engine.connect() as connection, pytest.raises(IntegrityError):
        connection.execute(
            text(
                "INSERT INTO pods (job_id, role, name, attempt, status, spot, created_at) "
                "VALUES (999, 'gpu', 'lorabot-j999-gpu', 1, 'creating', 0, '2026-11-24 12:00:00')"
            )
        )


def test_the_migration_renders_for_postgresql() -> None:
    """Offline mode writes the DDL PostgreSQL would run: the migration is portable, not SQLite-only."""
    config = alembic_config("postgresql://lorabot:secret@db.invalid/lorabot")
    out = io.StringIO()
    config.stdout = out
    with redirect_stdout(out):
        command.upgrade(config, "head", sql=True)
    ddl = out.getvalue()
    assert "CREATE TABLE jobs" in ddl
    assert "TIMESTAMP WITH TIME ZONE" in ddl
    assert "CONSTRAINT uq_notices_idempotency_key UNIQUE (idempotency_key)" in ddl


def test_database_url_defaults_to_a_sqlite_file_in_the_data_folder(tmp_path: Path) -> None:
    url = database_url(tmp_path / "data", environ={})
    assert url == f"sqlite:///{(tmp_path / 'data' / 'lorabot.db').resolve()}"
    assert (tmp_path / "data").is_dir()


def test_database_url_override_and_heroku_style_postgres_scheme(tmp_path: Path) -> None:
    url = database_url(tmp_path, environ={"DATABASE_URL": "postgres://bot:pw@db:5432/lorabot"})
    # A URL that names no driver gets psycopg 3, the one the `postgres` extra installs.
    assert url == "postgresql+psycopg://bot:pw@db:5432/lorabot"
    assert database_url(tmp_path, environ={"DATABASE_URL": "postgresql://bot:pw@db/lorabot"}).startswith(
        "postgresql+psycopg://"
    )
    assert not (tmp_path / "lorabot.db").exists()


def test_a_bad_database_url_says_what_is_expected_without_repeating_it(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUrlError) as caught:
        database_url(tmp_path, environ={"DATABASE_URL": "hunter2-not-a-url"})
    message = str(caught.value)
    assert "hunter2" not in message
    assert "postgresql://" in message


def test_inspected_indexes_serve_the_tick_queries(db_engine) -> None:
    inspector = inspect(db_engine)
    job_indexes = {tuple(index["column_names"]) for index in inspector.get_indexes("jobs")}
    assert {("status",), ("user_id", "status"), ("created_at",)} <= job_indexes
    assert ("status",) in {tuple(index["column_names"]) for index in inspector.get_indexes("pods")}
