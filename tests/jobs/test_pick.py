"""Picking the result epoch: what is refused and why, what the result then is, and that retention keeps it."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from jobs.pick import PickRefused, job_result, pick_epoch, picked_epochs
from jobs.states import JobStatus
from storage.artifacts import ObjectInfo, RetentionPolicy
from storage.models import Job
from tests.world.fixtures_db import T0, new_job


class Store:
    """Only `head`, over a set of keys."""

    def __init__(self, keys: set[str]) -> None:
        self.keys = keys

    def head(self, key: str) -> ObjectInfo | None:
        return ObjectInfo(key=key, size=1) if key in self.keys else None


def _job(session: Session, status: JobStatus, epochs: int = 3) -> Job:
    job_id = new_job(session, plan={"epochs": epochs})
    job = session.get(Job, job_id)
    assert job is not None
    job.status = status
    return job


def _checkpoints(job: Job, epochs: range) -> Store:
    return Store({f"jobs/j{job.id}/epochs/{e:06d}/kanachan-{e:06d}.safetensors" for e in epochs})


def test_a_finished_jobs_pick_becomes_its_result(db_session: Session) -> None:
    job = _job(db_session, JobStatus.SUCCEEDED)
    assert job_result(job).key == f"jobs/j{job.id}/final/kanachan.safetensors"
    assert job_result(job).describe() == "the final LoRA (epoch 3 of 3)"
    result = pick_epoch(db_session, _checkpoints(job, range(1, 4)), job.id, 2, user_id=42, now=T0)
    assert result.key == f"jobs/j{job.id}/epochs/000002/kanachan-000002.safetensors"
    assert result.describe() == "epoch 2 of 3 (picked by <@42>)"
    assert (job.picked_epoch, job.picked_by_user_id, job.picked_at) == (2, 42, T0)
    assert picked_epochs(db_session) == {f"j{job.id}": {2}}


@pytest.mark.parametrize(
    ("status", "epoch", "present", "message"),
    [
        (JobStatus.TRAINING, 2, range(1, 4), "is still training: pick an epoch once it has finished"),
        (JobStatus.FAILED_TRAINER, 2, range(1, 4), "ended failed_trainer; only a job that finished training"),
        (JobStatus.SUCCEEDED, 7, range(1, 4), "has epochs 1 to 3; there is no epoch 7"),
        (JobStatus.SUCCEEDED, 0, range(1, 4), "has epochs 1 to 3; there is no epoch 0"),
        (JobStatus.SUCCEEDED, 1, range(2, 4), "epoch 1's checkpoint of `j"),
    ],
)
def test_refusals_say_why(db_session: Session, status: JobStatus, epoch: int, present: range, message: str) -> None:
    job = _job(db_session, status)
    with pytest.raises(PickRefused, match=message.replace("(", r"\(").replace("`", "`")):
        pick_epoch(db_session, _checkpoints(job, present), job.id, epoch, user_id=42, now=T0)
    assert job.picked_epoch is None


def test_retention_never_sweeps_the_picked_epoch(db_session: Session) -> None:
    """The clean-up deletes old per-epoch checkpoints except the pinned ones; picks are what it pins."""
    job = _job(db_session, JobStatus.SUCCEEDED)
    pick_epoch(db_session, _checkpoints(job, range(1, 4)), job.id, 2, user_id=42, now=T0)
    policy = RetentionPolicy(checkpoint_max_age=dt.timedelta(days=14), pinned_epochs=picked_epochs(db_session))
    assert 2 in policy.pinned_epochs[f"j{job.id}"] and 1 not in policy.pinned_epochs[f"j{job.id}"]
