"""Renders tests/faults/README.md: how to run the suite, then the latest table of cases and outcomes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from tests.faults.harness import Outcome

HEADER = """# Fault suite

Every case runs one job through the whole back end (orchestrator + SQLite + the RunPod emulator, spoken to over
REST v2 by lorabot's own client and checked against RunPod's published contract + moto S3 with real boto3 + pods
running the real agent and the stand-in sd-scripts), injects one fault, and checks the same four promises
(`tests/faults/harness.py`, `check_promises`):

1. the job ends `succeeded` or `failed_*` with a reason, within a real-time bound (a hang fails the case);
2. no pod is left at RunPod (emulator's record) and no pod process on the machine;
3. the ledger's pod cost (compute + container disk) equals RunPod's own billing records (`GET /v2/billing/pods`)
   within 1%, plus the money inside the create and terminate round trips that no ledger could place (recorded by
   `tests/world/timed_cloud.py`; the scaled clock stretches a slow moment of the test machine 120-fold) and one
   second of rounding per billed window (both sides bill a started second);
4. no notice lost or duplicated: unique idempotency keys, exactly one terminal notice, epochs announced exactly
   1..N for a succeeded job (the Discord cases run the real bot: discord.py and the outbox worker put every notice
   into the job's thread exactly once, in order, through 429s, 5xx and a lost answer).

Run: `python -m pytest -q tests/faults` (part of the normal test command). Rewrite this file from a run:
`LORABOT_FAULTS_TABLE=1 python -m pytest -q tests/faults`.

Random cases are seeded (`random.Random(seed)`): the same seed injects the same faults at the same points.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(results: Sequence[Outcome], failed: Sequence[str] = ()) -> str:
    verdict = "all passing" if not failed else f"{len(failed)} FAILED (listed below)"
    lines = [
        HEADER,
        f"## Latest run ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC): {len(results)} cases passed, {verdict}",
        "",
        "| case | injected fault | state | outcome | reason | pods left | ledger vs billing | real s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: r.case):
        lines.append(
            f"| {_cell(r.case)} | {_cell(r.fault)} | {_cell(r.state)} | {r.outcome} | {_cell(r.reason) or '—'} "
            f"| {r.pods_left} | {_cell(r.ledger_vs_billing)} | {r.seconds} |"
        )
    lines += ["", *(f"- FAILED: `{nodeid}`" for nodeid in failed)]
    return "\n".join(lines) + "\n"


def write_readme(path: Path, results: Sequence[Outcome], failed: Sequence[str] = ()) -> None:
    path.write_text(render(results, failed), encoding="utf-8")
