"""lorabot's Network Volumes as an operator sees them (`lorabot volumes`): one per data center, what cache each holds,
what it cost this month, and which cache entries are stale (`lorabot volumes prune`).

What prune does, and does not do (decided for safety): it *forgets* stale cache entries in the job store, so no
placement counts the volume as warm for them and the next job that needs one prepares it again on a CPU pod. It never
forgets an entry a live job may be using (any job not yet finished on that volume). The files stay on the volume:
removing them needs a pod mounting it, and RunPod bills a Network Volume by its provisioned size, not by the bytes
used, so deleting files frees room but saves no money. ``PRUNE_NOTE`` says so wherever prune reports.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from jobs.ledger import volumes_month_cost
from jobs.queue import JobPlan
from jobs.states import CacheKind
from storage.models import Job, Volume, VolumeCacheEntry

# A model or dataset no job has used for this long is stale (a new job that wants it prepares it again).
STALE_AFTER = dt.timedelta(days=30)
PRUNE_NOTE = (
    "prune forgets stale cache entries in lorabot's database: no job counts on them any more, and the next job that "
    "needs one prepares it again on a CPU pod. The files stay on the volume (removing them needs a pod mounting it), "
    "and RunPod bills a volume by its provisioned size, so the bill does not change"
)


@dataclass(frozen=True)
class CacheLine:
    entry_id: int
    kind: CacheKind
    key: str
    ready_at: dt.datetime
    last_used_at: dt.datetime | None
    in_use: bool  # a job that has not finished is on this volume and needs it
    stale: bool


@dataclass(frozen=True)
class VolumeLine:
    volume_id: int
    runpod_volume_id: str | None
    data_center_id: str
    size_gb: int
    month_micros: int  # what RunPod bills for it this month, up to now
    cache: tuple[CacheLine, ...]

    @property
    def stale(self) -> tuple[CacheLine, ...]:
        return tuple(line for line in self.cache if line.stale)


def list_volume_lines(session: Session, *, env_hash: str, now: dt.datetime, month: str) -> list[VolumeLine]:
    """Every live volume, oldest first, with its cache and this month's cost. ``env_hash`` is the environment
    recipe the bot builds today: any other environment on a volume is stale."""
    month_costs = {dc.data_center_id: dc.kept_micros for dc in volumes_month_cost(session, month, now=now).data_centers}
    lines = []
    for volume in session.scalars(select(Volume).where(Volume.deleted_at.is_(None)).order_by(Volume.id)):
        jobs = list(session.scalars(select(Job).where(Job.volume_id == volume.id)))
        cache = tuple(
            _cache_line(entry, jobs, env_hash=env_hash, now=now)
            for entry in session.scalars(
                select(VolumeCacheEntry)
                .where(VolumeCacheEntry.volume_id == volume.id)
                .order_by(VolumeCacheEntry.kind, VolumeCacheEntry.key)
            )
        )
        lines.append(
            VolumeLine(
                volume.id,
                volume.runpod_volume_id,
                volume.data_center_id,
                volume.size_gb,
                month_costs.get(volume.data_center_id, 0),
                cache,
            )
        )
    return lines


def _cache_line(entry: VolumeCacheEntry, jobs: list[Job], *, env_hash: str, now: dt.datetime) -> CacheLine:
    users = [job for job in jobs if _needs(job, entry)]
    in_use = any(not job.status.is_terminal() for job in users)
    last_used = max((job.created_at for job in users), default=None)
    # An environment other than today's recipe is never built on again; a model or dataset once unused a while.
    unused_since = last_used or entry.ready_at
    stale = entry.key != env_hash if entry.kind is CacheKind.ENV else unused_since < now - STALE_AFTER
    return CacheLine(entry.id, entry.kind, entry.key, entry.ready_at, last_used, in_use, stale and not in_use)


def _needs(job: Job, entry: VolumeCacheEntry) -> bool:
    if entry.kind is CacheKind.ENV:
        return job.env_hash == entry.key
    if entry.kind is CacheKind.DATASET:
        return job.dataset_sha256 == entry.key
    # The model's cache key starts with its file name (tokenizers may follow: orchestrator._model_cache_key).
    filename = JobPlan.from_json(job.plan_json).model.filename if job.plan_json else ""
    return bool(filename) and (entry.key == filename or entry.key.startswith(f"{filename}+"))


def forget_stale(session: Session, lines: list[VolumeLine]) -> int:
    """Forget the stale entries of these lines, each checked again in this transaction (a job that started
    meanwhile keeps what it uses). Returns how many were forgotten."""
    forgotten = 0
    for line in lines:
        jobs = list(session.scalars(select(Job).where(Job.volume_id == line.volume_id)))
        for cache in line.stale:
            entry = session.get(VolumeCacheEntry, cache.entry_id)
            if entry is None or any(not job.status.is_terminal() and _needs(job, entry) for job in jobs):
                continue
            session.execute(delete(VolumeCacheEntry).where(VolumeCacheEntry.id == entry.id))
            forgotten += 1
    session.flush()
    return forgotten
