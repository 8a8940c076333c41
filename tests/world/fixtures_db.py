"""Job store fixtures: a migrated SQLite file per test (copied from one migration per session, so each test
pays milliseconds, not an alembic run), its engine, a session factory and a session.

    def test_x(db_session): job = create_job(db_session, ...)       # one session, caller commits
    def test_y(db_sessions): with session_scope(db_sessions) as s: ...  # several transactions / sessions
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from storage.db import make_engine, make_session_factory, migrate

# A fixed, readable "now" for store tests (times are always aware UTC).
T0 = dt.datetime(2026, 11, 24, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def migrated_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db-template") / "lorabot.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def db_url(migrated_db_template: Path, tmp_path: Path) -> str:
    """URL of a fresh SQLite file already at the newest schema."""
    path = tmp_path / "lorabot.db"
    shutil.copyfile(migrated_db_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_sessions(db_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(db_engine)


@pytest.fixture
def db_session(db_sessions: sessionmaker[Session]) -> Iterator[Session]:
    session = db_sessions()
    yield session
    session.rollback()
    session.close()


def new_job(session: Session, *, user_id: int = 111, now: dt.datetime = T0, **overrides: object) -> int:
    """A QUEUED job with plausible defaults (seed 000's run); returns its id. Flushed, not committed."""
    from storage.transitions import create_job

    values: dict[str, object] = {
        "name": "kanachan",
        "output_name": "kanachan",
        "dataset_sha256": "ab" * 32,
        "dataset_size": 12_345_678,
        "base_model": "illustriousXL_v01",
        "guild_id": 1,
        "channel_id": 2,
        "estimate_micros": 750_000,
    }
    values.update(overrides)
    job = create_job(session, user_id=user_id, now=now, **values)  # type: ignore[arg-type]
    return job.id
