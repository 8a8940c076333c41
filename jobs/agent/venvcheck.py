"""Is the venv on the volume usable by this pod's Python? (stdlib only, like the rest of the agent)

A venv is bound to the interpreter that built it: `bin/python` is a symlink to that interpreter's path and the
packages live in `lib/pythonX.Y/`. If that path is missing on this pod, or names another Python here (RunPod's
CPU image has Python 3.10 at /usr/bin/python3, its PyTorch image 3.11), nothing in the venv imports, so the agent
checks the interpreter before it asks torch for a GPU and reports the real cause as `env_mismatch`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

VERSION_PROBE = "import sys; print('%d.%d' % sys.version_info[:2])"
PROBE_TIMEOUT_S = 60.0


def built_version(venv: Path) -> str | None:
    """major.minor of the Python that built the venv, from its pyvenv.cfg (`version` before 3.12, `version_info`
    after), or None when the file does not say."""
    try:
        text = (venv / "pyvenv.cfg").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            parts = value.strip().split(".")
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                return f"{parts[0]}.{parts[1]}"
    return None


def _points_to(python: Path) -> str:
    """` -> <the file the venv's symlinks end at>` (on a pod, e.g. /usr/bin/python3.11), or nothing."""
    target = os.path.realpath(python)
    return f" -> {target}" if target != str(python) else ""


def interpreter_problem(venv: Path, expected: str | None, env: dict[str, str]) -> str | None:
    """Why the venv's interpreter cannot run the venv's packages on this pod, or None when it can.

    `expected` is the major.minor the recipe recorded (None in recipes older than that record); the venv's own
    pyvenv.cfg is checked too, so a venv built by another Python than the recipe meant is caught either way."""
    python = venv / "bin" / "python"
    built = built_version(venv)
    built_text = f"Python {built}" if built else "an unknown Python"
    if not python.exists():  # a dangling symlink does not exist
        return (
            f"the venv's interpreter {python}{_points_to(python)} does not exist on this pod: the venv was built "
            f"by {built_text} on an image that has it, and this pod's image does not"
        )
    try:
        done = subprocess.run(
            [str(python), "-c", VERSION_PROBE],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=env,
            timeout=PROBE_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the venv's interpreter {python}{_points_to(python)} does not start on this pod: {exc}"
    lines = done.stdout.decode("utf-8", "replace").split()
    running = lines[-1] if lines else ""
    if done.returncode != 0 or not running:
        errors = done.stderr.decode("utf-8", "replace").strip().splitlines()
        cause = errors[-1] if errors else f"exit code {done.returncode}"
        return f"the venv's interpreter {python}{_points_to(python)} does not start on this pod: {cause}"
    if built and running != built:
        return (
            f"the venv's interpreter {python}{_points_to(python)} is Python {running} on this pod, but the venv was "
            f"built by Python {built} (its packages are in lib/python{built}/): the image that built it has another "
            "Python at that path than this pod's image"
        )
    if expected and running != expected:
        return (
            f"the venv's interpreter {python}{_points_to(python)} is Python {running}, but the recipe records "
            f"{expected}: the recipe's interpreter is not the Python it says"
        )
    return None
