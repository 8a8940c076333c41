"""/try's money: a line of its own in the ledger (TRY_GPU), and a training pod kept warm for the test window split at
the window's opening, its two parts adding up to exactly the one charge RunPod bills for that pod."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.ledger import close_pod_cost, committed_micros, job_cost, pod_charge
from jobs.states import CostKind, JobStatus, PodRole, TryStatus
from storage.models import CostItem, Job, Pod
from storage.transitions import record_pod_intent, set_pod_created, set_pod_terminated
from storage.tries import create_try_request, open_window, set_try_status
from tests.world.fixtures_db import T0, new_job

pytestmark = pytest.mark.both_dbs

MIN = dt.timedelta(minutes=1)
SECURE_4090 = 690_000


def _pod(session: Session, job_id: int, role: PodRole, *, minutes: float | None, disk_gb: int = 20) -> Pod:
    pod = record_pod_intent(session, job_id=job_id, role=role, attempt=1, now=T0, container_disk_gb=disk_gb)
    set_pod_created(session, pod.id, runpod_pod_id=f"rp-{job_id}-{role.value}", cost_per_hr_micros=SECURE_4090, now=T0)
    if minutes is not None:
        set_pod_terminated(session, pod.id, now=T0 + dt.timedelta(minutes=minutes))
    session.refresh(pod)
    return pod


def _succeeded(session: Session, job_id: int) -> None:
    session.get_one(Job, job_id).status = JobStatus.SUCCEEDED  # set-up: the job's history is not under test here
    session.flush()


def test_a_try_pod_is_billed_on_the_try_line_not_the_gpu_line(db_session: Session) -> None:
    job_id = new_job(db_session)
    _pod(db_session, job_id, PodRole.GPU, minutes=60, disk_gb=0)
    _succeeded(db_session, job_id)
    tried = _pod(db_session, job_id, PodRole.TRY, minutes=10, disk_gb=0)
    close_pod_cost(db_session, tried)
    cost = job_cost(db_session, job_id, now=T0 + 2 * 60 * MIN)
    assert cost.gpu_pod_micros == 690_000
    assert cost.try_micros == 115_000  # 600 s at $0.69/h
    assert cost.total_micros == cost.volume_micros + 690_000 + 115_000
    [item] = db_session.execute(select(CostItem).where(CostItem.pod_id == tried.id)).scalars()
    assert item.kind is CostKind.TRY_GPU


def test_the_warm_window_pod_splits_at_the_windows_opening_and_adds_up_to_its_one_charge(db_session: Session) -> None:
    job_id = new_job(db_session)
    gpu = _pod(db_session, job_id, PodRole.GPU, minutes=None)
    # Training ends after 40 min 0.5 s; the window keeps the pod 20 more minutes.
    opened = T0 + 40 * MIN + dt.timedelta(milliseconds=500)
    open_window(db_session, job_id=job_id, pod_id=gpu.id, minutes=20, now=opened)
    _succeeded(db_session, job_id)

    live = job_cost(db_session, job_id, now=T0 + 50 * MIN)
    assert live.live and live.gpu_pod_micros + live.try_micros == pod_charge(gpu, T0 + 50 * MIN).total_micros
    assert live.try_micros > 0

    set_pod_terminated(db_session, gpu.id, now=T0 + 60 * MIN)
    db_session.refresh(gpu)
    close_pod_cost(db_session, gpu)
    items = db_session.execute(select(CostItem).where(CostItem.pod_id == gpu.id).order_by(CostItem.id)).scalars().all()
    assert [i.kind for i in items] == [CostKind.GPU_POD, CostKind.TRY_GPU]
    before, after = items
    assert (before.started_at, before.ended_at, after.started_at, after.ended_at) == (T0, opened, opened, T0 + 60 * MIN)
    whole = pod_charge(gpu, T0 + 60 * MIN)
    assert before.amount_micros + after.amount_micros == whole.total_micros
    assert before.disk_micros + after.disk_micros == whole.disk_micros
    # 2,401 started seconds before (the half second counts whole), the remaining 1,199 after.
    assert before.amount_micros - before.disk_micros == 2401 * SECURE_4090 // 3600
    assert "test window" in (after.note or "")
    closed = job_cost(db_session, job_id, now=T0 + 3 * 60 * MIN)
    assert (closed.gpu_pod_micros, closed.try_micros) == (before.amount_micros, after.amount_micros)
    assert not closed.live
    # A second close writes nothing more.
    close_pod_cost(db_session, gpu)
    assert len(db_session.execute(select(CostItem).where(CostItem.pod_id == gpu.id)).all()) == 2


def test_a_confirmed_try_reserves_its_estimate_in_the_budget_until_it_ends(db_session: Session) -> None:
    job_id = new_job(db_session)
    _pod(db_session, job_id, PodRole.GPU, minutes=60, disk_gb=0)
    _succeeded(db_session, job_id)
    now = T0 + 2 * 60 * MIN
    spent = committed_micros(db_session, "2026-11", now=now, user_id=111)
    request = create_try_request(
        db_session, job_id=job_id, user_id=111, spec={"prompts": ["a"]}, estimate_s=300, estimate_micros=60_000, now=now
    )
    assert committed_micros(db_session, "2026-11", now=now, user_id=111) == spent  # only shown, not confirmed
    set_try_status(db_session, request.id, TryStatus.CONFIRMED, now=now)
    assert committed_micros(db_session, "2026-11", now=now, user_id=111) == spent + 60_000
    set_try_status(db_session, request.id, TryStatus.RUNNING, now=now)
    set_try_status(db_session, request.id, TryStatus.DONE, now=now)
    assert committed_micros(db_session, "2026-11", now=now, user_id=111) == spent
