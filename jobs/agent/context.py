"""What both stages share: the manifest and its paths, the clock, HTTP, redaction, the stop flag."""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .clock import Clock
from .lifecycle import StopFlag
from .manifest import Layout, Manifest
from .net import Http
from .redact import Redactor
from .report import AgentLog

# The pod does not need these after the agent has them; children never see them.
AGENT_ONLY_ENV = ("LORABOT_AGENT_URL", "LORABOT_MANIFEST_URL")


@dataclass
class Context:
    manifest: Manifest
    layout: Layout
    clock: Clock
    http: Http
    redact: Redactor
    stop: StopFlag
    env: dict[str, str]
    pod_id: str

    def child_env(self) -> dict[str, str]:
        return {k: v for k, v in self.env.items() if k not in AGENT_ONLY_ENV}

    def stage_log(self, stage: str) -> AgentLog:
        return AgentLog(self.layout.logs_dir / f"{stage}.log", self.clock, self.redact)


class StageFailed(Exception):
    """Ends a stage with status failed and this error kind (docs/CONTRACTS.md error kinds)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class Interrupted(Exception):
    """A SIGTERM arrived; the stage reports `interrupted` and exits."""


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Two pods on one volume (a CPU pod of job A, a warm GPU pod of job B) must not build the same thing twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def run_logged(
    argv: list[str],
    log_path: Path,
    stop: StopFlag,
    env: dict[str, str],
    cwd: Path | None = None,
    poll_s: float = 0.05,
    on_poll: Callable[[], None] | None = None,
) -> int:
    """Run a command with its output appended to the log; a stop request terminates it.

    `on_poll` runs while the command runs (every `poll_s`), so a long step can keep its status fresh; an exception
    it raises terminates the command and propagates."""
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            log.write(f"cannot start {argv[0]}: {exc}\n".encode())
            return 127
        try:
            while proc.poll() is None:
                if on_poll is not None:
                    on_poll()  # may raise to give the command up (serve: a generation over its time limit)
                if stop.sleep(poll_s):
                    raise Interrupted()
        finally:
            # Whatever ends the wait (a stop, or on_poll giving up) ends the command too: no orphan keeps running.
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        return proc.returncode
