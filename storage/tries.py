"""Every write that changes a /try request or a test window: guarded compare-and-set updates, nothing committed here.

A request moves only along ``jobs.states.TRY_TRANSITIONS``: one ``UPDATE try_requests … WHERE id = :id AND status IN
(<legal sources>)``; when it matches no row the request was not where the caller thought and ``InvalidTryTransition``
says why (a double click on Confirm, a /cancel racing the tick). The window is opened with the job's SUCCEEDED
transition and closed once, by whichever of time, the button, /cancel or a restart comes first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import false, or_, select, update
from sqlalchemy.orm import Session

from jobs.states import TRY_TRANSITIONS, PodRole, TryStatus, try_sources
from storage.models import Pod, TestWindow, TryRequest

MAX_ERROR_CHARS = 500


class InvalidTryTransition(Exception):
    """A /try request was not in a status from which the requested move is legal."""


def create_try_request(
    session: Session,
    *,
    job_id: int,
    user_id: int,
    spec: Mapping[str, Any],
    estimate_s: int,
    estimate_micros: int,
    now: dt.datetime,
) -> TryRequest:
    """A PENDING request (its estimate shown, nothing rented), flushed so its id is known."""
    if estimate_s < 0 or estimate_micros < 0:
        raise ValueError(f"an estimate is ≥ 0, got {estimate_s} s and {estimate_micros} µ$")
    row = TryRequest(
        job_id=job_id,
        user_id=user_id,
        status=TryStatus.PENDING,
        spec_json=dict(spec),
        estimate_s=estimate_s,
        estimate_micros=estimate_micros,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def set_try_status(
    session: Session,
    request_id: int,
    to: TryStatus,
    *,
    now: dt.datetime,
    error: str | None = None,
    pod_id: int | None = None,
    result: Mapping[str, Any] | None = None,
) -> TryRequest:
    """Move request ``request_id`` to ``to`` if that is legal from where it is; its times follow the move."""
    values: dict[str, Any] = {"status": to}
    if to is TryStatus.CONFIRMED:
        values["confirmed_at"] = now
    if to is TryStatus.RUNNING:
        values["sent_at"] = now
    if to.is_final() or to in (TryStatus.DISMISSED, TryStatus.EXPIRED):
        values["finished_at"] = now
    if error is not None:
        values["error"] = error.strip()[:MAX_ERROR_CHARS]
    if pod_id is not None:
        values["pod_id"] = pod_id
    if result is not None:
        values["result_json"] = dict(result)
    sources = try_sources(to)
    statement = (
        update(TryRequest)
        .where(TryRequest.id == request_id, TryRequest.status.in_(sorted(sources, key=lambda s: s.value)))
        .values(values)
        .execution_options(synchronize_session=False)
    )
    if session.execute(statement).rowcount != 1:  # type: ignore[attr-defined]
        current = session.execute(select(TryRequest.status).where(TryRequest.id == request_id)).scalar_one_or_none()
        if current is None:
            raise InvalidTryTransition(f"there is no /try request t{request_id}")
        legal = ", ".join(sorted(s.name for s in TRY_TRANSITIONS[current])) or "nothing (it is final)"
        raise InvalidTryTransition(f"t{request_id} is {current.name}: it cannot go to {to.name} (from it: {legal})")
    row = session.get(TryRequest, request_id, populate_existing=True)
    assert row is not None  # the UPDATE above just matched it
    return row


def get_try_request(session: Session, request_id: int) -> TryRequest | None:
    return session.get(TryRequest, request_id)


def open_try_requests(session: Session, job_id: int | None = None) -> Sequence[TryRequest]:
    """CONFIRMED and RUNNING requests (of one job, or of all), oldest first."""
    statement = select(TryRequest).where(TryRequest.status.in_([TryStatus.CONFIRMED, TryStatus.RUNNING]))
    if job_id is not None:
        statement = statement.where(TryRequest.job_id == job_id)
    return session.execute(statement.order_by(TryRequest.id)).scalars().all()


def try_requests_of_job(session: Session, job_id: int) -> Sequence[TryRequest]:
    return (
        session.execute(select(TryRequest).where(TryRequest.job_id == job_id).order_by(TryRequest.id)).scalars().all()
    )


def reserved_try_micros(session: Session, job_ids: Sequence[int]) -> int:
    """The estimates of the confirmed requests of these jobs not finished yet: budgets count them as spent."""
    if not job_ids:
        return 0
    rows = session.execute(
        select(TryRequest.estimate_micros).where(
            TryRequest.job_id.in_(list(job_ids)), TryRequest.status.in_([TryStatus.CONFIRMED, TryStatus.RUNNING])
        )
    ).scalars()
    return sum(int(value) for value in rows)


# -- the test window -----------------------------------------------------------------------------------------------


def open_window(session: Session, *, job_id: int, pod_id: int, minutes: int, now: dt.datetime) -> TestWindow:
    """The job's window, opening now on its training pod (idempotent: the existing row is returned)."""
    if minutes <= 0:
        raise ValueError(f"a test window lasts at least a minute, got {minutes}")
    existing = window_of_job(session, job_id)
    if existing is not None:
        return existing
    until = now + dt.timedelta(minutes=minutes)
    window = TestWindow(job_id=job_id, pod_id=pod_id, minutes=minutes, opened_at=now, until_at=until)
    session.add(window)
    pod = session.get(Pod, pod_id)
    if pod is not None:
        pod.keep_until = until
    session.flush()
    return window


