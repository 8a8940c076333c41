"""The real-trainer tier's fixture: its environment, built on first use; and a summary of what the tier changed.

When the environment cannot be built (no sd-scripts source, no way to install torch) the tier skips with the
reason, in the summary; under CI=true it fails instead, since CI must run every tier.
"""

from __future__ import annotations

import os
import sys

import pytest

from .environment import RealTrainerEnv, Unavailable, ensure

# Lines for the end of the pytest run: the overrides, the measured speed, or why the tier did not run.
SUMMARY: list[str] = []


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true")


@pytest.fixture(scope="session")
def real_env() -> RealTrainerEnv:
    try:
        return ensure(log_to=sys.stderr)
    except Unavailable as exc:
        reason = f"the real-trainer tier cannot run: {exc}"
        SUMMARY.append(f"NOT RUN: {reason}")
        if _under_ci():
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(f"REAL-TRAINER TIER SKIPPED: {reason}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.section("real trainer (sd-scripts on CPU)")
        for line in SUMMARY:
            terminalreporter.write_line(line)
