"""The store's read side: what the tick, /status, /jobs and the limits ask for."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from jobs.names import InvalidJobId
from jobs.states import CacheKind, JobStatus
from storage.models import Job
from storage.queries import (
    count_active_jobs_for_user,
    count_jobs_in,
    get_budget_limit,
    get_dataset,
    get_job_by_public_id,
    get_volume_for_data_center,
    is_cache_ready,
    list_active_jobs,
    list_jobs_by_user,
    mark_cache_ready,
    record_dataset,
    record_volume,
    set_budget,
)
from storage.transitions import set_cancelled, set_failed, transition
from tests.world.fixtures_db import T0, new_job

# The store's behaviour is promised on SQLite and PostgreSQL alike.
pytestmark = pytest.mark.both_dbs

ALICE, BOB = 111, 222


def test_active_jobs_and_counts_leave_finished_jobs_out(db_session: Session) -> None:
    queued = new_job(db_session, user_id=ALICE)
    training = new_job(db_session, user_id=ALICE)
    cancelled = new_job(db_session, user_id=ALICE)
    bobs = new_job(db_session, user_id=BOB)
    transition(db_session, training, JobStatus.TRAINING, now=T0)
    set_cancelled(db_session, cancelled, now=T0)
    set_failed(db_session, bobs, JobStatus.FAILED_DATASET, now=T0, reason="no images in the zip")

    assert [job.id for job in list_active_jobs(db_session)] == [queued, training]
    assert count_active_jobs_for_user(db_session, ALICE) == 2
    assert count_active_jobs_for_user(db_session, BOB) == 0
    assert count_jobs_in(db_session, frozenset({JobStatus.TRAINING, JobStatus.INTERRUPTED})) == 1
    assert [job.id for job in list_jobs_by_user(db_session, ALICE)] == [cancelled, training, queued]
    assert [job.id for job in list_jobs_by_user(db_session, ALICE, limit=1)] == [cancelled]


def test_jobs_are_found_by_their_public_id(db_session: Session) -> None:
    job_id = new_job(db_session)
    job = get_job_by_public_id(db_session, f"j{job_id}")
    assert isinstance(job, Job) and job.public_id == f"j{job_id}"
    assert get_job_by_public_id(db_session, "j999999") is None
    with pytest.raises(InvalidJobId, match="'kanachan' is not a job id"):
        get_job_by_public_id(db_session, "kanachan")


def test_times_come_back_as_aware_utc(db_session: Session) -> None:
    tokyo = dt.timezone(dt.timedelta(hours=9))
    job_id = new_job(db_session, now=dt.datetime(2026, 11, 24, 21, 0, tzinfo=tokyo))
    db_session.commit()
    db_session.expire_all()
    job = db_session.get(Job, job_id)
    assert job is not None and job.created_at == T0 and job.created_at.tzinfo is dt.UTC


def test_datasets_are_content_addressed(db_session: Session) -> None:
    digest = "AB" * 32
    first = record_dataset(
        db_session, sha256=digest, size=10, owner_user_id=ALICE, image_count=59, report={"images": 59},
        store_key=f"datasets/{digest.lower()}.zip", now=T0,
    )  # fmt: skip
    again = record_dataset(
        db_session, sha256=digest.lower(), size=10, owner_user_id=BOB, image_count=59, report={}, store_key="x", now=T0
    )
    assert again is first and first.owner_user_id == ALICE
    assert get_dataset(db_session, digest) is first
    with pytest.raises(ValueError, match="64 hex digits"):
        record_dataset(
            db_session, sha256="nothex", size=1, owner_user_id=1, image_count=1, report={}, store_key="k", now=T0
        )


def test_volume_and_cache_entries(db_session: Session) -> None:
    volume = record_volume(db_session, data_center_id="EU-RO-1", size_gb=30, now=T0, runpod_volume_id="vol-1")
    assert get_volume_for_data_center(db_session, "EU-RO-1") is volume
    assert get_volume_for_data_center(db_session, "US-KS-2") is None
    assert not is_cache_ready(db_session, volume.id, CacheKind.ENV, "recipe-abc")
    mark_cache_ready(db_session, volume.id, CacheKind.ENV, "recipe-abc", now=T0)
    mark_cache_ready(db_session, volume.id, CacheKind.ENV, "recipe-abc", now=T0)
    assert is_cache_ready(db_session, volume.id, CacheKind.ENV, "recipe-abc")
    assert not is_cache_ready(db_session, volume.id, CacheKind.MODEL, "recipe-abc")


def test_budgets_for_a_month_fall_back_to_every_month(db_session: Session) -> None:
    set_budget(db_session, user_id=ALICE, month="*", limit_micros=5_000_000)
    set_budget(db_session, user_id=ALICE, month="2026-12", limit_micros=1_000_000)
    set_budget(db_session, user_id=None, month="2026-11", limit_micros=50_000_000)
    set_budget(db_session, user_id=None, month="2026-11", limit_micros=40_000_000)  # updated, not duplicated
    assert get_budget_limit(db_session, user_id=ALICE, month="2026-11") == 5_000_000
    assert get_budget_limit(db_session, user_id=ALICE, month="2026-12") == 1_000_000
    assert get_budget_limit(db_session, user_id=BOB, month="2026-11") is None
    assert get_budget_limit(db_session, user_id=None, month="2026-11") == 40_000_000
    with pytest.raises(ValueError, match="looks like 2026-11"):
        set_budget(db_session, user_id=ALICE, month="November", limit_micros=1)
    with pytest.raises(ValueError, match="≥ 0"):
        set_budget(db_session, user_id=ALICE, month="*", limit_micros=-1)
