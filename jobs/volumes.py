"""lorabot's Network Volumes as an operator sees them (`lorabot volumes`): one per data center, what cache each holds,
what it cost this month, which cache entries are stale, which are pending deletion and what was freed
(`lorabot volumes prune`).

How prune deletes (RunPod has no file API: only a pod mounting a volume can delete its files). `lorabot volumes prune`
*marks* the stale entries (a ``CacheKind.PRUNE`` row per entry). The next cold job on that volume carries the marks
in its manifest (``prune_order``), and its CPU pod, already paid for, deletes those paths before it builds anything
(jobs/agent/prune.py checks each path again). When the stage is ready the bot reads what the agent freed
(``confirm_pruned``): an entry is forgotten only when every one of its paths is gone, and the operator's record says
how many bytes went (an operator notice, which `lorabot volumes` lists). Never deleted: anything a live job on the
volume uses (left out of the order and named in its ``keep``), or the job's own environment, model and dataset. A job
that needs a marked entry again takes it back (the mark is dropped); one that would be placed on the volume while a
CPU stage there may be deleting what it needs waits for that stage (``prune_in_flight``).

Deleting files frees room, so the volume need not grow; it does not lower the bill, which RunPod computes from the
provisioned size, and a volume never shrinks. ``PRUNE_NOTE`` says so wherever prune reports.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from jobs.ledger import volumes_month_cost
from jobs.queue import JobPlan
from jobs.states import CacheKind, NoticeKind, PodRole, PodStatus
from storage.models import Job, Notice, Pod, Volume, VolumeCacheEntry
from storage.transitions import add_notice

# A model or dataset no job has used for this long is stale (a new job that wants it prepares it again).
STALE_AFTER = dt.timedelta(days=30)
PRUNE_NOTE = (
    "prune marks stale cache entries for deletion: the next CPU stage on that volume deletes their files before it "
    "builds anything (never one a live job uses) and reports what it freed; lorabot forgets an entry once its files "
    "are gone. Freed room means the volume need not grow; RunPod bills a volume by its provisioned size, so the bill "
    "does not go down"
)
# The cache entries a mark can name, and their paths under {volume}/lorabot (docs/CONTRACTS.md, the volume layout).
_PRUNABLE = (CacheKind.ENV, CacheKind.MODEL, CacheKind.DATASET)


@dataclass(frozen=True)
class CacheLine:
    entry_id: int
    kind: CacheKind
    key: str
    ready_at: dt.datetime
    last_used_at: dt.datetime | None
    in_use: bool  # a job that has not finished is on this volume and needs it
    stale: bool
    # When `lorabot volumes prune` marked it for deletion (None: not marked).
    prune_requested_at: dt.datetime | None = None


@dataclass(frozen=True)
class FreedLine:
    """What a CPU stage deleted (or refused to) for prune, from the operator's record of it."""

    at: dt.datetime
    job: str
    kind: str
    key: str
    freed_bytes: int
    refused: str | None  # why the entry was kept, when it was


@dataclass(frozen=True)
class VolumeLine:
    volume_id: int
    runpod_volume_id: str | None
    data_center_id: str
    size_gb: int
    month_micros: int  # what RunPod bills for it this month, up to now
    cache: tuple[CacheLine, ...]
    freed: tuple[FreedLine, ...] = ()

    @property
    def stale(self) -> tuple[CacheLine, ...]:
        return tuple(line for line in self.cache if line.stale)

    @property
    def pending(self) -> tuple[CacheLine, ...]:
        return tuple(line for line in self.cache if line.prune_requested_at is not None)


def list_volume_lines(session: Session, *, env_hash: str, now: dt.datetime, month: str) -> list[VolumeLine]:
    """Every live volume, oldest first, with its cache and this month's cost. ``env_hash`` is the environment
    recipe the bot builds today: any other environment on a volume is stale."""
    month_costs = {dc.data_center_id: dc.kept_micros for dc in volumes_month_cost(session, month, now=now).data_centers}
    lines = []
    for volume in session.scalars(select(Volume).where(Volume.deleted_at.is_(None)).order_by(Volume.id)):
        jobs = list(session.scalars(select(Job).where(Job.volume_id == volume.id)))
        marks = _marks(session, volume.id)
        cache = tuple(
            _cache_line(entry, jobs, env_hash=env_hash, now=now, marked=marks.get((entry.kind, entry.key)))
            for entry in session.scalars(
                select(VolumeCacheEntry)
                .where(VolumeCacheEntry.volume_id == volume.id, VolumeCacheEntry.kind.in_(_PRUNABLE))
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
                _freed(session, volume.id),
            )
        )
    return lines


def _cache_line(
    entry: VolumeCacheEntry,
    jobs: list[Job],
    *,
    env_hash: str,
    now: dt.datetime,
    marked: dt.datetime | None = None,
) -> CacheLine:
    users = [job for job in jobs if _needs(job, entry.kind, entry.key)]
    in_use = any(not job.status.is_terminal() for job in users)
    last_used = max((job.created_at for job in users), default=None)
    # An environment other than today's recipe is never built on again; a model or dataset once unused a while.
    unused_since = last_used or entry.ready_at
    stale = entry.key != env_hash if entry.kind is CacheKind.ENV else unused_since < now - STALE_AFTER
    return CacheLine(entry.id, entry.kind, entry.key, entry.ready_at, last_used, in_use, stale and not in_use, marked)


