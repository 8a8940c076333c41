"""`lorabot volumes`: each data center's volume, its cache and month; prune marks only stale, unused entries for
deletion, the next CPU stage's manifest carries them (never a live job's), and the bot forgets an entry only when
that stage reports its files gone."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from jobs.queue import JobPlan, ModelFileRef
from jobs.states import CacheKind, JobStatus, NoticeKind, PodRole
from jobs.volumes import confirm_pruned, list_volume_lines, mark_stale, prune_in_flight, prune_order
from storage.models import Job, Notice, Pod
from storage.queries import is_cache_ready, mark_cache_ready, record_volume
from storage.transitions import record_pod_intent, set_pod_created, set_pod_terminated
from tests.world.fixtures_db import T0, new_job

DAY = dt.timedelta(days=1)
NOW = T0 + 60 * DAY


def _plan(filename: str) -> dict[str, object]:
    model = ModelFileRef(f"https://example.invalid/{filename}", filename, 1, None, None)
    return JobPlan("sdxl_train_network.py", [], {}, 1, 0, "out", "m", model, "gpu", {}, 1, 1).to_json()


def test_volumes_list_each_data_centers_cache_and_prune_marks_only_stale_unused_entries(db_session: Session) -> None:
    ro = record_volume(db_session, data_center_id="EU-RO-1", size_gb=30, now=T0, runpod_volume_id="vol-ro")
    ks = record_volume(db_session, data_center_id="US-KS-2", size_gb=50, now=T0, runpod_volume_id="vol-ks")
    mark_cache_ready(db_session, ro.id, CacheKind.ENV, "env-new", now=T0)
    mark_cache_ready(db_session, ro.id, CacheKind.ENV, "env-old", now=T0)
    mark_cache_ready(db_session, ro.id, CacheKind.MODEL, "old.safetensors", now=T0)
    mark_cache_ready(db_session, ro.id, CacheKind.MODEL, "busy.safetensors+tokenizers-abc", now=T0)
    mark_cache_ready(db_session, ks.id, CacheKind.MODEL, "fresh.safetensors", now=NOW - DAY)
    # A live job on EU-RO-1 still uses busy.safetensors and env-old (it started before the recipe changed).
    live = new_job(db_session, now=T0)
    job = db_session.get_one(Job, live)
    job.volume_id, job.env_hash, job.status, job.plan_json = (
        ro.id,
        "env-old",
        JobStatus.PREPARING,
        _plan("busy.safetensors"),
    )
    db_session.flush()

    lines = list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12")
    assert [(line.data_center_id, line.runpod_volume_id, line.size_gb) for line in lines] == [
        ("EU-RO-1", "vol-ro", 30),
        ("US-KS-2", "vol-ks", 50),
    ]
    states = {(c.kind, c.key): (c.in_use, c.stale) for c in lines[0].cache}
    assert states == {
        (CacheKind.ENV, "env-new"): (False, False),
        (CacheKind.ENV, "env-old"): (True, False),  # outdated, but a live job runs on it
        (CacheKind.MODEL, "old.safetensors"): (False, True),  # unused for 60 days
        (CacheKind.MODEL, "busy.safetensors+tokenizers-abc"): (True, False),
    }
    assert [c.stale for c in lines[1].cache] == [False]  # used yesterday
    assert lines[0].month_micros > 0 and lines[1].month_micros > lines[0].month_micros

    assert mark_stale(db_session, lines, now=NOW) == 1
    # Marked, not forgotten: the files are still on the volume until a CPU stage deletes them.
    assert is_cache_ready(db_session, ro.id, CacheKind.MODEL, "old.safetensors")
    lines = list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12")
    assert [(c.key, c.prune_requested_at) for c in lines[0].pending] == [("old.safetensors", NOW)]
    assert mark_stale(db_session, lines, now=NOW + DAY) == 0  # never marked twice

    # Once the live job has finished (60 days ago), its outdated environment and its model are stale too.
    job.status = JobStatus.SUCCEEDED
    db_session.flush()
    lines = list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12")
    assert mark_stale(db_session, lines, now=NOW) == 2
    lines = list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12")
    assert sorted(c.key for c in lines[0].pending) == ["busy.safetensors+tokenizers-abc", "env-old", "old.safetensors"]
    assert all(c.kind is not CacheKind.PRUNE for line in lines for c in line.cache)


def _cpu_pod(session: Session, job_id: int, dc: str, *, terminated: bool) -> None:
    pod = record_pod_intent(session, job_id=job_id, role=PodRole.CPU, attempt=1, now=NOW, data_center_id=dc)
    set_pod_created(session, pod.id, runpod_pod_id=f"rp-cpu-{job_id}", cost_per_hr_micros=80_000, now=NOW)
    if terminated:
        set_pod_terminated(session, pod.id, now=NOW + DAY / 24)


def test_the_next_cpu_stage_carries_the_marks_and_only_a_confirmed_deletion_is_forgotten(db_session: Session) -> None:
    ro = record_volume(db_session, data_center_id="EU-RO-1", size_gb=30, now=T0, runpod_volume_id="vol-ro")
    for kind, key in [
        (CacheKind.ENV, "env-old"),
        (CacheKind.ENV, "env-new"),
        (CacheKind.MODEL, "old.safetensors"),
        (CacheKind.MODEL, "busy.safetensors"),
        (CacheKind.DATASET, "d" * 64),
    ]:
        mark_cache_ready(db_session, ro.id, kind, key, now=T0)
    # A job that finished long ago used busy.safetensors and the dataset; all three stale entries get marked.
    old = db_session.get_one(Job, new_job(db_session, now=T0, dataset_sha256="d" * 64))
    old.volume_id, old.env_hash, old.status, old.plan_json = (
        ro.id,
        "env-old",
        JobStatus.SUCCEEDED,
        _plan("busy.safetensors"),
    )
    db_session.flush()
    lines = list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12")
    assert mark_stale(db_session, lines, now=NOW) == 4
    # Since then a live job on the volume trains on busy.safetensors (a warm GPU job, no CPU stage of its own).
    live = db_session.get_one(Job, new_job(db_session, now=NOW, dataset_sha256="f" * 64))
    live.volume_id, live.env_hash, live.status, live.plan_json = (
        ro.id,
        "env-new",
        JobStatus.TRAINING,
        _plan("busy.safetensors"),
    )
    # The next cold job on the volume: its CPU pod's manifest gets the marks, minus what a live job uses.
    cold = db_session.get_one(Job, new_job(db_session, now=NOW, dataset_sha256="c" * 64))
    cold.volume_id, cold.env_hash, cold.status, cold.plan_json = (
        ro.id,
        "env-new",
        JobStatus.PREPARING,
        _plan("new.safetensors"),
    )
    db_session.flush()

    order = prune_order(db_session, ro.id, cold.id, env_hash="env-new", now=NOW)
    assert order is not None
    assert order["items"] == [
        {"kind": "dataset", "key": "d" * 64, "paths": [f"datasets/{'d' * 64}"]},
        {"kind": "env", "key": "env-old", "paths": ["env/env-old"]},
        {
            "kind": "model",
            "key": "old.safetensors",
            "paths": ["models/old.safetensors", "models/.old.safetensors.verified"],
        },
    ]
    assert order["keep"] == sorted([
        f"datasets/{'c' * 64}", f"datasets/{'f' * 64}", "env/env-new",
        "models/.busy.safetensors.verified", "models/busy.safetensors",
        "models/.new.safetensors.verified", "models/new.safetensors",
    ])  # fmt: skip
    lines = list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12")
    assert "busy.safetensors" in {c.key for c in lines[0].pending}  # still marked: deleted after the live job

    # The agent deleted the environment and the dataset; it refused the model (say, in use on the pod's side).
    pruned = [
        {"kind": "env", "key": "env-old", "freed_bytes": 5_000_000_000, "deleted": ["env/env-old"], "refused": []},
        {"kind": "dataset", "key": "d" * 64, "freed_bytes": 0, "deleted": [f"datasets/{'d' * 64}"], "refused": []},
        {"kind": "model", "key": "old.safetensors", "freed_bytes": 0, "deleted": [],
         "refused": [{"path": "models/old.safetensors", "reason": "a symlink"}]},
    ]  # fmt: skip
    freed = confirm_pruned(db_session, ro.id, job_id=cold.id, pod_name="lorabot-j3-cpu", pruned=pruned, now=NOW)
    assert freed == 5_000_000_000
    assert not is_cache_ready(db_session, ro.id, CacheKind.ENV, "env-old")
    assert not is_cache_ready(db_session, ro.id, CacheKind.DATASET, "d" * 64)
    assert is_cache_ready(db_session, ro.id, CacheKind.MODEL, "old.safetensors")  # kept, its mark dropped
    lines = list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12")
    assert [c.key for c in lines[0].pending] == ["busy.safetensors"]
    assert [(f.job, f.kind, f.key, f.freed_bytes, f.refused) for f in lines[0].freed] == [
        (f"j{cold.id}", "env", "env-old", 5_000_000_000, None),
        (f"j{cold.id}", "dataset", "d" * 64, 0, None),
        (f"j{cold.id}", "model", "old.safetensors", 0, "models/old.safetensors: a symlink"),
    ]
    # The status is read again every tick: nothing changes twice, one operator notice.
    assert confirm_pruned(db_session, ro.id, job_id=cold.id, pod_name="lorabot-j3-cpu", pruned=pruned, now=NOW) == 0
    notices = db_session.query(Notice).filter(Notice.idempotency_key.startswith(f"volume:{ro.id}:pruned:")).all()
    assert [(n.job_id, n.kind) for n in notices] == [(None, NoticeKind.INFO)]
    assert "deleted env env-old, dataset" in notices[0].payload_json["text"]


def test_a_job_needing_a_marked_entry_waits_for_a_cpu_stage_on_the_volume_then_takes_it_back(
    db_session: Session,
) -> None:
    ro = record_volume(db_session, data_center_id="EU-RO-1", size_gb=30, now=T0, runpod_volume_id="vol-ro")
    mark_cache_ready(db_session, ro.id, CacheKind.MODEL, "old.safetensors", now=T0)
    lines = list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12")
    assert mark_stale(db_session, lines, now=NOW) == 1
    other = new_job(db_session, now=NOW)
    db_session.get_one(Job, other).volume_id = ro.id
    _cpu_pod(db_session, other, "EU-RO-1", terminated=False)  # its manifest may be deleting the model now
    queued = db_session.get_one(Job, new_job(db_session, now=NOW))
    queued.plan_json = _plan("old.safetensors")
    db_session.flush()

    assert prune_in_flight(db_session, ro.id, queued, env_hash="env-new") == f"j{other}"
    # Something it does not use never holds it back.
    unrelated = db_session.get_one(Job, new_job(db_session, now=NOW))
    unrelated.plan_json = _plan("another.safetensors")
    assert prune_in_flight(db_session, ro.id, unrelated, env_hash="env-new") is None

    db_session.query(Job).filter(Job.id == other).one().status = JobStatus.SUCCEEDED
    for pod in db_session.query(Pod).filter(Pod.job_id == other):
        set_pod_terminated(db_session, pod.id, now=NOW + DAY / 24)
    assert prune_in_flight(db_session, ro.id, queued, env_hash="env-new") is None
    # The job took the model back: no longer marked, still ready.
    lines = list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12")
    assert lines[0].pending == () and is_cache_ready(db_session, ro.id, CacheKind.MODEL, "old.safetensors")
