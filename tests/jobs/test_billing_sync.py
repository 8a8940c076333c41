"""RunPod's own bill beside the ledger: fetched after a job ends, again while RunPod lags, never blocking a tick."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from jobs import billing_sync
from jobs.billing_sync import MAX_FETCHES, RETRY_AFTER, JobBill, job_bill, sync_finished_jobs
from jobs.cloud import AsyncCloud, BillingRecord, CloudTransientError
from jobs.ledger import job_cost
from jobs.states import JobStatus, PodRole
from storage.db import session_scope
from storage.models import Job, RunpodBill, RunpodBillSync
from storage.transitions import record_pod_intent, set_pod_created, set_pod_terminated
from tests.world.fixtures_db import T0, new_job

MIN = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
RATE = 690_000
# A 4090 from 12:30 to 13:30 with 20 GB of container disk: $0.345 + $0.001388 in each of two hourly buckets.
HALF_HOUR_GPU, HALF_HOUR_DISK = 345_000, 1_388
LEDGER = 2 * HALF_HOUR_GPU + 2_777  # the ledger's one hour of compute and disk


class ScriptedBilling:
    """A transport whose `pod_billing` answers from a script (an exception to raise, or records), one per call."""

    def __init__(self, answers: Sequence[BaseException | list[BillingRecord]] = ()) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    async def pod_billing(self, pod_id: str) -> list[BillingRecord]:
        self.calls.append(pod_id)
        answer = self.answers.pop(0) if self.answers else []
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def close(self) -> None:
        return None


def _cloud(client: object) -> AsyncCloud:
    async def no_sleep(_: float) -> None:
        return None

    return AsyncCloud(client, attempts=1, sleep=no_sleep)  # type: ignore[arg-type]


def _record(runpod_id: str, hour: int, *, gpu: int = HALF_HOUR_GPU, disk: int = HALF_HOUR_DISK) -> BillingRecord:
    start = T0.replace(hour=hour)
    return BillingRecord(runpod_id, start, start + HOUR, gpu, 0, disk, gpu + disk)


def _finished_job(
    sessions: sessionmaker[Session],
    *,
    status: JobStatus = JobStatus.SUCCEEDED,
    start: dt.datetime = T0 + 30 * MIN,
    minutes: int | None = 60,
    runpod_id: str = "rp1",
) -> tuple[int, int]:
    """A job in ``status`` with one GPU pod RunPod created at ``start`` (terminated ``minutes`` later)."""
    with session_scope(sessions) as s:
        job_id = new_job(s)
        pod = record_pod_intent(s, job_id=job_id, role=PodRole.GPU, attempt=1, now=start, container_disk_gb=20)
        set_pod_created(s, pod.id, runpod_pod_id=runpod_id, cost_per_hr_micros=RATE, now=start)
        if minutes is not None:
            set_pod_terminated(s, pod.id, now=start + minutes * MIN)
        s.get_one(Job, job_id).status = status  # the store's transitions are not what is tested here
        return job_id, pod.id


def _at(moment: dt.datetime) -> Callable[[], dt.datetime]:
    return lambda: moment


def _bill(sessions: sessionmaker[Session], job_id: int, now: dt.datetime) -> JobBill | None:
    with session_scope(sessions) as s:
        return job_bill(s, job_id, job_cost(s, job_id, now=now))


async def test_a_lagging_bill_is_fetched_again_until_it_reaches_the_pods_end(db_sessions: sessionmaker[Session]):
    job_id, pod_id = _finished_job(db_sessions)
    client = ScriptedBilling(
        [
            CloudTransientError("RunPod answered 502"),
            [_record("rp1", 12)],  # RunPod has posted the first hour only
            [_record("rp1", 12), _record("rp1", 13), _record("other", 13)],  # both; another pod's record is ignored
        ]
    )
    cloud, now = _cloud(client), T0 + 91 * MIN

    assert await sync_finished_jobs(db_sessions, cloud, lambda: now) == 0  # the error is noted, not raised
    assert _bill(db_sessions, job_id, now) == JobBill(
        pods=1, settled=0, given_up=0, runpod_micros=0, ledger_micros=LEDGER
    )
    assert await sync_finished_jobs(db_sessions, cloud, lambda: now + MIN) == 0
    assert client.calls == ["rp1"]  # asked again only RETRY_AFTER later

    now += RETRY_AFTER
    assert await sync_finished_jobs(db_sessions, cloud, lambda: now) == 0
    bill = _bill(db_sessions, job_id, now)
    assert bill is not None and not bill.complete and bill.runpod_micros == HALF_HOUR_GPU + HALF_HOUR_DISK

    now += RETRY_AFTER
    assert await sync_finished_jobs(db_sessions, cloud, lambda: now) == 1
    assert _bill(db_sessions, job_id, now) == JobBill(
        pods=1, settled=1, given_up=0, runpod_micros=2 * (HALF_HOUR_GPU + HALF_HOUR_DISK), ledger_micros=LEDGER
    )
    with session_scope(db_sessions) as s:
        rows = s.scalars(select(RunpodBill).order_by(RunpodBill.start)).all()
        assert [(r.pod_id, r.start.hour, r.gpu_micros, r.disk_micros) for r in rows] == [
            (pod_id, 12, HALF_HOUR_GPU, HALF_HOUR_DISK),
            (pod_id, 13, HALF_HOUR_GPU, HALF_HOUR_DISK),
        ]  # the later fetch replaced the partial one
        sync = s.get_one(RunpodBillSync, pod_id)
        assert (sync.attempts, sync.settled_at, sync.last_error) == (3, now, None)

    now += 10 * RETRY_AFTER
    await sync_finished_jobs(db_sessions, cloud, lambda: now)
    assert len(client.calls) == 3  # a complete bill is never asked for again


async def test_a_bill_that_never_comes_in_is_asked_for_at_most_max_fetches_times(db_sessions: sessionmaker[Session]):
    job_id, _ = _finished_job(db_sessions)
    client = ScriptedBilling()  # RunPod answers with no records, every time
    now = T0 + 2 * HOUR
    for tick in range(MAX_FETCHES + 3):
        await sync_finished_jobs(db_sessions, _cloud(client), _at(now + tick * RETRY_AFTER))
    now += (MAX_FETCHES + 3) * RETRY_AFTER
    assert len(client.calls) == MAX_FETCHES
    assert _bill(db_sessions, job_id, now) == JobBill(
        pods=1, settled=0, given_up=1, runpod_micros=0, ledger_micros=LEDGER
    )


async def test_only_terminated_pods_of_finished_jobs_are_asked_for_a_few_per_tick(db_sessions: sessionmaker[Session]):
    _finished_job(db_sessions, status=JobStatus.TRAINING, runpod_id="running-job")
    _finished_job(db_sessions, status=JobStatus.FAILED_TRAINER, minutes=None, runpod_id="still-terminating")
    _finished_job(db_sessions, start=T0 - 30 * 24 * HOUR, runpod_id="a-month-old")
    with session_scope(db_sessions) as s:  # a pod RunPod never created has no bill
        never = new_job(s)
        record_pod_intent(s, job_id=never, role=PodRole.GPU, attempt=1, now=T0)
        s.get_one(Job, never).status = JobStatus.FAILED_NO_CAPACITY
    finished = [_finished_job(db_sessions, runpod_id=f"done{i}") for i in range(billing_sync.PODS_PER_TICK + 1)]

    client = ScriptedBilling()
    await sync_finished_jobs(db_sessions, _cloud(client), lambda: T0 + 2 * HOUR)
    assert client.calls == [f"done{i}" for i in range(billing_sync.PODS_PER_TICK)]
    await sync_finished_jobs(db_sessions, _cloud(client), lambda: T0 + 2 * HOUR + MIN)
    assert client.calls[-1] == f"done{billing_sync.PODS_PER_TICK}"
    assert _bill(db_sessions, never, T0 + 2 * HOUR) is None
    assert _bill(db_sessions, finished[0][0], T0 + 2 * HOUR) is not None


async def test_a_slow_bill_is_abandoned_for_this_tick_and_noted(
    db_sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
):
    _, pod_id = _finished_job(db_sessions)

    class Hanging(ScriptedBilling):
        async def pod_billing(self, pod_id: str) -> list[BillingRecord]:
            await asyncio.sleep(5)
            return []

    monkeypatch.setattr(billing_sync, "CALL_TIMEOUT_S", 0.05)
    await sync_finished_jobs(db_sessions, _cloud(Hanging()), lambda: T0 + 2 * HOUR)
    with session_scope(db_sessions) as s:
        sync = s.get_one(RunpodBillSync, pod_id)
        assert (sync.attempts, sync.settled_at, sync.last_error) == (1, None, "TimeoutError")


async def test_an_answer_that_breaks_the_reader_is_noted_and_the_tick_goes_on(db_sessions: sessionmaker[Session]):
    _, pod_id = _finished_job(db_sessions)
    client = ScriptedBilling([KeyError("gpuAmount"), [_record("rp1", 12), _record("rp1", 13)]])
    assert await sync_finished_jobs(db_sessions, _cloud(client), _at(T0 + 2 * HOUR)) == 0
    with session_scope(db_sessions) as s:
        assert s.get_one(RunpodBillSync, pod_id).last_error == "KeyError: 'gpuAmount'"
    assert await sync_finished_jobs(db_sessions, _cloud(client), _at(T0 + 2 * HOUR + RETRY_AFTER)) == 1


@pytest.mark.parametrize(
    ("runpod", "ledger", "differs"),
    [(1_010_000, 1_000_000, False), (1_010_001, 1_000_000, True), (990_000, 1_000_000, False),
     (989_999, 1_000_000, True), (1, 0, True), (0, 0, False)],
)  # fmt: skip
def test_a_bill_differs_when_it_is_more_than_one_percent_off_the_ledger(runpod: int, ledger: int, differs: bool):
    bill = JobBill(pods=1, settled=1, given_up=0, runpod_micros=runpod, ledger_micros=ledger)
    assert bill.differs is differs
