"""Read-side queries of the job store, plus the small idempotent upserts of reference rows (datasets, volumes,
cache entries, budgets). Nothing here commits."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session, aliased

from jobs.names import parse_job_public_id
from jobs.states import CacheKind, JobStatus, PodStatus
from storage.models import (
    Budget,
    Dataset,
    Job,
    Notice,
    Pod,
    RunpodBill,
    RunpodBillSync,
    Volume,
    VolumeCacheEntry,
    VolumeResize,
    budget_subject,
)

# -- jobs ------------------------------------------------------------------------------------------------------


def get_job(session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id)


def get_job_by_public_id(session: Session, public_id: str) -> Job | None:
    """``"j42"`` → the job, or None; a malformed id raises ``jobs.names.InvalidJobId`` with what is expected."""
    return session.get(Job, parse_job_public_id(public_id))


def list_active_jobs(session: Session) -> Sequence[Job]:
    """Every job the orchestrator's tick must advance, oldest first (queue order)."""
    return (
        session.execute(select(Job).where(Job.status.in_(_sorted(JobStatus.active_statuses()))).order_by(Job.id))
        .scalars()
        .all()
    )


def list_jobs_by_status(session: Session, statuses: frozenset[JobStatus]) -> Sequence[Job]:
    return session.execute(select(Job).where(Job.status.in_(_sorted(statuses))).order_by(Job.id)).scalars().all()


def list_jobs_by_user(session: Session, user_id: int, *, limit: int = 25) -> Sequence[Job]:
    """A user's jobs, newest first."""
    return (
        session.execute(select(Job).where(Job.user_id == user_id).order_by(Job.id.desc()).limit(limit)).scalars().all()
    )


def count_active_jobs_for_user(session: Session, user_id: int) -> int:
    statement = select(func.count(Job.id)).where(
        Job.user_id == user_id, Job.status.in_(_sorted(JobStatus.active_statuses()))
    )
    return int(session.execute(statement).scalar_one())


def count_jobs_in(session: Session, statuses: frozenset[JobStatus]) -> int:
    """E.g. how many jobs hold a GPU now (the concurrent-GPU-jobs limit)."""
    return int(session.execute(select(func.count(Job.id)).where(Job.status.in_(_sorted(statuses)))).scalar_one())


# -- pods ------------------------------------------------------------------------------------------------------


def list_pods_for_job(session: Session, job_id: int) -> Sequence[Pod]:
    return session.execute(select(Pod).where(Pod.job_id == job_id).order_by(Pod.id)).scalars().all()


def list_live_pods(session: Session) -> Sequence[Pod]:
    """Pods that may exist at RunPod (every status but TERMINATED), including rows whose id is not known yet."""
    return session.execute(select(Pod).where(Pod.status != PodStatus.TERMINATED).order_by(Pod.id)).scalars().all()


def get_pod_by_name(session: Session, name: str) -> Pod | None:
    return session.execute(select(Pod).where(Pod.name == name)).scalar_one_or_none()


def get_pod_by_runpod_id(session: Session, runpod_pod_id: str) -> Pod | None:
    return session.execute(select(Pod).where(Pod.runpod_pod_id == runpod_pod_id)).scalar_one_or_none()


# -- the outbox ------------------------------------------------------------------------------------------------


def pending_notices(session: Session, *, now: dt.datetime, limit: int = 50) -> Sequence[Notice]:
    """Unsent notices due now, oldest first; a notice waits while an older one of the same job is unsent,
    so a thread never shows "succeeded" above the epoch gallery that a Discord hiccup held back."""
    older = aliased(Notice)
    older_unsent = (
        select(older.id).where(older.job_id == Notice.job_id, older.id < Notice.id, older.sent_at.is_(None)).exists()
    )
    statement = (
        select(Notice)
        .where(
            Notice.sent_at.is_(None),
            or_(Notice.next_attempt_at.is_(None), Notice.next_attempt_at <= now),
            or_(Notice.job_id.is_(None), ~older_unsent),
        )
        .order_by(Notice.id)
        .limit(limit)
    )
    return session.execute(statement).scalars().all()


def list_notices_for_job(session: Session, job_id: int) -> Sequence[Notice]:
    return session.execute(select(Notice).where(Notice.job_id == job_id).order_by(Notice.id)).scalars().all()


