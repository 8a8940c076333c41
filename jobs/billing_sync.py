"""RunPod's own bill beside the ledger: after a job ends, its pods' billing records are fetched and kept.

The ledger (``jobs/ledger.py``) computes every cost from recorded times and prices; RunPod bills from its own. Both
should agree within 1 % (the create and terminate round trips and per-second rounding are all that separate them),
and ``/cost`` says so, or shows RunPod's figure when they do not. How the bill is fetched:
- only pods of finished jobs, once they are terminated (a live pod's bill is still growing);
- RunPod's billing lags, so a bill whose records do not reach the pod's end yet is asked for again on a later tick,
  ``RETRY_AFTER`` apart, at most ``MAX_FETCHES`` times; each fetch replaces the pod's stored records;
- a failed fetch (any ``CloudError``, a call slower than ``CALL_TIMEOUT_S``, even an answer lorabot cannot read)
  is logged, counted and retried later: the bill is information, and never holds up the tick that advances jobs;
- at most ``PODS_PER_TICK`` pods per tick, so a backlog costs a few calls per tick, not a burst.

The orchestrator calls ``sync_finished_jobs`` once at the end of each tick; ``/cost`` reads ``job_bill``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from jobs.cloud import AsyncCloud, BillingRecord, CloudError
from jobs.ledger import CostBreakdown
from storage.db import session_scope
from storage.models import RunpodBill
from storage.queries import (
    get_job,
    list_bill_syncs_for_job,
    list_pods_awaiting_bill,
    list_pods_for_job,
    list_runpod_bills_for_job,
    note_bill_fetch,
    replace_runpod_bills,
)

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]

# Twelve fetches ten minutes apart: RunPod gets two hours to post a pod's last hour before /cost stops waiting.
MAX_FETCHES = 12
RETRY_AFTER = dt.timedelta(minutes=10)
PODS_PER_TICK = 4
# AsyncCloud honours Retry-After up to a minute per try: a rate-limited bill must not stall the tick that long.
CALL_TIMEOUT_S = 15.0
# Our end of a pod is the middle of the terminate's round trip; RunPod's record may end just before it.
END_SLACK = dt.timedelta(minutes=1)
# RunPod's billing query covers recent weeks only, and pods that ended before this module existed need no bill:
# without a limit, a first start would ask MAX_FETCHES times for every old pod.
MAX_AGE = dt.timedelta(days=7)


async def sync_finished_jobs(sessions: sessionmaker[Session], cloud: AsyncCloud, clock: Clock) -> int:
    """Fetch and store RunPod's bill for up to ``PODS_PER_TICK`` terminated pods of finished jobs whose bill is not
    complete yet. Returns how many pods' bills became complete. RunPod's errors are logged and retried later."""
    now = clock()
    with session_scope(sessions) as s:
        due = [
            (pod.id, pod.name, pod.runpod_pod_id or "", pod.terminated_at or now)
            for pod in list_pods_awaiting_bill(
                s,
                now=now,
                retry_after=RETRY_AFTER,
                max_attempts=MAX_FETCHES,
                ended_after=now - MAX_AGE,
                limit=PODS_PER_TICK,
            )
        ]
    completed = 0
    for pod_id, name, runpod_id, ended_at in due:
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                records = await cloud.pod_billing(runpod_id)
        except (CloudError, TimeoutError) as exc:
            error = str(exc) or type(exc).__name__
            log.warning(
                "RunPod's bill for %s (%s) could not be fetched, trying again later: %s", name, runpod_id, error
            )
            with session_scope(sessions) as s:
                note_bill_fetch(s, pod_id, now=clock(), settled=False, error=error[:500])
            continue
        except Exception as exc:  # a bug reading the answer: the bill is information, the tick must go on
            log.exception("RunPod's bill for %s (%s) could not be read", name, runpod_id)
            with session_scope(sessions) as s:
                note_bill_fetch(s, pod_id, now=clock(), settled=False, error=f"{type(exc).__name__}: {exc}"[:500])
            continue
        mine = [record for record in records if record.pod_id == runpod_id]
        settled = bill_covers(mine, ended_at)
        fetched_at = clock()
        with session_scope(sessions) as s:
            replace_runpod_bills(s, pod_id, _rows(pod_id, mine, fetched_at))
            note_bill_fetch(s, pod_id, now=fetched_at, settled=settled, error=None)
        completed += settled
    return completed


def bill_covers(records: Sequence[BillingRecord], ended_at: dt.datetime) -> bool:
    """True when RunPod's records reach the pod's end (within ``END_SLACK``): the bill is complete."""
    return bool(records) and max(record.end for record in records) >= ended_at - END_SLACK


def _rows(pod_id: int, records: Sequence[BillingRecord], fetched_at: dt.datetime) -> list[RunpodBill]:
    """One row per time bucket; two records for the same bucket (not expected) are added, not dropped."""
    rows: dict[dt.datetime, RunpodBill] = {}
    for record in sorted(records, key=lambda r: r.start):
        row = rows.get(record.start)
        if row is None:
            rows[record.start] = RunpodBill(
                pod_id=pod_id,
                start=record.start,
                end=record.end,
                gpu_micros=record.gpu_micros,
                cpu_micros=record.cpu_micros,
                disk_micros=record.disk_micros,
                total_micros=record.total_micros,
                fetched_at=fetched_at,
            )
            continue
        row.end = max(row.end, record.end)
        row.gpu_micros += record.gpu_micros
        row.cpu_micros += record.cpu_micros
        row.disk_micros += record.disk_micros
        row.total_micros += record.total_micros
    return list(rows.values())


# -- reading it back -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobBill:
    """RunPod's own bill for a finished job's pods next to the ledger's pod lines (compute + container disk).

    The Network Volume is not in it: RunPod bills volumes apart from pods.
    """

    pods: int  # pods RunPod created (and so billed)
    settled: int  # pods whose stored records reach their end
    given_up: int  # pods whose bill had not come in after MAX_FETCHES fetches
    runpod_micros: int  # the sum of RunPod's stored records for the job's pods
    ledger_micros: int

    @property
    def complete(self) -> bool:
        return self.settled == self.pods

    @property
    def differs(self) -> bool:
        """More than 1 % apart, in integer maths: ``|RunPod − ledger| × 100 > ledger``."""
        return abs(self.runpod_micros - self.ledger_micros) * 100 > self.ledger_micros


def job_bill(session: Session, job_id: int, cost: CostBreakdown) -> JobBill | None:
    """RunPod's bill for a job whose ``cost`` (``ledger.job_cost``) is known; None while the job has not finished
    or when RunPod never created a pod for it (nothing to compare)."""
    job = get_job(session, job_id)
    if job is None or not job.status.is_terminal():
        return None
    billed = [pod for pod in list_pods_for_job(session, job_id) if pod.runpod_pod_id and pod.api_created_at]
    if not billed:
        return None
    syncs = list_bill_syncs_for_job(session, job_id)
    settled = given_up = 0
    for pod in billed:
        sync = syncs.get(pod.id)
        if sync is not None and sync.settled_at is not None:
            settled += 1
        elif sync is not None and sync.attempts >= MAX_FETCHES:
            given_up += 1
    return JobBill(
        pods=len(billed),
        settled=settled,
        given_up=given_up,
        runpod_micros=sum(bill.total_micros for bill in list_runpod_bills_for_job(session, job_id)),
        ledger_micros=cost.pods_micros,
    )
