"""lorabot's Network Volumes as an operator sees them (`lorabot volumes`): one per data center, what cache each holds,
what it cost this month, which cache entries are stale, which are pending deletion and what was freed
(`lorabot volumes prune`).

How prune deletes (RunPod has no file API: only a pod mounting a volume can delete its files). `lorabot volumes prune`
*marks* the stale entries (a ``CacheKind.PRUNE`` row per entry). The next cold job on that volume carries the marks
in its manifest (``prune_order``), and its CPU pod, already paid for, deletes those paths before it builds anything
(jobs/agent/prune.py checks each path again). When the stage is ready the bot reads what the agent freed
(``confirm_pruned``): an entry is forgotten only when every one of its paths is gone, and the operator's record says
how many bytes went (an operator notice, which `lorabot volumes` lists). A model entry covers its extra files and
the tokenizers fetched with it, a dataset entry the captioned copies made from it; such a shared file goes with the
last entry standing on it (``_VolumeFiles``). Never deleted: anything a live job on the volume uses (left out of the
order and named in its ``keep``), or the job's own environment, model files, tokenizers and dataset. A job
that needs a marked entry again takes it back (the mark is dropped); one that would be placed on the volume while a
CPU stage there may be deleting what it needs waits for that stage (``prune_in_flight``).

Deleting files frees room, so the volume need not grow; it does not lower the bill, which RunPod computes from the
provisioned size, and a volume never shrinks. ``PRUNE_NOTE`` says so wherever prune reports.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from jobs.agent.captions import parse_caption_spec
from jobs.captions import manifest_section as caption_manifest
from jobs.ledger import volumes_month_cost
from jobs.queue import JobPlan
from jobs.sdscripts import HUB_ENDPOINT, TOKENIZERS, TokenizerRepo
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
    # What deleting it removes, under {volume}/lorabot: its own files, plus the Flux extras, tokenizers and captioned
    # copies it brought that nothing staying on the volume (an entry not stale nor marked, a live job) still uses.
    paths: tuple[str, ...] = ()


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
    # The job whose CPU pod is on the volume now (it may be carrying out the marks), or None: marks then wait for the
    # next cold job placed there, however long that takes.
    cpu_stage_job: str | None = None

    @property
    def stale(self) -> tuple[CacheLine, ...]:
        return tuple(line for line in self.cache if line.stale)

    @property
    def pending(self) -> tuple[CacheLine, ...]:
        return tuple(line for line in self.cache if line.prune_requested_at is not None)

    @property
    def pending_since(self) -> dt.datetime | None:
        """When the oldest mark still waiting was made (None: nothing pending)."""
        return min((line.prune_requested_at for line in self.pending if line.prune_requested_at), default=None)


def list_volume_lines(session: Session, *, env_hash: str, now: dt.datetime, month: str) -> list[VolumeLine]:
    """Every live volume, oldest first, with its cache and this month's cost. ``env_hash`` is the environment
    recipe the bot builds today: any other environment on a volume is stale."""
    month_costs = {dc.data_center_id: dc.kept_micros for dc in volumes_month_cost(session, month, now=now).data_centers}
    lines = []
    for volume in session.scalars(select(Volume).where(Volume.deleted_at.is_(None)).order_by(Volume.id)):
        jobs = list(session.scalars(select(Job).where(Job.volume_id == volume.id)))
        marks = _marks(session, volume.id)
        entries = list(
            session.scalars(
                select(VolumeCacheEntry)
                .where(VolumeCacheEntry.volume_id == volume.id, VolumeCacheEntry.kind.in_(_PRUNABLE))
                .order_by(VolumeCacheEntry.kind, VolumeCacheEntry.key)
            )
        )
        cache = [
            _cache_line(entry, jobs, env_hash=env_hash, now=now, marked=marks.get((entry.kind, entry.key)))
            for entry in entries
        ]
        # What a prune would delete: everything stale or marked goes together, the rest stays.
        files = _VolumeFiles(session, jobs)
        going = {(line.kind, line.key) for line in cache if line.stale or line.prune_requested_at is not None}
        staying = [(line.kind, line.key) for line in cache if (line.kind, line.key) not in going]
        cache = [
            dataclasses.replace(line, paths=tuple(files.deletable(line.kind, line.key, staying))) for line in cache
        ]
        busy = _cpu_pod_on(session, volume, exclude_job=None)
        lines.append(
            VolumeLine(
                volume.id,
                volume.runpod_volume_id,
                volume.data_center_id,
                volume.size_gb,
                month_costs.get(volume.data_center_id, 0),
                tuple(cache),
                _freed(session, volume.id),
                None if busy is None else f"j{busy.job_id}",
            )
        )
    return lines


def _cpu_pod_on(session: Session, volume: Volume, *, exclude_job: int | None) -> Pod | None:
    """A CPU pod not yet terminated in the volume's data center (every CPU pod there mounts its volume)."""
    query = select(Pod).where(
        Pod.role == PodRole.CPU, Pod.status != PodStatus.TERMINATED, Pod.data_center_id == volume.data_center_id
    )
    if exclude_job is not None:
        query = query.where(Pod.job_id != exclude_job)
    return session.scalars(query.order_by(Pod.id)).first()


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