# -- datasets --------------------------------------------------------------------------------------------------


def get_dataset(session: Session, sha256: str) -> Dataset | None:
    return session.get(Dataset, sha256.lower())


def record_dataset(
    session: Session,
    *,
    sha256: str,
    size: int,
    owner_user_id: int,
    image_count: int,
    report: Mapping[str, Any],
    store_key: str,
    now: dt.datetime,
) -> Dataset:
    """The dataset's row; the same bytes recorded again return the first row (content-addressed)."""
    digest = sha256.lower()
    if len(digest) != 64 or any(char not in "0123456789abcdef" for char in digest):
        raise ValueError(f"dataset sha256 must be 64 hex digits, got {sha256[:80]!r}")
    existing = session.get(Dataset, digest)
    if existing is not None:
        return existing
    dataset = Dataset(
        sha256=digest,
        size=size,
        owner_user_id=owner_user_id,
        image_count=image_count,
        report_json=dict(report),
        store_key=store_key,
        created_at=now,
    )
    session.add(dataset)
    session.flush()
    return dataset


# -- volumes and their cache -----------------------------------------------------------------------------------


def get_volume_for_data_center(session: Session, data_center_id: str) -> Volume | None:
    """The live volume of a data center (lorabot keeps one per data center)."""
    statement = (
        select(Volume)
        .where(Volume.data_center_id == data_center_id, Volume.deleted_at.is_(None))
        .order_by(Volume.id)
        .limit(1)
    )
    return session.execute(statement).scalar_one_or_none()


def record_volume(
    session: Session, *, data_center_id: str, size_gb: int, now: dt.datetime, runpod_volume_id: str | None = None
) -> Volume:
    if size_gb < 1:
        raise ValueError(f"a Network Volume has at least 1 GB, got {size_gb}")
    volume = Volume(data_center_id=data_center_id, size_gb=size_gb, created_at=now, runpod_volume_id=runpod_volume_id)
    session.add(volume)
    session.flush()
    return volume


def record_volume_resize(session: Session, volume_id: int, *, size_gb: int, now: dt.datetime) -> Volume:
    """The volume was grown at RunPod to ``size_gb``: its size from ``now`` on (a volume never shrinks)."""
    volume = session.get(Volume, volume_id)
    if volume is None:
        raise LookupError(f"volume {volume_id} does not exist")
    if size_gb < volume.size_gb:
        raise ValueError(f"a Network Volume only grows: volume {volume_id} has {volume.size_gb} GB, not {size_gb}")
    if size_gb > volume.size_gb:
        session.add(VolumeResize(volume_id=volume_id, from_gb=volume.size_gb, to_gb=size_gb, resized_at=now))
        volume.size_gb = size_gb
        session.flush()
    return volume


def is_cache_ready(session: Session, volume_id: int, kind: CacheKind, key: str) -> bool:
    statement = select(VolumeCacheEntry.id).where(
        VolumeCacheEntry.volume_id == volume_id, VolumeCacheEntry.kind == kind, VolumeCacheEntry.key == key
    )
    return session.execute(statement).first() is not None


def mark_cache_ready(session: Session, volume_id: int, kind: CacheKind, key: str, *, now: dt.datetime) -> None:
    if not is_cache_ready(session, volume_id, kind, key):
        session.add(VolumeCacheEntry(volume_id=volume_id, kind=kind, key=key, ready_at=now))
        session.flush()


# -- budgets ---------------------------------------------------------------------------------------------------

ANY_MONTH = "*"
_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")


def set_budget(session: Session, *, user_id: int | None, month: str, limit_micros: int) -> Budget:
    """Set the limit of a user (or of the team, ``user_id=None``) for ``YYYY-MM`` or for every month (``"*"``)."""
    if limit_micros < 0:
        raise ValueError(f"a budget limit must be ≥ 0 micro-dollars, got {limit_micros}")
    if month != ANY_MONTH and _MONTH.fullmatch(month) is None:
        raise ValueError(f"a budget month looks like 2026-11 (or * for every month), got {month[:20]!r}")
    subject = budget_subject(user_id)
    budget = session.execute(
        select(Budget).where(Budget.subject == subject, Budget.month == month)
    ).scalar_one_or_none()
    if budget is None:
        budget = Budget(subject=subject, month=month, limit_micros=limit_micros)
        session.add(budget)
    else:
        budget.limit_micros = limit_micros
    session.flush()
    return budget


