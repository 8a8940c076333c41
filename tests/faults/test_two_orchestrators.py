"""Two bot processes on one database: the one holding the orchestrator lease advances the job, the other waits;
`kill -9` of the leader mid-PREPARING and the standby takes over within the lease and finishes the job, with exactly
one CPU pod and one GPU pod created and every notice queued once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from jobs.states import JobStatus, NoticeKind, PodRole
from storage.db import session_scope
from storage.lease import ORCHESTRATOR_LEASE, get_lease
from tests.faults.harness import TERMINAL_NOTICES, cpu_pod_created
from tests.world.lorabot_world import REPO, LorabotWorld
from tests.world.orchestrator_process import ProcessSpec, write_spec

pytestmark = [pytest.mark.both_dbs, pytest.mark.timeout(240)]

# Short enough for a test, long enough that a live leader renews it many times over (it ticks every 0.2 s).
LEASE_S = 3.0
TICK_S = 0.2


def _holder(sessions: sessionmaker[Session]) -> str | None:
    with session_scope(sessions) as s:
        lease = get_lease(s, ORCHESTRATOR_LEASE)
        return lease.holder if lease is not None else None


def _wait(condition: Callable[[], bool], timeout: float, what: str, world: LorabotWorld) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{world.describe()}")
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[LorabotWorld, str, str], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(world: LorabotWorld, db_url: str, holder: str) -> subprocess.Popen[bytes]:
        clock = world.emulator.clock
        spec = ProcessSpec(
            db_url=db_url,
            emulator_url=world.emulator.base_url,
            api_key=world.emulator.api_key,
            bucket=world.s3.bucket,
            config=world.orchestrator.config,
            env_recipe=world.orchestrator.env_recipe,
            holder=holder,
            lease_s=LEASE_S,
            tick_s=TICK_S,
            sim_anchor=clock.utcnow(),
            wall_anchor=time.time(),
            time_scale=clock.time_scale,
        )
        log = (tmp_path / f"{holder}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.world.orchestrator_process", str(write_spec(spec, tmp_path / holder))],
            cwd=REPO,
            env=dict(os.environ),  # the bucket's endpoint and keys are in this process's environment
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_the_standby_takes_over_after_kill_9_mid_preparing_and_nothing_is_done_twice(
    fault_world: Callable[..., LorabotWorld],
    db_url: str,
    spawn: Callable[[LorabotWorld, str, str], subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    world = fault_world()
    job_id = world.submit(images=3, epochs=2)

    leader = spawn(world, db_url, "leader")
    _wait(lambda: _holder(world.sessions) == "leader", 30, "the first process to take the lease", world)
    standby = spawn(world, db_url, "standby")
    # Mid-PREPARING: the CPU pod is created and running its agent; the GPU pod is not asked for yet.
    _wait(lambda: cpu_pod_created(world, job_id), 60, "the leader's CPU pod", world)
    assert world.status(job_id) is JobStatus.PREPARING
    assert _holder(world.sessions) == "leader", "the standby must wait while the leader renews"
    assert standby.poll() is None

    leader.send_signal(signal.SIGKILL)
    leader.wait(timeout=10)
    took = _wait(lambda: _holder(world.sessions) == "standby", 30, "the standby to take the lease", world)
    # The lease runs out at most LEASE_S after the leader's last renewal; the standby asks every tick.
    assert took <= LEASE_S + 2.0, f"the standby took {took:.1f} s to take over"

    _wait(lambda: world.status(job_id).is_terminal(), 150, "the standby to finish the job", world)
    _wait(lambda: not world.running_pods(), 30, "every pod to be terminated", world)

    job = world.job(job_id)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(tmp_path.glob("*.log")))
    assert job.status is JobStatus.SUCCEEDED, f"{job.failure_reason}\n{logs}"
    made = Counter((p.name, p.gpu_type_id is not None) for p in world.emulator.all_pods())
    assert sorted(name for name, _ in made) == [f"lorabot-j{job_id}-cpu", f"lorabot-j{job_id}-gpu"], made
    assert all(count == 1 for count in made.values()), f"a pod was created twice: {made}"
    assert [p.role for p in world.pods(job_id)] == [PodRole.CPU, PodRole.GPU]
    notices = world.notices(job_id)
    keys = [n.idempotency_key for n in notices]
    assert len(keys) == len(set(keys)), keys
    assert [n.kind for n in notices if n.kind in TERMINAL_NOTICES] == [NoticeKind.SUCCEEDED]
    assert [n.payload_json["epoch"] for n in notices if n.kind is NoticeKind.EPOCH] == [1, 2]
    assert "orchestrator lease taken by standby" in logs
