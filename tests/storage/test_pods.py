"""Pod records: the row exists before RunPod answers, ids are stored once, terminate is idempotent."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from jobs.states import PodRole, PodStatus
from storage.db import session_scope
from storage.queries import get_pod_by_name, get_pod_by_runpod_id, list_live_pods, list_pods_for_job
from storage.transitions import (
    PodRecordError,
    record_pod_intent,
    set_pod_created,
    set_pod_exited,
    set_pod_lost,
    set_pod_running,
    set_pod_terminate_requested,
    set_pod_terminated,
)
from tests.world.fixtures_db import T0, new_job

# The store's behaviour is promised on SQLite and PostgreSQL alike.
pytestmark = pytest.mark.both_dbs

MINUTE = dt.timedelta(minutes=1)


def test_a_pod_row_is_committed_before_its_runpod_id_is_known(db_sessions: sessionmaker[Session]) -> None:
    with session_scope(db_sessions) as session:
        job_id = new_job(session)
        record_pod_intent(
            session, job_id=job_id, role=PodRole.GPU, attempt=1, now=T0, gpu_type_id="NVIDIA GeForce RTX 4090",
            cloud_type="COMMUNITY", data_center_id="EU-RO-1",
        )  # fmt: skip
    # ...the orchestrator would call RunPod now; a crash here leaves a row the next tick looks up by name.
    with session_scope(db_sessions) as session:
        pod = get_pod_by_name(session, f"lorabot-j{job_id}-gpu")
        assert pod is not None
        assert (pod.runpod_pod_id, pod.status, pod.created_at, pod.api_created_at) == (
            None, PodStatus.CREATING, T0, None
        )  # fmt: skip
        assert [live.name for live in list_live_pods(session)] == [f"lorabot-j{job_id}-gpu"]


def test_recording_the_same_intent_again_returns_the_same_row(db_session: Session) -> None:
    job_id = new_job(db_session)
    first = record_pod_intent(db_session, job_id=job_id, role=PodRole.CPU, attempt=1, now=T0)
    again = record_pod_intent(db_session, job_id=job_id, role=PodRole.CPU, attempt=1, now=T0 + MINUTE)
    second_attempt = record_pod_intent(db_session, job_id=job_id, role=PodRole.CPU, attempt=2, now=T0 + MINUTE)
    assert again.id == first.id and again.created_at == T0
    assert second_attempt.name == f"lorabot-j{job_id}-cpu-2"
    assert len(list_pods_for_job(db_session, job_id)) == 2


def test_the_runpod_id_is_stored_once_and_a_different_one_is_refused(db_session: Session) -> None:
    job_id = new_job(db_session)
    pod = record_pod_intent(db_session, job_id=job_id, role=PodRole.GPU, attempt=1, now=T0)
    set_pod_created(db_session, pod.id, runpod_pod_id="abc123", cost_per_hr_micros=690_000, now=T0 + MINUTE)
    set_pod_created(db_session, pod.id, runpod_pod_id="abc123", cost_per_hr_micros=1, now=T0 + 2 * MINUTE)
    assert (pod.runpod_pod_id, pod.cost_per_hr_micros, pod.api_created_at) == ("abc123", 690_000, T0 + MINUTE)
    assert get_pod_by_runpod_id(db_session, "abc123") is pod
    with pytest.raises(PodRecordError, match="already has RunPod id abc123; refusing to record zzz"):
        set_pod_created(db_session, pod.id, runpod_pod_id="zzz", cost_per_hr_micros=690_000, now=T0)


def test_two_pods_cannot_share_a_runpod_id(db_session: Session) -> None:
    job_id = new_job(db_session)
    cpu = record_pod_intent(db_session, job_id=job_id, role=PodRole.CPU, attempt=1, now=T0)
    gpu = record_pod_intent(db_session, job_id=job_id, role=PodRole.GPU, attempt=1, now=T0)
    set_pod_created(db_session, cpu.id, runpod_pod_id="same", cost_per_hr_micros=80_000, now=T0)
    with pytest.raises(IntegrityError):
        set_pod_created(db_session, gpu.id, runpod_pod_id="same", cost_per_hr_micros=690_000, now=T0)


def test_terminate_is_recorded_once(db_session: Session) -> None:
    job_id = new_job(db_session)
    pod = record_pod_intent(db_session, job_id=job_id, role=PodRole.GPU, attempt=1, now=T0)
    set_pod_created(db_session, pod.id, runpod_pod_id="p1", cost_per_hr_micros=690_000, now=T0)
    set_pod_running(db_session, pod.id, now=T0 + MINUTE, uptime_seconds_api=30)
    set_pod_terminate_requested(db_session, pod.id, now=T0 + 60 * MINUTE)
    assert pod.status is PodStatus.TERMINATING
    assert set_pod_terminated(db_session, pod.id, now=T0 + 61 * MINUTE, uptime_seconds_api=3600) is True
    assert set_pod_terminated(db_session, pod.id, now=T0 + 90 * MINUTE) is False
    db_session.refresh(pod)
    assert (pod.status, pod.terminated_at, pod.uptime_seconds_api) == (PodStatus.TERMINATED, T0 + 61 * MINUTE, 3600)
    assert list_live_pods(db_session) == []
    # Late news about a terminated pod changes nothing.
    set_pod_lost(db_session, pod.id, exit_reason="gone")
    set_pod_terminate_requested(db_session, pod.id, now=T0 + 92 * MINUTE)
    assert pod.status is PodStatus.TERMINATED


def test_terminating_an_unknown_pod_row_is_an_error_not_a_silent_success(db_session: Session) -> None:
    with pytest.raises(PodRecordError, match="no pod row with id 404"):
        set_pod_terminated(db_session, 404, now=T0)


def test_exited_and_lost_pods_stay_live_until_terminated(db_session: Session) -> None:
    job_id = new_job(db_session)
    cpu = record_pod_intent(db_session, job_id=job_id, role=PodRole.CPU, attempt=1, now=T0)
    gpu = record_pod_intent(db_session, job_id=job_id, role=PodRole.GPU, attempt=1, now=T0)
    set_pod_exited(db_session, cpu.id, now=T0 + MINUTE, exit_reason="agent finished: READY")
    set_pod_lost(db_session, gpu.id, exit_reason="spot reclaimed")
    assert {(pod.name, pod.status) for pod in list_live_pods(db_session)} == {
        (cpu.name, PodStatus.EXITED),
        (gpu.name, PodStatus.LOST),
    }
