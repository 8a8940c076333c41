"""Fixtures of the fault suite, and the hook that rewrites tests/faults/README.md from the run.

`LORABOT_FAULTS_TABLE=1 pytest tests/faults` rewrites the README's table with this run's cases and outcomes
(failed cases are listed under the table).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.fixtures import fault_world  # noqa: F401  (the suite's fixture)
from tests.faults.harness import RESULTS
from tests.faults.table import write_readme

README = Path(__file__).with_name("README.md")

_failed: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/faults/" in report.nodeid and report.failed:
        _failed.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import os

    if os.environ.get("LORABOT_FAULTS_TABLE") != "1" or not RESULTS:
        return
    write_readme(README, RESULTS, failed=_failed)
