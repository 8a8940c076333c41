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
        # the SDXL trainer's tokenizers, which the live jobs load from the volume
        "hf/tokenizers/laion_CLIP-ViT-bigG-14-laion2B-39B-b160k", "hf/tokenizers/openai_clip-vit-large-patch14",
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


def _flux_plan(
    filename: str, extras: tuple[str, ...], *, captions: dict[str, object] | None = None
) -> dict[str, object]:
    model = ModelFileRef(
        f"https://example.invalid/{filename}",
        filename,
        1,
        None,
        None,
        tuple(ModelFileRef(f"https://example.invalid/{name}", name, 1, None, None) for name in extras),
    )
    plan = JobPlan("flux_train_network.py", [], {}, 1, 0, "out", "m", model, "gpu", {}, 1, 1, captions=captions)
    return plan.to_json()


def _ran(
    session: Session, volume_id: int, plan: dict[str, object], *, status: JobStatus, now: dt.datetime, **kw: object
) -> Job:
    job = session.get_one(Job, new_job(session, now=now, **kw))
    job.volume_id, job.env_hash, job.status, job.plan_json = volume_id, "env-new", status, plan
    session.flush()
    return job


def _files(path: str) -> list[str]:
    return [f"models/{path}", f"models/.{path}.verified"]


T5 = "hf/tokenizers/google_t5-v1_1-xxl"
CLIP_L = "hf/tokenizers/openai_clip-vit-large-patch14"


def test_the_model_key_names_its_tokenizers_the_way_the_orchestrator_writes_it() -> None:
    from jobs.orchestrator import _model_cache_key
    from jobs.volumes import _key_tokenizers

    for script, folders in [
        ("train_network.py", [CLIP_L]),
        ("sdxl_train_network.py", [CLIP_L, "hf/tokenizers/laion_CLIP-ViT-bigG-14-laion2B-39B-b160k"]),
        ("flux_train_network.py", [CLIP_L, T5]),
    ]:
        plan = JobPlan.from_json({**_plan("m.safetensors"), "script": script})
        assert _key_tokenizers(_model_cache_key(plan)) == folders, script
    assert _key_tokenizers("m.safetensors") == [] and _key_tokenizers("m.safetensors+tokenizers-000000000000") == []


def test_a_flux_model_entry_covers_its_extras_and_tokenizers_except_what_a_staying_model_or_live_job_uses(
    db_session: Session,
) -> None:
    from jobs.orchestrator import _model_cache_key

    ro = record_volume(db_session, data_center_id="EU-RO-1", size_gb=30, now=T0, runpod_volume_id="vol-ro")
    old = _flux_plan("flux-old.safetensors", ("clip_l.safetensors", "t5xxl.safetensors", "ae-old.safetensors"))
    dev = _flux_plan("flux-dev.safetensors", ("clip_l.safetensors", "t5xxl.safetensors", "ae.safetensors"))
    sd15 = JobPlan.from_json({**_plan("sd15.safetensors"), "script": "train_network.py"})
    old_key, dev_key = (_model_cache_key(JobPlan.from_json(p)) for p in (old, dev))
    mark_cache_ready(db_session, ro.id, CacheKind.MODEL, old_key, now=T0)
    mark_cache_ready(db_session, ro.id, CacheKind.MODEL, dev_key, now=NOW - DAY)
    mark_cache_ready(db_session, ro.id, CacheKind.MODEL, _model_cache_key(sd15), now=T0)
    _ran(db_session, ro.id, old, status=JobStatus.SUCCEEDED, now=T0)
    _ran(db_session, ro.id, sd15.to_json(), status=JobStatus.SUCCEEDED, now=T0)
    recent = _ran(db_session, ro.id, dev, status=JobStatus.SUCCEEDED, now=NOW - DAY)

    # flux-dev (used yesterday) stays: clip_l, t5xxl and both tokenizers are its too; only ae-old goes with flux-old.
    lines = list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12")
    paths = {c.key: c.paths for c in lines[0].cache if c.stale}
    assert paths == {
        old_key: (*_files("flux-old.safetensors"), *_files("ae-old.safetensors")),
        _model_cache_key(sd15): tuple(_files("sd15.safetensors")),  # CLIP-L stays: flux-dev loads it
    }
    assert mark_stale(db_session, lines, now=NOW) == 2
    cold = _ran(
        db_session, ro.id, _plan("sdxl.safetensors"), status=JobStatus.PREPARING, now=NOW, dataset_sha256="c" * 64
    )
    order = prune_order(db_session, ro.id, cold.id, env_hash="env-new", now=NOW)
    assert order is not None
    assert {i["key"]: i["paths"] for i in order["items"]} == {k: list(v) for k, v in paths.items()}

    # A month on, flux-dev is stale too and nothing else needs its files: all of them go, the tokenizers with them
    # (CLIP-L stays while the live SDXL job loads it; the keep list names it for the agent).
    cold.status = JobStatus.SUCCEEDED
    recent.created_at = T0
    live = _ran(db_session, ro.id, _plan("sdxl.safetensors"), status=JobStatus.TRAINING, now=NOW)
    lines = list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12")
    assert mark_stale(db_session, lines, now=NOW) == 1
    mark_cache_ready(
        db_session, ro.id, CacheKind.MODEL, _model_cache_key(JobPlan.from_json(_plan("sdxl.safetensors"))), now=NOW
    )
    order = prune_order(db_session, ro.id, live.id, env_hash="env-new", now=NOW)
    assert order is not None
    items = {i["key"]: i["paths"] for i in order["items"]}
    assert items[dev_key] == [
        *_files("flux-dev.safetensors"), *_files("clip_l.safetensors"), *_files("t5xxl.safetensors"),
        *_files("ae.safetensors"), T5,
    ]  # fmt: skip
    assert CLIP_L in order["keep"] and CLIP_L not in [p for ps in items.values() for p in ps]


