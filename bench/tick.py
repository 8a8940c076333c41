"""How long one orchestrator tick takes with 1,000 jobs in the database.

    python -m bench.tick [--jobs 1000] [--ticks 20] [--database-url postgresql+psycopg://...]

The database holds `--jobs` jobs: 2 running (so the concurrency limit is reached), the rest split between finished
jobs and jobs waiting in the queue. The cloud is the RunPod emulator through the real SDK. Prints p50/p95/max of the
tick time and the part of it spent per waiting job. The database is a temporary SQLite file, or, with
`--database-url`, a PostgreSQL server (e.g. `.ci/postgres start`'s URL) on which the bench makes a database of its
own and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy

from jobs.agent_bundle import build_agent
from jobs.cloud import connect
from jobs.orchestrator import Orchestrator, OrchestratorConfig
from jobs.sandbox.emulator import RunpodEmulator
from jobs.sandbox.recipe import sandbox_recipe
from jobs.states import JobStatus
from storage.db import make_engine, make_session_factory, migrate, session_scope
from storage.transitions import create_job, transition

STANDIN = Path(__file__).resolve().parents[1] / "jobs" / "sandbox" / "sdscripts"


class NullStore:
    """The tick never reaches the store for jobs that wait in the queue."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the store was used: {name}")


def fill(sessions, jobs: int) -> dict[str, int]:
    now = dt.datetime.now(dt.UTC)
    counts = {"running": 2, "queued": (jobs - 2) // 2}
    counts["finished"] = jobs - counts["running"] - counts["queued"]
    with session_scope(sessions) as s:
        for index in range(jobs):
            job = create_job(
                s,
                user_id=index % 17,
                name=f"job{index}",
                output_name=f"lora{index}",
                dataset_sha256="0" * 64,
                dataset_size=1,
                base_model="illustrious-xl-v0.1",
                now=now,
                plan={},
            )
            if index < counts["running"]:
                transition(s, job.id, JobStatus.PREPARING, now=now, notify=False)
            elif index < counts["running"] + counts["finished"]:
                transition(s, job.id, JobStatus.CANCELLED, now=now, reason="bench", notify=False)
    return counts


@contextlib.contextmanager
def bench_database(server_url: str | None) -> Iterator[str]:
    """A fresh, empty database: a SQLite file in a temp folder, or a new database on the PostgreSQL server."""
    if server_url is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    admin = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"lorabot_bench_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(sqlalchemy.make_url(server_url).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


async def measure(jobs: int, ticks: int, server_url: str | None = None) -> None:
    emulator = RunpodEmulator(time_scale=1.0).start()
    try:
        with bench_database(server_url) as url:
            migrate(url)
            sessions = make_session_factory(make_engine(url))
            counts = fill(sessions, jobs)
            orchestrator = Orchestrator(
                sessions=sessions,
                cloud=connect("rest", emulator.api_key, emulator.base_url),
                store=NullStore(),  # type: ignore[arg-type]
                config=OrchestratorConfig(max_concurrent_jobs=2),
                env_recipe=sandbox_recipe(STANDIN),
                agent_bundle=build_agent(),
            )
            # The two "running" jobs have no pods and no status: skip them so the tick measures the queue.
            with session_scope(sessions) as s:
                for job_id in (1, 2):
                    transition(
                        s, job_id, JobStatus.FAILED_INTERNAL, now=dt.datetime.now(dt.UTC), reason="bench", notify=False
                    )
                    transition(s, job_id, JobStatus.QUEUED, now=dt.datetime.now(dt.UTC), notify=False)
            orchestrator.config = OrchestratorConfig(max_concurrent_jobs=0)  # the slots are taken
            durations = []
            for _ in range(ticks):
                started = time.perf_counter()
                report = await orchestrator.tick()
                durations.append(time.perf_counter() - started)
                assert not report.errors, report.errors
            durations.sort()
            p50 = statistics.median(durations)
            p95 = durations[int(len(durations) * 0.95) - 1]
            waiting = counts["queued"] + 2
            store = "SQLite" if url.startswith("sqlite") else "PostgreSQL"
            print(
                f"{store}: {jobs} jobs in the DB ({waiting} waiting in the queue, {counts['finished']} finished), "
                f"{ticks} ticks: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {durations[-1] * 1000:.0f} ms "
                f"({p50 / waiting * 1e6:.0f} µs per waiting job)"
            )
    finally:
        emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server's URL (default: a SQLite file)")
    args = parser.parse_args()
    asyncio.run(measure(args.jobs, args.ticks, args.database_url))


if __name__ == "__main__":
    main()
