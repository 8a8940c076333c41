"""`lorabot volumes`: each data center's volume, its cache and month; prune forgets only stale, unused entries."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from jobs.queue import JobPlan, ModelFileRef
from jobs.states import CacheKind, JobStatus
from jobs.volumes import forget_stale, list_volume_lines
from storage.models import Job
from storage.queries import is_cache_ready, mark_cache_ready, record_volume
from tests.world.fixtures_db import T0, new_job

DAY = dt.timedelta(days=1)
NOW = T0 + 60 * DAY


def _plan(filename: str) -> dict[str, object]:
    model = ModelFileRef(f"https://example.invalid/{filename}", filename, 1, None, None)
    return JobPlan("sdxl_train_network.py", [], {}, 1, 0, "out", "m", model, "gpu", {}, 1, 1).to_json()


def test_volumes_list_each_data_centers_cache_and_prune_forgets_only_stale_unused_entries(db_session: Session) -> None:
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

    assert forget_stale(db_session, lines) == 1
    assert not is_cache_ready(db_session, ro.id, CacheKind.MODEL, "old.safetensors")
    assert is_cache_ready(db_session, ro.id, CacheKind.ENV, "env-old")

    # Once the live job has finished (60 days ago), its outdated environment and its model are stale too and go.
    job.status = JobStatus.SUCCEEDED
    db_session.flush()
    lines = list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12")
    assert forget_stale(db_session, lines) == 2
    assert not is_cache_ready(db_session, ro.id, CacheKind.ENV, "env-old")
    assert not is_cache_ready(db_session, ro.id, CacheKind.MODEL, "busy.safetensors+tokenizers-abc")
    assert is_cache_ready(db_session, ro.id, CacheKind.ENV, "env-new")