def test_a_dataset_entry_covers_its_captioned_copy_unless_a_staying_entry_or_live_job_trains_on_it(
    db_session: Session,
) -> None:
    from jobs.agent.captions import parse_caption_spec
    from jobs.captions import CaptionPlan, manifest_section
    from jobs.sdscripts import HUB_ENDPOINT
    from storage.transitions import add_notice
    from tests.jobs.data.specs import spec

    ro = record_volume(db_session, data_center_id="EU-RO-1", size_gb=30, now=T0, runpod_volume_id="vol-ro")
    settings = CaptionPlan("keep", 6, 6, 0.35, 1.01, ()).job_settings(spec(trigger="kana", class_word="girl"))
    assert settings is not None
    source, captioned, other = "a" * 64, "c" * 64, "e" * 64
    key = parse_caption_spec(manifest_section(settings, HUB_ENDPOINT)).cache_key(source)  # type: ignore[union-attr]
    for sha in (source, other):
        mark_cache_ready(db_session, ro.id, CacheKind.DATASET, sha, now=T0)
    tagged = _ran(db_session, ro.id, _flux_plan("f.safetensors", (), captions=settings), status=JobStatus.SUCCEEDED,
                  now=T0, dataset_sha256=source)  # fmt: skip
    add_notice(db_session, job_id=tagged.id, kind=NoticeKind.CAPTIONS, key=f"j{tagged.id}:captions",
               payload={"sha256": captioned}, now=T0)  # fmt: skip
    _ran(db_session, ro.id, _plan("m.safetensors"), status=JobStatus.SUCCEEDED, now=T0, dataset_sha256=other)

    lines = list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12")
    copy = [f"captioned/{key}.json", f"captioned/{key}.zip", f"datasets/{captioned}"]
    assert {c.key: c.paths for c in lines[0].cache if c.kind is CacheKind.DATASET} == {
        source: (f"datasets/{source}", *copy),
        other: (f"datasets/{other}",),
    }
    assert mark_stale(db_session, lines, now=NOW) == 2

    # Later someone trains on the captioned dataset itself (dataset_from its hash): it is live, and kept.
    later = _ran(db_session, ro.id, _plan("m.safetensors"), status=JobStatus.PREPARING, now=NOW,
                 dataset_sha256=captioned)  # fmt: skip
    order = prune_order(db_session, ro.id, later.id, env_hash="env-new", now=NOW)
    assert order is not None
    assert {i["key"]: i["paths"] for i in order["items"]}[source] == [f"datasets/{source}", *copy[:2]]
    assert f"datasets/{captioned}" in order["keep"]


