"""/try requests move only along TRY_TRANSITIONS (a double Confirm, a /cancel racing the tick: the second loses and
is told why), and a job's test window opens once and closes once, keeping its pod legitimate only until then."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from jobs.cloud import PodInfo
from jobs.pods import owned_by_live_job
from jobs.states import TRY_TRANSITIONS, JobStatus, PodRole, TryStatus
from storage.models import Job
from storage.transitions import record_pod_intent, set_pod_created
from storage.tries import (
    InvalidTryTransition,
    close_window,
    create_try_request,
    open_try_requests,
    open_window,
    pod_kept,
    set_try_status,
    window_of_job,
)
from tests.world.fixtures_db import T0, new_job

pytestmark = pytest.mark.both_dbs
MIN = dt.timedelta(minutes=1)
T = TryStatus


def test_the_table_has_a_row_for_every_status_and_the_final_ones_lead_nowhere() -> None:
    assert set(TRY_TRANSITIONS) == set(TryStatus)
    assert {s for s in TryStatus if s.is_final()} == {T.DONE, T.FAILED, T.CANCELLED, T.DISMISSED, T.EXPIRED}
    assert {s for s in TryStatus if s.is_open()} == {T.CONFIRMED, T.RUNNING}


def test_a_request_goes_pending_confirmed_running_done_with_its_times(db_session: Session) -> None:
    job_id = new_job(db_session)
    row = create_try_request(
        db_session, job_id=job_id, user_id=111, spec={"prompts": ["a"]}, estimate_s=90, estimate_micros=20_000, now=T0
    )
    assert row.status is T.PENDING and row.public_id == f"t{row.id}"
    assert open_try_requests(db_session, job_id) == []
    set_try_status(db_session, row.id, T.CONFIRMED, now=T0 + MIN)
    assert [r.id for r in open_try_requests(db_session, job_id)] == [row.id]
    set_try_status(db_session, row.id, T.RUNNING, now=T0 + 2 * MIN)
    done = set_try_status(db_session, row.id, T.DONE, now=T0 + 3 * MIN, result={"cells": 2})
    assert (done.confirmed_at, done.sent_at, done.finished_at) == (T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN)
    assert done.result_json == {"cells": 2}


def test_a_second_confirm_and_a_move_from_a_final_status_are_refused_and_change_nothing(db_session: Session) -> None:
    job_id = new_job(db_session)
    row = create_try_request(
        db_session, job_id=job_id, user_id=111, spec={}, estimate_s=90, estimate_micros=20_000, now=T0
    )
    set_try_status(db_session, row.id, T.CONFIRMED, now=T0)
    with pytest.raises(InvalidTryTransition, match="is CONFIRMED: it cannot go to CONFIRMED"):
        set_try_status(db_session, row.id, T.CONFIRMED, now=T0 + MIN)
    set_try_status(db_session, row.id, T.CANCELLED, now=T0 + MIN, error="cancelled by kana")
    with pytest.raises(InvalidTryTransition, match=r"is CANCELLED: it cannot go to RUNNING \(from it: nothing"):
        set_try_status(db_session, row.id, T.RUNNING, now=T0 + 2 * MIN)
    db_session.refresh(row)
    assert (row.status, row.error, row.finished_at) == (T.CANCELLED, "cancelled by kana", T0 + MIN)
    with pytest.raises(InvalidTryTransition, match="there is no /try request t999"):
        set_try_status(db_session, 999, T.DONE, now=T0)


def test_a_window_opens_once_closes_once_and_keeps_its_pod_only_while_open(db_session: Session) -> None:
    job_id = new_job(db_session)
    pod = record_pod_intent(db_session, job_id=job_id, role=PodRole.GPU, attempt=1, now=T0)
    window = open_window(db_session, job_id=job_id, pod_id=pod.id, minutes=15, now=T0)
    assert window.until_at == T0 + 15 * MIN
    assert open_window(db_session, job_id=job_id, pod_id=pod.id, minutes=30, now=T0 + MIN).id == window.id
    assert pod_kept(db_session, pod, T0 + 14 * MIN)
    assert not pod_kept(db_session, pod, T0 + 15 * MIN)  # past its end the clean-up and the reaper may take it

    closed = close_window(db_session, job_id, now=T0 + 5 * MIN, by="button by 111")
    assert closed is not None and (closed.closed_at, closed.closed_by) == (T0 + 5 * MIN, "button by 111")
    assert not pod_kept(db_session, pod, T0 + 6 * MIN)
    assert close_window(db_session, job_id, now=T0 + 6 * MIN, by="time") is None  # the first cause stays
    assert window_of_job(db_session, job_id).closed_by == "button by 111"  # type: ignore[union-attr]


def test_a_try_pod_is_kept_while_it_serves_an_open_request(db_session: Session) -> None:
    job_id = new_job(db_session)
    pod = record_pod_intent(db_session, job_id=job_id, role=PodRole.TRY, attempt=1, now=T0)
    row = create_try_request(db_session, job_id=job_id, user_id=1, spec={}, estimate_s=1, estimate_micros=1, now=T0)
    assert not pod_kept(db_session, pod, T0)
    set_try_status(db_session, row.id, T.CONFIRMED, now=T0, pod_id=pod.id)
    assert pod_kept(db_session, pod, T0 + 60 * MIN)
    set_try_status(db_session, row.id, T.RUNNING, now=T0)
    set_try_status(db_session, row.id, T.FAILED, now=T0, error="env_missing")
    assert not pod_kept(db_session, pod, T0 + MIN)


def test_a_try_pod_being_created_for_a_confirmed_request_is_kept(db_session: Session) -> None:
    """Between the TRY pod's row and the request naming it, the confirmed request (no pod yet) keeps it."""
    job_id = new_job(db_session)
    pod = record_pod_intent(db_session, job_id=job_id, role=PodRole.TRY, attempt=1, now=T0)
    row = create_try_request(db_session, job_id=job_id, user_id=1, spec={}, estimate_s=1, estimate_micros=1, now=T0)
    set_try_status(db_session, row.id, T.CONFIRMED, now=T0)
    assert pod_kept(db_session, pod, T0 + MIN)
    gpu = record_pod_intent(db_session, job_id=job_id, role=PodRole.GPU, attempt=1, now=T0)
    assert not pod_kept(db_session, gpu, T0 + MIN)  # a training pod is never a /try request's by default


def test_the_reaper_takes_a_finished_jobs_pod_only_once_it_is_no_longer_kept(db_session: Session) -> None:
    job_id = new_job(db_session)
    pod = record_pod_intent(db_session, job_id=job_id, role=PodRole.GPU, attempt=1, now=T0)
    set_pod_created(db_session, pod.id, runpod_pod_id="rp-1", cost_per_hr_micros=690_000, now=T0)
    db_session.get_one(Job, job_id).status = JobStatus.SUCCEEDED  # set-up: the job's history is not under test
    open_window(db_session, job_id=job_id, pod_id=pod.id, minutes=10, now=T0)
    db_session.flush()
    seen = PodInfo(
        id="rp-1", name=pod.name, status="RUNNING", cost_per_hr_micros=690_000, uptime_seconds=60, gpu_type_id=None
    )
    assert owned_by_live_job(db_session, seen, T0 + 9 * MIN)
    assert not owned_by_live_job(db_session, seen, T0 + 10 * MIN)  # the window's end: an orphan now
    assert not owned_by_live_job(db_session, seen)  # without a time, a finished job owns nothing
    close_window(db_session, job_id, now=T0 + 2 * MIN, by="button by 1")
    assert not owned_by_live_job(db_session, seen, T0 + 3 * MIN)