def _needs(job: Job, kind: CacheKind, key: str, *, env_hash: str | None = None) -> bool:
    """Does the job use this cache entry? ``env_hash``: its environment when it has none recorded yet (a queued job
    gets the bot's recipe when it starts)."""
    if kind is CacheKind.ENV:
        return (job.env_hash or env_hash) == key
    if kind is CacheKind.DATASET:
        return job.dataset_sha256 == key
    # The model's cache key starts with its file name (tokenizers may follow: orchestrator._model_cache_key).
    filename = _model_filename(job)
    return bool(filename) and (key == filename or key.startswith(f"{filename}+"))


def _model_filename(job: Job) -> str:
    return JobPlan.from_json(job.plan_json).model.filename if job.plan_json else ""


def entry_paths(kind: CacheKind, key: str) -> list[str]:
    """Where an entry's files are, relative to {volume}/lorabot. A model is its file and its `.verified` marker (a
    Flux model's extra files may be shared with another model and stay; so do the tokenizers, shared by all)."""
    if kind is CacheKind.ENV:
        return [f"env/{key}"]
    if kind is CacheKind.DATASET:
        return [f"datasets/{key}"]
    filename = key.split("+", 1)[0]
    return [f"models/{filename}", f"models/.{filename}.verified"]


def _job_paths(job: Job) -> list[str]:
    """Everything the job reads on the volume: its environment, model files and dataset."""
    paths = [f"datasets/{job.dataset_sha256}"]
    if job.env_hash:
        paths.append(f"env/{job.env_hash}")
    if job.plan_json:
        model = JobPlan.from_json(job.plan_json).model
        for file in (model, *model.extra_files):
            paths += [f"models/{file.filename}", f"models/.{file.filename}.verified"]
    return paths


def _mark_key(kind: CacheKind, key: str) -> str:
    return f"{kind.value}:{key}"


def _marks(session: Session, volume_id: int) -> dict[tuple[CacheKind, str], dt.datetime]:
    """(kind, key) of every entry marked for deletion on the volume → when it was marked."""
    found = {}
    for mark in session.scalars(
        select(VolumeCacheEntry).where(
            VolumeCacheEntry.volume_id == volume_id, VolumeCacheEntry.kind == CacheKind.PRUNE
        )
    ):
        kind, _, key = mark.key.partition(":")
        found[(CacheKind(kind), key)] = mark.ready_at
    return found


def _drop(session: Session, volume_id: int, kind: CacheKind, key: str) -> None:
    session.execute(
        delete(VolumeCacheEntry).where(
            VolumeCacheEntry.volume_id == volume_id, VolumeCacheEntry.kind == kind, VolumeCacheEntry.key == key
        )
    )


def _freed(session: Session, volume_id: int) -> tuple[FreedLine, ...]:
    """The operator's record of every prune a CPU stage carried out on the volume, oldest first."""
    lines = []
    for notice in session.scalars(
        select(Notice).where(Notice.idempotency_key.startswith(f"volume:{volume_id}:pruned:")).order_by(Notice.id)
    ):
        payload = notice.payload_json
        for item in payload.get("freed") or []:
            lines.append(
                FreedLine(notice.created_at, payload.get("job", "?"), item["kind"], item["key"], item["bytes"], None)
            )
        for item in payload.get("refused") or []:
            lines.append(
                FreedLine(notice.created_at, payload.get("job", "?"), item["kind"], item["key"], 0, item["reason"])
            )
    return tuple(lines)


def mark_stale(session: Session, lines: list[VolumeLine], *, now: dt.datetime) -> int:
    """Mark the stale entries of these lines for deletion, each checked again in this transaction (a job that
    started meanwhile keeps what it uses). Returns how many were marked now (a marked entry is not marked twice)."""
    marked = 0
    for line in lines:
        jobs = list(session.scalars(select(Job).where(Job.volume_id == line.volume_id)))
        already = _marks(session, line.volume_id)
        for cache in line.stale:
            entry = session.get(VolumeCacheEntry, cache.entry_id)
            if entry is None or (entry.kind, entry.key) in already:
                continue
            if any(not job.status.is_terminal() and _needs(job, entry.kind, entry.key) for job in jobs):
                continue
            session.add(
                VolumeCacheEntry(
                    volume_id=line.volume_id, kind=CacheKind.PRUNE, key=_mark_key(entry.kind, entry.key), ready_at=now
                )
            )
            marked += 1
    session.flush()
    return marked