def tokenizers_suffix(repos: tuple[TokenizerRepo, ...]) -> str:
    """How a model's cache key names the tokenizers fetched with it (orchestrator._model_cache_key writes it; a test
    holds the two together)."""
    spec = json.dumps([dataclasses.asdict(repo) for repo in repos], sort_keys=True).encode()
    return f"tokenizers-{hashlib.sha256(spec).hexdigest()[:12]}"


def _tokenizer_paths(repos: tuple[TokenizerRepo, ...]) -> list[str]:
    # sd-scripts' --tokenizer_cache_dir layout (jobs.sdscripts.tokenizer_manifest's folder).
    return [f"hf/tokenizers/{repo.repo.replace('/', '_')}" for repo in repos]


def _key_tokenizers(model_key: str) -> list[str]:
    """The tokenizer folders a model entry was fetched with, read back from its key's suffix."""
    _, _, suffix = model_key.partition("+")
    for repos in TOKENIZERS.values():
        if suffix and suffix == tokenizers_suffix(repos):
            return _tokenizer_paths(repos)
    return []


def _model_file_paths(filename: str) -> list[str]:
    return [f"models/{filename}", f"models/.{filename}.verified"]


class _VolumeFiles:
    """Which files on a volume each cache entry and each job stand on, from the jobs that ran there.

    An entry's own files are only its (an environment's folder, a model's checkpoint, a dataset's folder); its shared
    files may also be another entry's or job's: a Flux model's extras (clip_l, t5xxl, ae), the tokenizers fetched with
    a model, and the captioned copy of a dataset (its pointer and zip under captioned/, and the captioned dataset's
    folder). A shared file goes with the last entry standing on it."""

    def __init__(self, session: Session, jobs: list[Job]) -> None:
        self.jobs = jobs
        self.plans = {job.id: JobPlan.from_json(job.plan_json) for job in jobs if job.plan_json}
        self.captioned: dict[int, str] = {}
        for notice in session.scalars(
            select(Notice).where(Notice.idempotency_key.in_([f"j{job.id}:captions" for job in jobs]))
        ):
            if notice.job_id is not None and notice.payload_json.get("sha256"):
                self.captioned[notice.job_id] = str(notice.payload_json["sha256"])

    def own(self, kind: CacheKind, key: str) -> list[str]:
        if kind is CacheKind.ENV:
            return [f"env/{key}"]
        if kind is CacheKind.DATASET:
            return [f"datasets/{key}"]
        return _model_file_paths(key.split("+", 1)[0])

    def shared(self, kind: CacheKind, key: str) -> list[str]:
        found: list[str] = []
        if kind is CacheKind.MODEL:
            filename = key.split("+", 1)[0]
            # The latest job's plan names the model's extras (the catalog's at that time).
            for job in sorted(self.jobs, key=lambda j: j.id, reverse=True):
                plan = self.plans.get(job.id)
                if plan is not None and plan.model.filename == filename:
                    for extra in plan.model.extra_files:
                        found += _model_file_paths(extra.filename)
                    break
            found += _key_tokenizers(key)
        elif kind is CacheKind.DATASET:
            for job in self.jobs:
                if job.dataset_sha256 == key:
                    found += self._captioned_paths(job)
        return list(dict.fromkeys(found))

    def _captioned_paths(self, job: Job) -> list[str]:
        plan = self.plans.get(job.id)
        if plan is None or not plan.captions:
            return []
        # The agent's own key for (source dataset, caption settings) (jobs/agent/captions.py CaptionSpec.cache_key).
        try:
            spec = parse_caption_spec(caption_manifest(plan.captions, HUB_ENDPOINT))
        except ValueError:  # settings from an older bot the agent would refuse: nothing was captioned with them
            spec = None
        found = []
        if spec is not None:
            key = spec.cache_key(job.dataset_sha256)
            found += [f"captioned/{key}.json", f"captioned/{key}.zip"]
        if job.id in self.captioned:
            found.append(f"datasets/{self.captioned[job.id]}")
        return found

    def job_paths(self, job: Job) -> list[str]:
        """Everything the job reads on the volume: its environment, model files and tokenizers, dataset and its
        captioned copy."""
        paths = [f"datasets/{job.dataset_sha256}", *self._captioned_paths(job)]
        if job.env_hash:
            paths.append(f"env/{job.env_hash}")
        plan = self.plans.get(job.id)
        if plan is not None:
            for file in (plan.model, *plan.model.extra_files):
                paths += _model_file_paths(file.filename)
            paths += _tokenizer_paths(TOKENIZERS.get(plan.script, ()))
        return paths

    def deletable(self, kind: CacheKind, key: str, staying: list[tuple[CacheKind, str]]) -> list[str]:
        """The entry's paths a prune removes: its own, and its shared ones that no staying entry and no live job
        stands on."""
        needed = {path for other in staying for path in (*self.own(*other), *self.shared(*other))}
        needed |= {path for job in self.jobs if not job.status.is_terminal() for path in self.job_paths(job)}
        own = self.own(kind, key)
        return own + [path for path in self.shared(kind, key) if path not in needed and path not in own]


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
    marks = _marks(session, volume_id)
    if not marks:
        return None  # the usual case, checked for every job placed: no more queries
    wanted = [(kind, key) for kind, key in marks if _needs(job, kind, key, env_hash=env_hash)]
    # A marked entry may also carry a file this job reads without being its entry: a Flux extra or a tokenizer of
    # another model, a captioned dataset trained on by hash. The job waits for a stage that may be deleting it too;
    # the mark stays (the next order leaves that file out while this job is live).
    jobs = list(session.scalars(select(Job).where(Job.volume_id == volume_id, Job.id != job.id)))
    files = _VolumeFiles(session, jobs)  # without this job: the order a pod may be carrying out did not know it
    staying = [
        (entry.kind, entry.key)
        for entry in session.scalars(
            select(VolumeCacheEntry).where(
                VolumeCacheEntry.volume_id == volume_id, VolumeCacheEntry.kind.in_(_PRUNABLE)
            )
        )
        if (entry.kind, entry.key) not in marks
    ]
    reads = set(_VolumeFiles(session, [job]).job_paths(job))
    shares = [mark for mark in marks if mark not in wanted and reads.intersection(files.deletable(*mark, staying))]
    if not wanted and not shares:
        return None
    volume = session.get(Volume, volume_id)
    assert volume is not None
    busy = _cpu_pod_on(session, volume, exclude_job=job.id)
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
    going: list[tuple[CacheKind, str]] = []
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
        going.append((kind, key))
    if not going:
        return None
    # A shared file (a Flux extra, a tokenizer, a captioned copy) goes only when no entry staying on the volume and
    # no live job stands on it; the entries deleted together may each name it (the agent finds it gone the 2nd time).
    files = _VolumeFiles(session, jobs)
    staying = [
        (entry.kind, entry.key)
        for entry in session.scalars(
            select(VolumeCacheEntry).where(
                VolumeCacheEntry.volume_id == volume_id, VolumeCacheEntry.kind.in_(_PRUNABLE)
            )
        )
        if (entry.kind, entry.key) not in going
    ]
    items = [
        {"kind": kind.value, "key": key, "paths": files.deletable(kind, key, staying)} for kind, key in sorted(going)
    ]
    live = [other for other in jobs if not other.status.is_terminal()]
    keep = sorted(
        {path for other in {job.id: job, **{o.id: o for o in live}}.values() for path in files.job_paths(other)}
    )
    return {"items": items, "keep": keep}


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