def test_lorabot_volumes_says_marks_wait_for_a_cold_jobs_cpu_pod_and_since_when(db_session: Session) -> None:
    from bot.ops import render_volumes

    ro = record_volume(db_session, data_center_id="EU-RO-1", size_gb=30, now=T0, runpod_volume_id="vol-ro")
    ks = record_volume(db_session, data_center_id="US-KS-2", size_gb=30, now=T0, runpod_volume_id="vol-ks")
    mark_cache_ready(db_session, ro.id, CacheKind.MODEL, "old.safetensors", now=T0)
    mark_cache_ready(db_session, ro.id, CacheKind.ENV, "env-old", now=T0)
    mark_cache_ready(db_session, ks.id, CacheKind.ENV, "env-new", now=T0)
    lines = list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12")
    assert mark_stale(db_session, lines[:1], now=NOW - 3 * DAY) == 2
    text = render_volumes(list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12"), "2026-12")
    waiting = (
        f"  2 entries marked for deletion since {NOW - 3 * DAY:%Y-%m-%d %H:%M} UTC: NOT deleted yet, no room freed: "
        "waiting for the next cold job's CPU pod on this volume (none is running; a volume no job is placed on keeps "
        "them for ever)\n"
    )
    assert waiting in text and text.count("marked for deletion since") == 1  # US-KS-2 has nothing marked
    assert "          deletes models/old.safetensors, models/.old.safetensors.verified\n" in text

    # A cold job's CPU pod is on the volume now: it is the one that deletes them.
    cold = new_job(db_session, now=NOW)
    db_session.get_one(Job, cold).volume_id = ro.id
    _cpu_pod(db_session, cold, "EU-RO-1", terminated=False)
    text = render_volumes(list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12"), "2026-12")
    assert waiting not in text
    assert f"since {NOW - 3 * DAY:%Y-%m-%d %H:%M} UTC: the CPU pod of j{cold} is on this volume now" in text


def test_a_job_reading_a_shared_file_of_a_marked_model_waits_for_a_cpu_stage_and_the_file_is_then_kept(
    db_session: Session,
) -> None:
    from jobs.orchestrator import _model_cache_key

    ro = record_volume(db_session, data_center_id="EU-RO-1", size_gb=30, now=T0, runpod_volume_id="vol-ro")
    old = _flux_plan("flux-old.safetensors", ("clip_l.safetensors", "ae.safetensors"))
    old_key = _model_cache_key(JobPlan.from_json(old))
    mark_cache_ready(db_session, ro.id, CacheKind.MODEL, old_key, now=T0)
    _ran(db_session, ro.id, old, status=JobStatus.SUCCEEDED, now=T0)
    lines = list_volume_lines(db_session, env_hash="env-new", now=NOW, month="2026-12")
    assert mark_stale(db_session, lines, now=NOW) == 1
    assert lines[0].cache[0].paths == (*_files("flux-old.safetensors"), *_files("clip_l.safetensors"),
                                       *_files("ae.safetensors"), CLIP_L, T5)  # fmt: skip
    # Another job's CPU pod is on the volume, its order deleting flux-old with clip_l, the tokenizers and ae.
    other = _ran(db_session, ro.id, _plan("sd.safetensors"), status=JobStatus.PREPARING, now=NOW)
    _cpu_pod(db_session, other.id, "EU-RO-1", terminated=False)
    # A Flux job on another checkpoint with the same clip_l (and tokenizers) is not placed meanwhile.
    queued = db_session.get_one(Job, new_job(db_session, now=NOW))
    queued.plan_json = _flux_plan("flux-new.safetensors", ("clip_l.safetensors", "ae-new.safetensors"))
    db_session.flush()
    assert prune_in_flight(db_session, ro.id, queued, env_hash="env-new") == f"j{other.id}"
    # A job on nothing of flux-old's goes ahead.
    unrelated = db_session.get_one(Job, new_job(db_session, now=NOW))
    unrelated.plan_json = {**_plan("sd15.safetensors"), "script": "sdxl_train_network.py"}
    assert prune_in_flight(db_session, ro.id, unrelated, env_hash="env-new") is None

    other.status = JobStatus.SUCCEEDED
    for pod in db_session.query(Pod).filter(Pod.job_id == other.id):
        set_pod_terminated(db_session, pod.id, now=NOW + DAY / 24)
    assert prune_in_flight(db_session, ro.id, queued, env_hash="env-new") is None
    # flux-old stays marked; once the Flux job is on the volume its order keeps clip_l and the tokenizers.
    queued.volume_id, queued.status = ro.id, JobStatus.PREPARING
    db_session.flush()
    order = prune_order(db_session, ro.id, queued.id, env_hash="env-new", now=NOW)
    assert order is not None
    assert order["items"] == [
        {"kind": "model", "key": old_key, "paths": [*_files("flux-old.safetensors"), *_files("ae.safetensors")]}
    ]
