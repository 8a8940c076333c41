"""Engine, sessions and migrations of the job store.

SQLite in the data folder by default (WAL, foreign keys on, a busy timeout so the bot's tick and the notifier can
write at the same time); ``DATABASE_URL`` may point at PostgreSQL instead, through psycopg 3
(``pip install 'lorabot[postgres]'``). ``migrate(url)`` runs at start-up.

Every function in ``storage.transitions`` / ``storage.queries`` works inside the caller's session and never
commits: the caller decides where a transaction ends (``session_scope`` commits or rolls back as a whole), which is
what lets a transition and its outbox notice commit together.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from storage.models import Base

__all__ = [
    "Base",
    "DatabaseUrlError",
    "database_url",
    "make_engine",
    "make_session_factory",
    "migrate",
    "session_scope",
]

DEFAULT_DB_FILENAME = "lorabot.db"
# How long a SQLite writer waits for another writer's lock before failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 10_000
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# SQLAlchemy's dialect+driver name for psycopg 3.
POSTGRES_DRIVER = "postgresql+psycopg"


class DatabaseUrlError(ValueError):
    """``DATABASE_URL`` is not a URL SQLAlchemy understands (the message never repeats a password)."""


def database_url(data_dir: Path, environ: Mapping[str, str] | None = None) -> str:
    """``DATABASE_URL`` when set, else a SQLite file in ``data_dir`` (created if missing)."""
    env = os.environ if environ is None else environ
    configured = env.get("DATABASE_URL", "").strip()
    if configured:
        return _parse_url(configured).render_as_string(hide_password=False)
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(data_dir / DEFAULT_DB_FILENAME).resolve()}"


def _parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        scheme = url.split("://", 1)[0] if "://" in url else "(no scheme)"
        raise DatabaseUrlError(
            f"DATABASE_URL is not a database URL (scheme {scheme!r}); expected e.g. "
            "sqlite:////data/lorabot.db or postgresql://user:password@host/lorabot"
        ) from None
    # "postgresql://" means psycopg2 to SQLAlchemy and Heroku-style "postgres://" means nothing to it; lorabot ships
    # psycopg 3 (the `postgres` extra), so a URL that names no driver gets that one.
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername=POSTGRES_DRIVER)
    return parsed


def make_engine(url: str, **engine_options: Any) -> Engine:
    """A sync engine; for SQLite every connection gets WAL, foreign keys and the busy timeout."""
    parsed = _parse_url(url)
    if parsed.get_backend_name() == "postgresql":
        _require_psycopg(parsed)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, **engine_options)
    engine = create_engine(
        parsed,
        # The driver's own lock wait, in seconds; the PRAGMA below covers connections it did not open.
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        **engine_options,
    )
    event.listen(engine, "connect", _configure_sqlite_connection)
    return engine


def _require_psycopg(url: URL) -> None:
    """Say how to install the driver instead of SQLAlchemy's bare ModuleNotFoundError."""
    if url.get_driver_name() != "psycopg":
        return  # an operator who named another driver (postgresql+pg8000://) installed it themselves
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise DatabaseUrlError(
            "DATABASE_URL points at PostgreSQL but its driver, psycopg 3, is not installed: "
            "pip install 'lorabot[postgres]'"
        ) from None


def _configure_sqlite_connection(dbapi_connection: Any, _connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL: readers (the bot answering /status) never block the writer (the tick), and vice versa.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # NORMAL is durable across application crashes in WAL mode; only a power cut may lose the last commit.
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # Objects stay readable after commit: the orchestrator commits a transition, then acts on the row it holds.
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back (nothing written) when it raises."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Config:
    """Alembic's configuration built in code: there is no alembic.ini to ship or to get out of sync."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' is ConfigParser's interpolation character; a URL-encoded password may contain it.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Upgrade the database at ``url`` to the newest schema; a no-op when it is already there."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config(url)
            # env.py runs on this connection, so the SQLite pragmas above apply to the migration too.
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()