def close_window(session: Session, job_id: int, *, now: dt.datetime, by: str) -> TestWindow | None:
    """Close the job's open window (the first caller wins and names the cause); None when none is open."""
    result = session.execute(
        update(TestWindow)
        .where(TestWindow.job_id == job_id, TestWindow.closed_at.is_(None))
        .values(closed_at=now, closed_by=by[:200])
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    window = session.execute(select(TestWindow).where(TestWindow.job_id == job_id)).scalar_one()
    session.refresh(window)
    if window.pod_id is not None:
        pod = session.get(Pod, window.pod_id)
        if pod is not None:
            pod.keep_until = now
    return window


def window_of_job(session: Session, job_id: int) -> TestWindow | None:
    return session.execute(select(TestWindow).where(TestWindow.job_id == job_id)).scalar_one_or_none()


def open_windows(session: Session) -> Sequence[TestWindow]:
    return (
        session.execute(select(TestWindow).where(TestWindow.closed_at.is_(None)).order_by(TestWindow.id))
        .scalars()
        .all()
    )


def windows_by_pod(session: Session, pod_ids: Sequence[int]) -> dict[int, TestWindow]:
    """The window each of these pods served, if any (the ledger splits those pods' time at ``opened_at``)."""
    if not pod_ids:
        return {}
    rows = session.execute(select(TestWindow).where(TestWindow.pod_id.in_(list(pod_ids)))).scalars()
    return {int(w.pod_id): w for w in rows if w.pod_id is not None}


def pod_kept(session: Session, pod: Pod, now: dt.datetime) -> bool:
    """Whether a pod of a finished job is still legitimate: within its ``keep_until`` (a test window still open, a
    /try pod lingering for the next request), or serving an open /try request. The clean-up and the reaper ask this."""
    if pod.keep_until is not None and now < pod.keep_until:
        return True
    # A confirmed request has no pod yet while its /try pod is being created: that pod is legitimate too.
    waiting = TryRequest.pod_id.is_(None) if pod.role is PodRole.TRY else false()
    open_on_it = session.execute(
        select(TryRequest.id)
        .where(
            TryRequest.job_id == pod.job_id,
            or_(TryRequest.pod_id == pod.id, waiting),
            TryRequest.status.in_([TryStatus.CONFIRMED, TryStatus.RUNNING]),
        )
        .limit(1)
    ).first()
    return open_on_it is not None
