"""Job store fixtures: a fresh database at the newest schema per test, its engine, a session factory and a session.

    def test_x(db_session): job = create_job(db_session, ...)       # one session, caller commits
    def test_y(db_sessions): with session_scope(db_sessions) as s: ...  # several transactions / sessions

SQLite by default: a file copied from one migration per session, so each test pays milliseconds, not an alembic run.
A test (or module) marked ``both_dbs`` runs twice, on SQLite and on PostgreSQL: each PostgreSQL run gets its own
database cloned from a migrated template (``CREATE DATABASE … TEMPLATE``), dropped afterwards.

Which PostgreSQL: ``LORABOT_TEST_POSTGRES_URL`` (any database on a server whose user may create databases; .ci/run
exports it), else a throw-away server this session starts itself when ``initdb``/``pg_ctl`` are installed (Debian's
``postgresql`` package), else the PostgreSQL runs are skipped, and the end of the run says so in capitals. Under
``CI=true`` a missing server fails those tests instead. ``LORABOT_TEST_DB=sqlite`` or ``=postgresql`` runs the
``both_dbs`` tests on that one store only.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from storage.db import POSTGRES_DRIVER, make_engine, make_session_factory, migrate

# A fixed, readable "now" for store tests (times are always aware UTC).
T0 = dt.datetime(2026, 11, 24, 12, 0, 0, tzinfo=dt.UTC)

POSTGRES_URL_ENV = "LORABOT_TEST_POSTGRES_URL"
DB_CHOICE_ENV = "LORABOT_TEST_DB"
BACKENDS = ("sqlite", "postgresql")
TEMPLATE_DB = "lorabot_template"

# Why PostgreSQL was skipped, for the summary at the end of the run (empty when it ran or was not asked for).
_postgres_skips: list[str] = []


def chosen_backends() -> tuple[str, ...]:
    choice = os.environ.get(DB_CHOICE_ENV, "both").strip().lower()
    if choice in ("", "both"):
        return BACKENDS
    if choice not in BACKENDS:
        raise pytest.UsageError(f"{DB_CHOICE_ENV} is both, sqlite or postgresql, not {choice!r}")
    return (choice,)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Only tests that reach the store (directly or through a world) and ask for both stores are run twice.
    if "db_backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_dbs"):
        metafunc.parametrize("db_backend", chosen_backends(), indirect=True)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "[postgresql" in report.nodeid and isinstance(report.longrepr, tuple):
        _postgres_skips.append(str(report.longrepr[2]))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _postgres_skips:
        return
    terminalreporter.write_sep("!", "POSTGRESQL WAS SKIPPED", red=True, bold=True)
    terminalreporter.write_line(
        f"{len(_postgres_skips)} PostgreSQL runs of the store, orchestrator, fault and money tests did not run: "
        f"{_postgres_skips[0]}"
    )
    terminalreporter.write_line(
        f"Install Debian's postgresql package (initdb/pg_ctl) or set {POSTGRES_URL_ENV}; CI=true fails instead."
    )


@pytest.fixture
def db_backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` unless the test is marked ``both_dbs`` (then each store in turn)."""
    return str(getattr(request, "param", "sqlite"))


# -- SQLite ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def migrated_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db-template") / "lorabot.db"
    migrate(f"sqlite:///{path}")
    return path


# -- PostgreSQL ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresServer:
    """A server the tests may create databases on; ``admin_url`` is a database to connect to for that."""

    admin_url: URL

    def url_for(self, database: str) -> str:
        return self.admin_url.set(database=database).render_as_string(hide_password=False)

    def admin_engine(self) -> Engine:
        # CREATE/DROP DATABASE cannot run inside a transaction.
        return create_engine(self.admin_url, isolation_level="AUTOCOMMIT")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not available: {reason}")


def _find_pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    # Debian keeps the server's programs off PATH, one folder per major version; the newest wins.
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The configured server, else one started here in a temp folder (a Unix socket only, no TCP port opened)."""
    configured = os.environ.get(POSTGRES_URL_ENV, "").strip()
    if configured:
        url = make_url(configured)
        if url.drivername in ("postgres", "postgresql"):
            url = url.set(drivername=POSTGRES_DRIVER)
        yield PostgresServer(url)
        return
    bin_dir = _find_pg_bin()
    if bin_dir is None:
        _unavailable(f"{POSTGRES_URL_ENV} is not set and initdb/pg_ctl are not installed")
        return
    # PostgreSQL refuses to run as root: as root the server runs as the package's `postgres` user.
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no `postgres` user to run the server as")
            return
        run_as = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="lorabot-pg-"))
    data, sockets, log = root / "data", root / "sock", root / "server.log"
    sockets.mkdir()
    if run_as:
        os.chmod(root, 0o755)
        for path in (root, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    try:
        subprocess.run(
            [*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync",
             "-E", "UTF8", "--locale=C"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        # Durability is not what these tests check: without fsync a CREATE DATABASE per test stays cheap.
        options = f"-k {sockets} -c listen_addresses='' -p {port} -c fsync=off -c synchronous_commit=off"
        subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        server_log = log.read_text(errors="replace")[-1000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"could not start a server with {bin_dir}: {exc} {detail.decode(errors='replace')} {server_log}")
        return
    try:
        yield PostgresServer(
            URL.create(POSTGRES_DRIVER, username="postgres", database="postgres", query={"host": str(sockets)}).set(
                port=port
            )
        )
    finally:
        subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            check=False, capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> PostgresServer:
    """A database migrated once per session, the template every test's database is cloned from."""
    engine = postgres_server.admin_engine()
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{TEMPLATE_DB}"'))
    finally:
        engine.dispose()
    migrate(postgres_server.url_for(TEMPLATE_DB))
    return postgres_server


def new_postgres_database(server: PostgresServer, *, template: str = TEMPLATE_DB) -> str:
    """A fresh database cloned from ``template`` (``template0``: empty); returns its name."""
    name = f"lorabot_test_{uuid.uuid4().hex[:12]}"
    engine = server.admin_engine()
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    finally:
        engine.dispose()
    return name


def drop_postgres_database(server: PostgresServer, name: str) -> None:
    engine = server.admin_engine()
    try:
        with engine.connect() as connection:
            # FORCE: a test that failed midway (or a killed orchestrator process) may still hold connections.
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.fixture
def empty_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A database with no tables at all, for the migration tests."""
    name = new_postgres_database(postgres_server, template="template0")
    yield postgres_server.url_for(name)
    drop_postgres_database(postgres_server, name)


# -- the store a test gets -------------------------------------------------------------------------------------------


@pytest.fixture
def db_url(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh database already at the newest schema, on the test's store."""
    if db_backend == "sqlite":
        template: Path = request.getfixturevalue("migrated_db_template")
        path = tmp_path / "lorabot.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    # Looked up only here, so a run on SQLite alone never starts (or waits for) a PostgreSQL server.
    server: PostgresServer = request.getfixturevalue("postgres_template")
    name = new_postgres_database(server)
    yield server.url_for(name)
    drop_postgres_database(server, name)


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
