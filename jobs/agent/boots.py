"""Boots of the agent on one pod: RunPod starts a container again whenever its process ends.

A finished agent that exits is started again by the platform, and one that crashes runs again and again until the
pod is terminated. So every start is counted on the volume (per job, stage and pod) and reported as `boots`, which
lets the bot tell a restarted agent from a first run; and a start that finds this pod's stage already finished does
no work again but waits, quietly, to be terminated.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .fsutil import atomic_write
from .lifecycle import StopFlag
from .manifest import Layout

# Phases after which a stage on this pod has nothing left to do (prepare ends `ready`, train `succeeded`; serve
# only ends by failing: a pod that cannot serve idles, one that serves goes on until terminated).
FINISHED_PHASES = {"prepare": ("ready", "failed"), "train": ("succeeded", "failed"), "serve": ("failed",)}
# Real seconds between two looks at the stop flag while idling.
IDLE_SLICE_S = 1.0
# How much of the previous boot's log a crash note quotes: its last line (a step's own words, like the OOM killer's,
# or the agent's last message), without the agent's timestamp.
CRASH_NOTE_LINE_CHARS = 200
CRASH_NOTE_CHARS = 400
_AGENT_PREFIX = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[agent\] ")


def boots_file(layout: Layout, stage: str, pod_id: str) -> Path:
    return layout.job_dir / "boots" / f"{stage}-{pod_id}"


def count_boot(layout: Layout, stage: str, pod_id: str) -> int:
    """Add this start to the pod's count on the volume and return it (1 on the first start)."""
    # One writer: a pod's starts follow each other (the platform restarts a container only once it has ended),
    # and the file is this pod's alone. The rename makes the count survive a crash mid-write.
    path = boots_file(layout, stage, pod_id)
    try:
        previous = int(path.read_text(encoding="utf-8").strip() or 0)
    except (OSError, ValueError):
        previous = 0
    boots = previous + 1
    atomic_write(path, str(boots).encode())
    return boots


def last_status(layout: Layout, stage: str, pod_id: str) -> dict[str, Any] | None:
    """The stage's last status on the volume, if this pod wrote it (another pod's run is not this pod's work)."""
    try:
        status = json.loads((layout.status_dir / f"{stage}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(status, dict) or status.get("pod_id") != pod_id:
        return None
    return status


def finished_here(layout: Layout, stage: str, pod_id: str) -> dict[str, Any] | None:
    """This pod's finished status of the stage (ready/succeeded or failed), or None when there is work to do."""
    status = last_status(layout, stage, pod_id)
    if status is None or status.get("phase") not in FINISHED_PHASES[stage]:
        return None
    return status


def crash_note(layout: Layout, stages: list[str], pod_id: str, boots: int) -> dict[str, str] | None:
    """On a restart after this pod's agent died mid-stage: what it was doing and the last lines of its log.

    Reported as the status's `error` (kind `agent_restarted`, the phase stays what it is) so the bot can tell the
    user why the pod was given up, and cleared when the stage ends well.
    """
    if boots < 2:
        return None
    for stage in reversed(stages):
        status = last_status(layout, stage, pod_id)
        if status is None or status.get("phase") in (*FINISHED_PHASES[stage], "interrupted"):
            continue  # nothing, or a clean end (a SIGTERM's `interrupted` is one too)
        running = [step["name"] for step in status.get("steps") or [] if step.get("state") == "running"]
        doing = str(status.get("phase")) + (f" (step {running[0]})" if running else "")
        last = _last_log_line(layout.logs_dir / f"{stage}.log")
        message = f"the agent restarted (boot {boots} on this pod) during {doing}"
        if last:
            message += f"; its log ended: {last}"
        return {"kind": "agent_restarted", "message": message[:CRASH_NOTE_CHARS]}
    return None


def _last_log_line(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 8192))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    return _AGENT_PREFIX.sub("", lines[-1])[:CRASH_NOTE_LINE_CHARS]


def idle(stop: StopFlag) -> None:
    """Wait for the terminate's SIGTERM: exiting now would only make the platform start the container again."""
    while not stop.sleep(IDLE_SLICE_S):
        pass
