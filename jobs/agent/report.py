"""The agent's voice: a redacted log file on the volume and status.json + history PUT to the bucket."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .clock import Clock
from .fsutil import atomic_write
from .manifest import Layout, Manifest
from .net import Http, HttpFailure, Stopped
from .redact import Redactor

LOG_TAIL_BYTES = 256 * 1024
TERMINAL_PHASES = {"succeeded", "failed", "interrupted"}


class AgentLog:
    """Timestamped, redacted lines to a log file (uploaded later) and to stderr (the pod's own log)."""

    def __init__(self, path: Path | None, clock: Clock, redact: Redactor) -> None:
        self.path = path
        self.clock = clock
        self.redact = redact
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, message: str) -> None:
        line = f"{self.clock.iso()} [agent] {self.redact(message)}\n"
        sys.stderr.write(line)
        sys.stderr.flush()
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)


def log_tail(path: Path, redact: Redactor, limit: int = LOG_TAIL_BYTES) -> bytes:
    if not path.is_file():
        return b""
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - limit))
        data = handle.read()
    return redact(data.decode("utf-8", errors="replace")).encode("utf-8")


class Reporter:
    """Holds one stage's status; every publish appends it to the history and PUTs both (best effort).

    A copy lives on the volume, so an agent started again for the same job continues the same history and seq.
    """

    def __init__(
        self,
        stage: str,
        manifest: Manifest,
        layout: Layout,
        clock: Clock,
        http: Http,
        redact: Redactor,
        log: AgentLog,
        pod_id: str,
    ) -> None:
        self.stage = stage
        self.manifest = manifest
        self.clock = clock
        self.http = http
        self.redact = redact
        self.log = log
        self.local_status = layout.status_dir / f"{stage}.json"
        self.local_history = layout.status_dir / f"{stage}.history.jsonl"
        self.last_publish = float("-inf")
        seq = 0
        if self.local_history.is_file():
            for line in self.local_history.read_text(encoding="utf-8").splitlines():
                try:
                    seq = max(seq, int(json.loads(line).get("seq", 0)))
                except (ValueError, AttributeError):
                    continue
        self.status: dict[str, Any] = {
            "job_id": manifest.job_id,
            "stage": stage,
            "pod_id": pod_id,
            "seq": seq,
            "updated_at": None,
            "phase": "starting",
            "steps": [],
            "eta_seconds": None,
            "progress": None,
            "epochs": [],
            "final": None,
            "last_completed_epoch": None,
            "resumed_from": None,
            "error": None,
            "timings": {"started_at": clock.iso()},
        }

    # --- building the status -------------------------------------------------------------------------------
    def phase(self, phase: str, publish: bool = True) -> None:
        self.status["phase"] = phase
        if phase in ("ready", "succeeded"):
            self.status["error"] = None  # a crash note of an earlier boot (kind agent_restarted) is over
        self.log(f"phase: {phase}")
        if publish:
            self.publish()

    def step(self, name: str, **fields: Any) -> dict[str, Any]:
        for step in self.status["steps"]:
            if step["name"] == name:
                step.update(fields)
                return step
        step = {"name": name, "state": "pending", "cached": False, "seconds": None, "bytes_done": 0, "bytes_total": 0}
        step.update(fields)
        self.status["steps"].append(step)
        return step

    def timing(self, name: str) -> None:
        self.status["timings"][name] = self.clock.iso()

    def fail(self, kind: str, message: str) -> None:
        self.status["error"] = {"kind": kind, "message": self.redact(message)}
        self.timing("finished_at")
        self.log(f"failed ({kind}): {message}")
        self.phase("failed")

    # --- sending it --------------------------------------------------------------------------------------
    def due(self) -> bool:
        return self.clock.now() - self.last_publish >= self.manifest.status_interval_s

    def publish(self, quick: bool = False) -> None:
        """Write the status locally, then PUT status + history. Upload trouble is logged, never raised."""
        self.status["seq"] += 1
        self.status["updated_at"] = self.clock.iso()
        self.last_publish = self.clock.now()
        body = json.dumps(self.status, sort_keys=True)
        atomic_write(self.local_status, body.encode())
        with open(self.local_history, "a", encoding="utf-8") as handle:
            handle.write(body + "\n")
        attempts, timeout = (2, 2.0) if quick else (None, 30.0)
        for kind, payload in (("status", body.encode()), ("history", self.local_history.read_bytes())):
            url = self.manifest.upload_url(kind, self.stage)
            if url is None:
                continue
            try:
                self.http.put_bytes(url, payload, attempts=attempts, timeout=timeout)
            except (HttpFailure, Stopped) as exc:
                self.log(f"could not upload {kind} (will retry with the next status): {exc}")

    def upload_log(self, path: Path, quick: bool = False) -> None:
        url = self.manifest.upload_url("log", self.stage)
        if url is None:
            return
        try:
            self.http.put_bytes(
                url, log_tail(path, self.redact), attempts=2 if quick else None, timeout=2.0 if quick else 30.0
            )
        except (HttpFailure, Stopped) as exc:
            self.log(f"could not upload the log tail: {exc}")
