"""The job's result: the final LoRA (its last epoch), or the epoch its owner or an admin picked instead.

Seed 000's author settled on epoch 6 of 10 after comparing them; the pick makes that choice part of the job, so the
final link, `/lora job`, `/cost`'s result line and the thread's summary all name the same file. The retention keeps
a picked epoch's checkpoint however old it is (`picked_epochs`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from jobs.manifest import JobKeys
from jobs.states import JobStatus
from storage.artifacts import ObjectInfo
from storage.db import session_scope
from storage.models import Job


class PickRefused(Exception):
    """Why this epoch cannot become the result; the text is shown to the user as is."""


class CheckpointStore(Protocol):
    def head(self, key: str) -> ObjectInfo | None: ...


@dataclass(frozen=True)
class JobResult:
    """The file that is the job's result right now."""

    key: str
    # None: the final LoRA. Otherwise the picked epoch, by whom and when.
    epoch: int | None
    last_epoch: int
    picked_by_user_id: int | None = None
    picked_at: dt.datetime | None = None

    @property
    def picked(self) -> bool:
        return self.epoch is not None

    def describe(self) -> str:
        """`epoch 2 of 3 (picked by <@5>)` or `the final LoRA (epoch 3 of 3)`: a mention renders as the user's name
        and pings nobody inside an embed."""
        if self.epoch is None:
            return f"the final LoRA (epoch {self.last_epoch} of {self.last_epoch})"
        by = f" by <@{self.picked_by_user_id}>" if self.picked_by_user_id else ""
        return f"epoch {self.epoch} of {self.last_epoch} (picked{by})"


def planned_epochs(job: Job) -> int:
    return int((job.plan_json or {}).get("epochs") or 0)


def job_result(job: Job) -> JobResult:
    keys = JobKeys(f"j{job.id}", job.output_name)
    last = planned_epochs(job)
    if job.picked_epoch is None:
        return JobResult(key=keys.final, epoch=None, last_epoch=last)
    return JobResult(
        key=keys.checkpoint(job.picked_epoch),
        epoch=job.picked_epoch,
        last_epoch=last,
        picked_by_user_id=job.picked_by_user_id,
        picked_at=job.picked_at,
    )


def check_pick(job: Job, store: CheckpointStore, epoch: int) -> None:
    """Refuse a pick the job cannot take: it has not finished, it has no such epoch, or that epoch's checkpoint is
    gone. Blocking (asks the store)."""
    public = f"j{job.id}"
    if job.status is not JobStatus.SUCCEEDED:
        if job.status.is_terminal():
            raise PickRefused(
                f"`{public}` ended {job.status.value}; only a job that finished training has a result to pick."
            )
        raise PickRefused(
            f"`{public}` is still {job.status.value}: pick an epoch once it has finished (the final message gets "
            "the menu)."
        )
    last = planned_epochs(job)
    if not 1 <= epoch <= last:
        raise PickRefused(f"`{public}` has epochs 1 to {last}; there is no epoch {epoch}.")
    if store.head(JobKeys(public, job.output_name).checkpoint(epoch)) is None:
        raise PickRefused(
            f"epoch {epoch}'s checkpoint of `{public}` is no longer in the store (unpicked epochs expire): "
            "pick another epoch."
        )


def pick_epoch(
    session: Session, store: CheckpointStore, job_id: int, epoch: int, *, user_id: int, now: dt.datetime
) -> JobResult:
    """Make `epoch` the job's result (picking the last epoch is allowed: it names that checkpoint explicitly)."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise PickRefused(f"there is no job `j{job_id}`.")
    check_pick(job, store, epoch)
    job.picked_epoch = epoch
    job.picked_by_user_id = user_id
    job.picked_at = now
    job.updated_at = now
    return job_result(job)


def picked_epochs(session: Session) -> dict[str, set[int]]:
    """`{"j5": {2}}` for every job with a picked epoch: the retention's pinned epochs."""
    rows = session.execute(select(Job.id, Job.picked_epoch).where(Job.picked_epoch.is_not(None))).all()
    return {f"j{job_id}": {int(epoch)} for job_id, epoch in rows}


def pinned_by_picks(sessions: sessionmaker[Session]) -> dict[str, set[int]]:
    """`picked_epochs` in its own transaction, for the retention job (blocking: run it in a thread)."""
    with session_scope(sessions) as s:
        return picked_epochs(s)


__all__ = ["JobResult", "PickRefused", "check_pick", "job_result", "pick_epoch", "picked_epochs", "pinned_by_picks"]