def get_budget_limit(session: Session, *, user_id: int | None, month: str) -> int | None:
    """The month's own limit, else the every-month one, else None (no limit stored)."""
    subject = budget_subject(user_id)
    rows = session.execute(
        select(Budget.month, Budget.limit_micros).where(
            and_(Budget.subject == subject, Budget.month.in_([month, ANY_MONTH]))
        )
    ).all()
    limits = {row.month: int(row.limit_micros) for row in rows}
    return limits.get(month, limits.get(ANY_MONTH))


# -- RunPod's own bill -----------------------------------------------------------------------------------------


def list_pods_awaiting_bill(
    session: Session,
    *,
    now: dt.datetime,
    retry_after: dt.timedelta,
    max_attempts: int,
    ended_after: dt.datetime,
    limit: int,
) -> Sequence[Pod]:
    """Terminated pods of finished jobs whose RunPod bill is still to fetch, oldest first: never asked for, or not
    complete yet, asked fewer than ``max_attempts`` times and not within ``retry_after``. Pods RunPod never created
    (no id, no creation time) have no bill; pods that ended before ``ended_after`` are left alone."""
    statement = (
        select(Pod)
        .join(Job, Job.id == Pod.job_id)
        .outerjoin(RunpodBillSync, RunpodBillSync.pod_id == Pod.id)
        .where(
            Job.status.in_(_sorted(JobStatus.terminal_statuses())),
            Pod.runpod_pod_id.is_not(None),
            Pod.api_created_at.is_not(None),
            Pod.terminated_at.is_not(None),
            Pod.terminated_at >= ended_after,
            or_(
                RunpodBillSync.pod_id.is_(None),
                and_(
                    RunpodBillSync.settled_at.is_(None),
                    RunpodBillSync.attempts < max_attempts,
                    RunpodBillSync.last_attempt_at <= now - retry_after,
                ),
            ),
        )
        .order_by(Pod.id)
        .limit(limit)
    )
    return session.execute(statement).scalars().all()


def replace_runpod_bills(session: Session, pod_id: int, bills: Sequence[RunpodBill]) -> None:
    """A pod's records as RunPod answers them now: a later fetch supersedes an earlier, possibly partial one."""
    session.execute(delete(RunpodBill).where(RunpodBill.pod_id == pod_id))
    session.add_all(bills)
    session.flush()


def note_bill_fetch(
    session: Session, pod_id: int, *, now: dt.datetime, settled: bool, error: str | None
) -> RunpodBillSync:
    """Count one fetch of a pod's bill; ``settled`` marks it complete (no more fetches), ``error`` why it failed."""
    sync = session.get(RunpodBillSync, pod_id)
    if sync is None:
        sync = RunpodBillSync(pod_id=pod_id, attempts=0, last_attempt_at=now)
        session.add(sync)
    sync.attempts += 1
    sync.last_attempt_at = now
    sync.last_error = error
    if settled and sync.settled_at is None:
        sync.settled_at = now
    session.flush()
    return sync


def list_bill_syncs_for_job(session: Session, job_id: int) -> dict[int, RunpodBillSync]:
    """Where fetching each of a job's pods' bills stands, by pod id."""
    statement = select(RunpodBillSync).join(Pod, Pod.id == RunpodBillSync.pod_id).where(Pod.job_id == job_id)
    return {sync.pod_id: sync for sync in session.execute(statement).scalars()}


def list_runpod_bills_for_job(session: Session, job_id: int) -> Sequence[RunpodBill]:
    statement = (
        select(RunpodBill)
        .join(Pod, Pod.id == RunpodBill.pod_id)
        .where(Pod.job_id == job_id)
        .order_by(RunpodBill.pod_id, RunpodBill.start)
    )
    return session.execute(statement).scalars().all()


def _sorted(statuses: frozenset[JobStatus]) -> list[JobStatus]:
    # A stable order keeps the SQL text (and its statement cache entry) the same from call to call.
    return sorted(statuses, key=lambda status: status.value)
