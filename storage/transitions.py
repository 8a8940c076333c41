"""Every write that changes a job's or a pod's state: guarded compare-and-set updates plus their outbox notices.

A job transition is one ``UPDATE jobs … WHERE id = :id AND status IN (<legal sources>)``; when it matches no row
the job was not where the caller thought, nothing is written and ``InvalidTransition`` says why. The notice that
announces the transition is inserted in the same transaction, so a notice exists if and only if the transition
commits (SkyPilot's "callback after commit", made durable). Nothing here commits: the caller ends the transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from jobs.names import job_public_id, pod_name
from jobs.states import (
    ALLOWED_TRANSITIONS,
    JobStatus,
    NoticeKind,
    PodRole,
    PodStatus,
    allowed_sources,
    default_notice_kind,
)
from storage.models import Job, Notice, Pod

# Longest failure reason / error text kept; the rest is cut (it ends up in a Discord message).
MAX_REASON_CHARS = 1000

# Columns a caller may set along with a transition (everything else is owned by ``transition`` itself).
_TRANSITION_FIELDS = frozenset(
    {
        "data_center_id",
        "volume_id",
        "env_hash",
        "cpu_needed",
        "gpu_type_id",
        "gpu_cloud_type",
        "gpu_spot",
        "gpu_bid_micros_per_hour",
        "attempts",
        "deadline_at",
        "last_status_seq",
        "last_epoch_notified",
        "plan_json",
        "estimate_micros",
        "thread_id",
    }
)


class InvalidTransition(Exception):
    """A job was not in a state from which the requested transition is legal (or does not exist)."""


class PodRecordError(Exception):
    """A pod row contradicts what the caller is recording (e.g. a second RunPod id for the same pod)."""


@dataclass(frozen=True)
class NoticeDraft:
    """A notice to queue with a transition. ``key`` defaults to ``<job>:<state_version>:<kind>``."""

    kind: NoticeKind
    payload: Mapping[str, Any] = field(default_factory=dict)
    key: str | None = None


def create_job(
    session: Session,
    *,
    user_id: int,
    name: str,
    output_name: str,
    dataset_sha256: str,
    dataset_size: int,
    base_model: str,
    now: dt.datetime,
    guild_id: int | None = None,
    channel_id: int | None = None,
    spec: Mapping[str, Any] | None = None,
    plan: Mapping[str, Any] | None = None,
    estimate_micros: int = 0,
    budget_micros: int | None = None,
    deadline_at: dt.datetime | None = None,
) -> Job:
    """Insert a QUEUED job and flush it, so its id (and public id ``j<id>``) is known to the caller."""
    if estimate_micros < 0:
        raise ValueError(f"estimate_micros must be ≥ 0, got {estimate_micros}")
    job = Job(
        user_id=user_id,
        guild_id=guild_id,
        channel_id=channel_id,
        name=name,
        output_name=output_name,
        status=JobStatus.QUEUED,
        state_version=0,
        spec_json=dict(spec or {}),
        plan_json=dict(plan or {}),
        dataset_sha256=dataset_sha256,
        dataset_size=dataset_size,
        base_model=base_model,
        gpu_spot=False,
        attempts=0,
        last_status_seq=0,
        last_epoch_notified=0,
        estimate_micros=estimate_micros,
        budget_micros=budget_micros,
        deadline_at=deadline_at,
        created_at=now,
        queued_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
    return job


def transition(
    session: Session,
    job_id: int,
    to: JobStatus,
    *,
    now: dt.datetime,
    expected: JobStatus | None = None,
    reason: str | None = None,
    notice: NoticeDraft | None = None,
    notify: bool = True,
    **fields: Any,
) -> Job:
    """Move job ``job_id`` to ``to`` if that is legal from its current status, and queue the notice with it.

    ``expected`` narrows the guard to the one status the caller observed (a strict compare-and-set).
    ``reason`` is required for FAILED_* (shown to the user) and kept for others as the notice's text.
    ``notice`` overrides the default notice (``default_notice_kind(to)`` with status and reason); ``notify=False``
    queues none. ``fields`` are extra job columns written atomically with the status (see ``_TRANSITION_FIELDS``).
    Returns the refreshed job row; raises ``InvalidTransition`` (nothing written) when the guard does not match.
    """
    unknown = set(fields) - _TRANSITION_FIELDS
    if unknown:
        raise TypeError(f"transition() cannot set {sorted(unknown)}; settable: {sorted(_TRANSITION_FIELDS)}")
    if to.is_failed() and not (reason and reason.strip()):
        raise ValueError(f"a move to {to.name} needs a reason the user can read")
    sources = allowed_sources(to)
    if expected is not None:
        if expected not in sources:
            raise InvalidTransition(
                f"{expected.name} → {to.name} is not a legal transition "
                f"(from {expected.name}: {_names(ALLOWED_TRANSITIONS[expected]) or 'nothing, it is final'})"
            )
        sources = frozenset({expected})

    values: dict[str, Any] = {
        **fields,
        "status": to,
        "state_version": Job.state_version + 1,
        "updated_at": now,
    }
    values.update(_timestamps_for(to, now, reason))
    statement = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_(sorted(sources, key=lambda status: status.value)))
        .values(values)
        .execution_options(synchronize_session=False)
    )
    if to.is_terminal():
        # A terminal status is written once; a retry clears finished_at on its way back to QUEUED.
        statement = statement.where(Job.finished_at.is_(None))
    result = session.execute(statement)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidTransition(_describe_failure(session, job_id, to, sources))

    job = session.get(Job, job_id, populate_existing=True)
    if job is None:  # the UPDATE above just matched it, inside this transaction
        raise InvalidTransition(f"job {job_public_id(job_id)} vanished during its transition to {to.name}")
    if notify:
        draft = notice or NoticeDraft(kind=default_notice_kind(to))
        payload = {"status": to.value, **({"reason": reason} if reason else {}), **draft.payload}
        key = draft.key or f"{job.public_id}:{job.state_version}:{draft.kind.value}"
        add_notice(session, job_id=job_id, kind=draft.kind, key=key, payload=payload, now=now)
    return job


def _timestamps_for(to: JobStatus, now: dt.datetime, reason: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if to.is_terminal():
        values["finished_at"] = now
    if to.is_failed():
        values["failure_reason"] = _clip(reason or "")
    if to in (JobStatus.PREPARING, JobStatus.TRAINING):
        values["started_at"] = func.coalesce(Job.started_at, now)
    if to is JobStatus.CANCELLING:
        values["cancel_requested_at"] = func.coalesce(Job.cancel_requested_at, now)
    if to is JobStatus.CANCELLED:
        # QUEUED → CANCELLED skips CANCELLING; the request time is still worth keeping.
        values["cancel_requested_at"] = func.coalesce(Job.cancel_requested_at, now)
    if to is JobStatus.QUEUED:
        # /retry: the job starts over from the queue with a clean outcome.
        values.update(queued_at=now, started_at=None, finished_at=None, failure_reason=None, cancel_requested_at=None)
    return values


def _describe_failure(session: Session, job_id: int, to: JobStatus, sources: frozenset[JobStatus]) -> str:
    row = session.execute(select(Job.status, Job.finished_at).where(Job.id == job_id)).one_or_none()
    public = job_public_id(job_id)
    if row is None:
        return f"job {public} does not exist"
    current: JobStatus = row.status
    if to.is_terminal() and current in sources and row.finished_at is not None:
        return f"job {public} is {current.name} but already has finished_at set; refusing to finish it twice"
    legal_now = ALLOWED_TRANSITIONS[current]
    return (
        f"job {public} cannot go {current.name} → {to.name}: the move is allowed only from "
        f"{_names(sources)}; from {current.name} the job may go to {_names(legal_now) or 'nothing (it is final)'}"
    )


def _names(statuses: frozenset[JobStatus]) -> str:
    return ", ".join(sorted(status.name for status in statuses))


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


# -- shorthands named like SkyPilot's set_<state>, for the orchestrator's readability ---------------------------


def set_preparing(session: Session, job_id: int, *, now: dt.datetime, **fields: Any) -> Job:
    return transition(session, job_id, JobStatus.PREPARING, now=now, **fields)


def set_training(session: Session, job_id: int, *, now: dt.datetime, **fields: Any) -> Job:
    return transition(session, job_id, JobStatus.TRAINING, now=now, **fields)


def set_interrupted(session: Session, job_id: int, *, now: dt.datetime, reason: str, **fields: Any) -> Job:
    return transition(session, job_id, JobStatus.INTERRUPTED, now=now, reason=reason, **fields)


def set_collecting(session: Session, job_id: int, *, now: dt.datetime, **fields: Any) -> Job:
    return transition(session, job_id, JobStatus.COLLECTING, now=now, **fields)


def set_succeeded(session: Session, job_id: int, *, now: dt.datetime, notice: NoticeDraft | None = None) -> Job:
    return transition(session, job_id, JobStatus.SUCCEEDED, now=now, notice=notice)


def set_cancelling(session: Session, job_id: int, *, now: dt.datetime, reason: str | None = None) -> Job:
    return transition(session, job_id, JobStatus.CANCELLING, now=now, reason=reason)


def set_cancelled(session: Session, job_id: int, *, now: dt.datetime, notice: NoticeDraft | None = None) -> Job:
    return transition(session, job_id, JobStatus.CANCELLED, now=now, notice=notice)


def set_failed(
    session: Session, job_id: int, failure: JobStatus, *, now: dt.datetime, reason: str, **fields: Any
) -> Job:
    if not failure.is_failed():
        raise ValueError(f"set_failed() needs a FAILED_* status, got {failure.name}")
    return transition(session, job_id, failure, now=now, reason=reason, **fields)


def set_requeued(session: Session, job_id: int, *, now: dt.datetime) -> Job:
    """``/retry``: a failed or cancelled job goes back to the queue."""
    return transition(session, job_id, JobStatus.QUEUED, now=now)


# -- the outbox ----------------------------------------------------------------------------------------------------


def add_notice(
    session: Session,
    *,
    job_id: int | None,
    kind: NoticeKind,
    key: str,
    payload: Mapping[str, Any],
    now: dt.datetime,
) -> bool:
    """Queue a notice unless one with the same idempotency key exists; True when this call queued it."""
    values = {
        "job_id": job_id,
        "kind": kind,
        "idempotency_key": key,
        "payload_json": dict(payload),
        "created_at": now,
        "attempts": 0,
    }
    dialect = session.get_bind().dialect.name
    statement: sqlite.Insert | postgresql.Insert
    if dialect == "sqlite":
        statement = sqlite.insert(Notice).values(values).on_conflict_do_nothing(index_elements=["idempotency_key"])
    elif dialect == "postgresql":
        statement = postgresql.insert(Notice).values(values).on_conflict_do_nothing(index_elements=["idempotency_key"])
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise RuntimeError(f"the outbox needs INSERT … ON CONFLICT; {dialect} is not supported")
    # Whether a row came back, not rowcount: on PostgreSQL SQLAlchemy adds RETURNING for the new id, and psycopg then
    # reports rowcount -1, which read as "a duplicate" for every new notice. RETURNING answers the same on both stores.
    inserted = session.execute(statement.returning(Notice.id)).first()
    return inserted is not None


def mark_notice_sent(session: Session, notice_id: int, *, discord_message_id: int | None, now: dt.datetime) -> bool:
    """Record that the notice reached Discord; True only for the first call (a notice is sent at most once)."""
    result = session.execute(
        update(Notice)
        .where(Notice.id == notice_id, Notice.sent_at.is_(None))
        .values(sent_at=now, discord_message_id=discord_message_id, last_error=None, next_attempt_at=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def mark_notice_failed(session: Session, notice_id: int, *, error: str, retry_at: dt.datetime) -> None:
    """Count a failed send and hold the notice until ``retry_at``. ``error`` must already be free of secrets."""
    session.execute(
        update(Notice)
        .where(Notice.id == notice_id, Notice.sent_at.is_(None))
        .values(attempts=Notice.attempts + 1, last_error=_clip(error), next_attempt_at=retry_at)
        .execution_options(synchronize_session=False)
    )


# -- pods ----------------------------------------------------------------------------------------------------------


def record_pod_intent(
    session: Session,
    *,
    job_id: int,
    role: PodRole,
    attempt: int,
    now: dt.datetime,
    gpu_type_id: str | None = None,
    cloud_type: str | None = None,
    spot: bool = False,
    data_center_id: str | None = None,
    container_disk_gb: int | None = None,
) -> Pod:
    """The pod's row, written (and to be committed by the caller) *before* asking RunPod for the pod.

    Idempotent: the same job, role and attempt return the existing row, so a restarted orchestrator finds the
    name it must look up at RunPod instead of creating a second pod.
    """
    existing = session.execute(
        select(Pod).where(Pod.job_id == job_id, Pod.role == role, Pod.attempt == attempt)
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    pod = Pod(
        job_id=job_id,
        role=role,
        attempt=attempt,
        name=pod_name(job_id, role, attempt),
        status=PodStatus.CREATING,
        gpu_type_id=gpu_type_id,
        cloud_type=cloud_type,
        spot=spot,
        data_center_id=data_center_id,
        # RunPod bills the container disk from the pod's creation on: the ledger needs its size from the start.
        container_disk_gb=container_disk_gb,
        created_at=now,
    )
    session.add(pod)
    session.flush()
    return pod


def set_pod_created(
    session: Session,
    pod_id: int,
    *,
    runpod_pod_id: str,
    cost_per_hr_micros: int,
    now: dt.datetime,
    api_created_at: dt.datetime | None = None,
) -> Pod:
    """Store the id RunPod answered (the moment it answers). Repeating it with the same id changes nothing."""
    if cost_per_hr_micros < 0:
        raise ValueError(f"cost_per_hr_micros must be ≥ 0, got {cost_per_hr_micros}")
    pod = _get_pod(session, pod_id)
    if pod.runpod_pod_id is not None:
        if pod.runpod_pod_id != runpod_pod_id:
            raise PodRecordError(
                f"pod {pod.name} already has RunPod id {pod.runpod_pod_id}; refusing to record {runpod_pod_id}"
            )
        return pod
    pod.runpod_pod_id = runpod_pod_id
    pod.cost_per_hr_micros = cost_per_hr_micros
    pod.api_created_at = api_created_at or now
    pod.last_seen_at = now
    session.flush()
    return pod


def set_pod_running(session: Session, pod_id: int, *, now: dt.datetime, uptime_seconds_api: int | None = None) -> Pod:
    pod = _get_pod(session, pod_id)
    if pod.status is PodStatus.CREATING:
        pod.status = PodStatus.RUNNING
    pod.started_at = pod.started_at or now
    _seen(pod, now, uptime_seconds_api)
    session.flush()
    return pod


def set_pod_seen(session: Session, pod_id: int, *, now: dt.datetime, uptime_seconds_api: int | None) -> Pod:
    """A look at the pod through the API (the tick's ``get_pod``): keep its uptime for the ledger's cross-check."""
    pod = _get_pod(session, pod_id)
    _seen(pod, now, uptime_seconds_api)
    session.flush()
    return pod


def set_pod_exited(session: Session, pod_id: int, *, now: dt.datetime, exit_reason: str | None = None) -> Pod:
    """The container stopped; the pod still exists (and bills) until it is terminated."""
    pod = _get_pod(session, pod_id)
    if pod.status in (PodStatus.CREATING, PodStatus.RUNNING):
        pod.status = PodStatus.EXITED
        pod.exit_reason = _clip(exit_reason) if exit_reason else pod.exit_reason
    pod.last_seen_at = now
    session.flush()
    return pod


def set_pod_lost(session: Session, pod_id: int, *, exit_reason: str) -> Pod:
    """RunPod no longer knows a pod we never terminated (its host was lost).

    The row stays live (not TERMINATED) until the orchestrator records when billing ended with
    ``set_pod_terminated``: only it knows whether to take the last look or the loss as the end.
    """
    pod = _get_pod(session, pod_id)
    if pod.status is not PodStatus.TERMINATED:
        pod.status = PodStatus.LOST
        pod.exit_reason = _clip(exit_reason)
    session.flush()
    return pod


def set_pod_create_requested(session: Session, pod_id: int, *, now: dt.datetime) -> Pod:
    """Note the moment the create call goes out (kept from the first try: RunPod bills from the first create)."""
    pod = _get_pod(session, pod_id)
    pod.create_requested_at = pod.create_requested_at or now
    session.flush()
    return pod


def set_pod_terminate_requested(session: Session, pod_id: int, *, now: dt.datetime) -> Pod:
    pod = _get_pod(session, pod_id)
    if pod.status is not PodStatus.TERMINATED:
        pod.status = PodStatus.TERMINATING
        pod.terminate_requested_at = pod.terminate_requested_at or now
    session.flush()
    return pod


def set_pod_terminated(
    session: Session,
    pod_id: int,
    *,
    now: dt.datetime,
    uptime_seconds_api: int | None = None,
    exit_reason: str | None = None,
) -> bool:
    """Billing for the pod ends at ``now``. True for the call that recorded it; later calls change nothing."""
    values: dict[str, Any] = {"status": PodStatus.TERMINATED, "terminated_at": now}
    if uptime_seconds_api is not None:
        values["uptime_seconds_api"] = uptime_seconds_api
    if exit_reason:
        values["exit_reason"] = func.coalesce(Pod.exit_reason, _clip(exit_reason))
    result = session.execute(
        update(Pod)
        .where(Pod.id == pod_id, Pod.terminated_at.is_(None))
        .values(values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        session.get(Pod, pod_id, populate_existing=True)
        return True
    _get_pod(session, pod_id)  # raises for an unknown pod, so a typo is not taken for "already terminated"
    return False


def _get_pod(session: Session, pod_id: int) -> Pod:
    pod = session.get(Pod, pod_id)
    if pod is None:
        raise PodRecordError(f"no pod row with id {pod_id}")
    return pod


def _seen(pod: Pod, now: dt.datetime, uptime_seconds_api: int | None) -> None:
    pod.last_seen_at = now
    if uptime_seconds_api is not None:
        pod.uptime_seconds_api = uptime_seconds_api