def prune_in_flight(session: Session, volume_id: int, job: Job, *, env_hash: str) -> str | None:
    """Before a job is placed on this volume: is something it uses marked for deletion while another job's CPU pod
    is on the volume (that pod's manifest may be deleting it right now)? Then the job waits for that stage: the
    public id of the job it waits for. Otherwise the job takes back what it uses (those marks are dropped), None."""
    wanted = [(kind, key) for kind, key in _marks(session, volume_id) if _needs(job, kind, key, env_hash=env_hash)]
    if not wanted:
        return None
    volume = session.get(Volume, volume_id)
    assert volume is not None
    busy = session.scalars(
        select(Pod).where(
            Pod.role == PodRole.CPU,
            Pod.status != PodStatus.TERMINATED,
            Pod.data_center_id == volume.data_center_id,
            Pod.job_id != job.id,
        )
    ).first()
    if busy is not None:
        return f"j{busy.job_id}"
    for kind, key in wanted:
        _drop(session, volume_id, CacheKind.PRUNE, _mark_key(kind, key))
    return None


def prune_order(
    session: Session, volume_id: int, job_id: int, *, env_hash: str, now: dt.datetime
) -> dict[str, Any] | None:
    """The manifest's `prune` section for the CPU stage of ``job_id`` on this volume (docs/CONTRACTS.md), or None.

    Each mark is checked again: an entry already forgotten, or that this job uses, or that was used since it was
    marked, loses its mark; one a live job uses stays marked for a later stage. ``keep`` lists every path the live
    jobs on the volume (this one included) read, for the agent to refuse."""
    job = session.get(Job, job_id)
    assert job is not None
    jobs = list(session.scalars(select(Job).where(Job.volume_id == volume_id)))
    items = []
    for (kind, key), marked_at in _marks(session, volume_id).items():
        entry = session.scalars(
            select(VolumeCacheEntry).where(
                VolumeCacheEntry.volume_id == volume_id, VolumeCacheEntry.kind == kind, VolumeCacheEntry.key == key
            )
        ).first()
        line = None if entry is None else _cache_line(entry, jobs, env_hash=env_hash, now=now, marked=marked_at)
        if line is not None and line.in_use and not _needs(job, kind, key, env_hash=env_hash):
            continue  # a live job runs on it: deleted by a stage after that job
        if entry is None or line is None or not line.stale or _needs(job, kind, key, env_hash=env_hash):
            _drop(session, volume_id, CacheKind.PRUNE, _mark_key(kind, key))
            continue
        items.append({"kind": kind.value, "key": key, "paths": entry_paths(kind, key)})
    if not items:
        return None
    live = [other for other in jobs if not other.status.is_terminal()]
    keep = sorted({path for other in {job.id: job, **{o.id: o for o in live}}.values() for path in _job_paths(other)})
    return {"items": sorted(items, key=lambda item: (item["kind"], item["key"])), "keep": keep}


def confirm_pruned(
    session: Session, volume_id: int, *, job_id: int, pod_name: str, pruned: Any, now: dt.datetime
) -> int:
    """What a CPU stage reports it deleted (``status.pruned``): an entry whose paths are all gone is forgotten with its
    mark; one with a refused path keeps its entry and loses its mark (the reason is recorded). The operator's record
    is one notice per CPU pod (``lorabot volumes`` lists it). Returns the bytes freed; repeating it changes nothing."""
    if not isinstance(pruned, list):
        return 0
    volume = session.get(Volume, volume_id)
    assert volume is not None
    marks = _marks(session, volume_id)
    freed: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    for result in pruned:
        if not isinstance(result, dict) or result.get("kind") not in {k.value for k in _PRUNABLE}:
            continue
        kind, key = CacheKind(result["kind"]), str(result.get("key"))
        if (kind, key) not in marks:
            continue  # confirmed already (the status is read again every tick), or never asked for
        _drop(session, volume_id, CacheKind.PRUNE, _mark_key(kind, key))
        reasons = [f"{r.get('path')}: {r.get('reason')}" for r in result.get("refused") or [] if isinstance(r, dict)]
        if reasons:
            refused.append({"kind": kind.value, "key": key, "reason": "; ".join(reasons)})
        else:
            _drop(session, volume_id, kind, key)
            freed.append({"kind": kind.value, "key": key, "bytes": int(result.get("freed_bytes") or 0)})
    if not freed and not refused:
        return 0
    total = sum(int(item["bytes"]) for item in freed)
    deleted = ", ".join(f"{item['kind']} {item['key']}" for item in freed) or "nothing"
    kept = f"; kept {', '.join(str(item['kind']) + ' ' + str(item['key']) for item in refused)}" if refused else ""
    add_notice(
        session,
        job_id=None,
        kind=NoticeKind.INFO,
        key=f"volume:{volume_id}:pruned:{pod_name}",
        now=now,
        payload={
            "text": f"{volume.data_center_id} volume: the CPU pod of j{job_id} deleted {deleted} "
            f"({total:,} bytes freed){kept}",
            "volume_id": volume_id,
            "data_center": volume.data_center_id,
            "job": f"j{job_id}",
            "freed": freed,
            "refused": refused,
            "freed_bytes": total,
        },
    )
    session.flush()
    return total
