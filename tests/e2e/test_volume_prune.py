"""`lorabot volumes prune` in the emulator: the stale environment and model it marks are deleted from the volume's
folder by the next job's CPU stage, before that stage builds its own (which stay), and only then does the bot forget
them and record what was freed. Every pod ends terminated and the ledger still matches RunPod's bill."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from jobs.ledger import month_of
from jobs.queue import JobPlan
from jobs.states import CacheKind, JobStatus, NoticeKind, PodRole
from jobs.volumes import list_volume_lines, mark_stale
from storage.db import session_scope
from storage.queries import is_cache_ready, mark_cache_ready, record_volume
from tests.world.lorabot_world import LorabotWorld
from tests.world.money import assert_ledger_matches_runpod

pytestmark = pytest.mark.both_dbs

OLD_ENV = "0123456789abcdef"
OLD_MODEL = "old-base.safetensors"


def existing_volume(world: LorabotWorld) -> tuple[int, Path]:
    """A volume lorabot made before (at RunPod and in the job store): its row id and its `lorabot` folder."""
    dc = world.orchestrator.config.data_center_id
    info = world.emulator.create_volume(f"lorabot-{dc.lower()}", 30, dc)
    with session_scope(world.sessions) as s:
        volume_id = record_volume(s, data_center_id=dc, size_gb=30, now=world.now(), runpod_volume_id=info.id).id
    return volume_id, world.emulator.volume_path(info.id) / "lorabot"


async def test_prune_marks_stale_cache_and_the_next_cpu_stage_deletes_it_keeping_its_own(
    make_lorabot_world: Callable[..., LorabotWorld],
):
    world = make_lorabot_world()
    # A volume lorabot made earlier, holding an environment of an older recipe and a model nobody used for 60 days.
    volume_id, root = existing_volume(world)
    env_files = {"COMPLETE": b"{}", "venv/lib/torch.so": b"t" * 70_000, "sd-scripts/train.py": b"s" * 3_000}
    for name, data in env_files.items():
        (root / "env" / OLD_ENV / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "env" / OLD_ENV / name).write_bytes(data)
    (root / "models").mkdir(parents=True)
    (root / "models" / OLD_MODEL).write_bytes(b"m" * 50_000)
    (root / "models" / f".{OLD_MODEL}.verified").write_bytes(b"{}")
    now = world.now()
    with session_scope(world.sessions) as s:
        mark_cache_ready(s, volume_id, CacheKind.ENV, OLD_ENV, now=now)
        mark_cache_ready(s, volume_id, CacheKind.MODEL, OLD_MODEL, now=now - dt.timedelta(days=60))
        lines = list_volume_lines(s, env_hash=world.orchestrator.env_hash, now=now, month=month_of(now))
        assert mark_stale(s, lines, now=now) == 2  # what `lorabot volumes prune --yes` does

    job_id = world.submit(images=3, epochs=1)
    await world.run_until(lambda: world.status(job_id).is_terminal(), timeout=90, what="the job")
    assert world.status(job_id) is JobStatus.SUCCEEDED, world.describe()
    assert [p.role for p in world.pods(job_id)] == [PodRole.CPU, PodRole.GPU]

    # Gone from the volume's folder; the job's own environment, model and dataset are there.
    assert not (root / "env" / OLD_ENV).exists() and not (root / "models" / OLD_MODEL).exists()
    assert not (root / "models" / f".{OLD_MODEL}.verified").exists()
    job = world.job(job_id)
    model = JobPlan.from_json(job.plan_json).model.filename
    assert (root / "env" / world.orchestrator.env_hash / "COMPLETE").is_file()
    assert (root / "models" / model).is_file() and (root / "datasets" / job.dataset_sha256 / "COMPLETE").is_file()

    # The bot forgot them only now, and the listing says what the job's CPU stage freed.
    with session_scope(world.sessions) as s:
        assert not is_cache_ready(s, volume_id, CacheKind.ENV, OLD_ENV)
        assert not is_cache_ready(s, volume_id, CacheKind.MODEL, OLD_MODEL)
        assert is_cache_ready(s, volume_id, CacheKind.ENV, world.orchestrator.env_hash)
        (line,) = list_volume_lines(s, env_hash=world.orchestrator.env_hash, now=world.now(), month=month_of(now))
    assert line.pending == ()
    assert sorted((f.job, f.kind, f.key, f.freed_bytes, f.refused) for f in line.freed) == [
        (f"j{job_id}", "env", OLD_ENV, sum(len(data) for data in env_files.values()), None),
        (f"j{job_id}", "model", OLD_MODEL, 50_000 + 2, None),
    ]
    assert world.running_pods() == []
    world.wait_for_no_processes()
    assert_ledger_matches_runpod(world, job_id, case="prune")


async def test_a_job_that_needs_what_a_running_cpu_stage_deletes_waits_for_it_then_fetches_it_again(
    make_lorabot_world: Callable[..., LorabotWorld],
):
    """Job A's CPU pod carries the deletion of a stale dataset; job B, queued behind it, trains on that very dataset.
    B is not placed while A's CPU pod may be deleting it (its thread says why); once A's pod has reported the deletion,
    B goes on and its own pod fetches the dataset again."""
    world = make_lorabot_world(max_concurrent_jobs=2)
    volume_id, root = existing_volume(world)
    first = world.submit(images=3, epochs=1, name="first")
    second = world.submit(images=4, epochs=1, name="second")
    sha = world.job(second).dataset_sha256
    stale = root / "datasets" / sha
    stale.mkdir(parents=True)
    (stale / "COMPLETE").write_text(sha)
    (stale / "old.png").write_bytes(b"p" * 9_000)
    now = world.now()
    with session_scope(world.sessions) as s:
        mark_cache_ready(s, volume_id, CacheKind.DATASET, sha, now=now - dt.timedelta(days=60))
        lines = list_volume_lines(s, env_hash=world.orchestrator.env_hash, now=now, month=month_of(now))
        assert mark_stale(s, lines, now=now) == 1

    def waited() -> list[str]:
        return [
            str(n.payload_json["text"])
            for n in world.notices(second, NoticeKind.INFO)
            if "waiting for" in str(n.payload_json.get("text"))
        ]

    await world.run_until(lambda: bool(waited()), timeout=30, what="the second job to wait")
    assert world.status(second) is JobStatus.QUEUED and world.pods(second) == []
    dc = world.job(first).data_center_id
    assert waited() == [
        f"waiting for j{first}'s CPU stage on the {dc} volume: it may be deleting stale files this job would use"
    ]
    await world.run_until(
        lambda: world.status(first).is_terminal() and world.status(second).is_terminal(), timeout=120, what="both jobs"
    )
    assert (world.status(first), world.status(second)) == (JobStatus.SUCCEEDED, JobStatus.SUCCEEDED), world.describe()
    with session_scope(world.sessions) as s:
        (line,) = list_volume_lines(s, env_hash=world.orchestrator.env_hash, now=world.now(), month=month_of(now))
    assert [(f.job, f.kind, f.key, f.freed_bytes) for f in line.freed] == [
        (f"j{first}", "dataset", sha, len(sha) + 9_000)
    ]
    assert not (stale / "old.png").exists() and (stale / "COMPLETE").is_file()  # B's own copy, fetched again
    assert world.running_pods() == []
    world.wait_for_no_processes()
    for job_id in (first, second):
        assert_ledger_matches_runpod(world, job_id, case=f"j{job_id}")


async def test_a_stale_flux_model_goes_with_its_extras_and_t5_tokenizer_and_a_stale_dataset_with_its_captioned_copy(
    make_lorabot_world: Callable[..., LorabotWorld],
):
    """A Flux model last used 60 days ago: its checkpoint, its extras (clip_l, t5xxl, ae) and the T5 tokenizer folder
    are deleted by the next job's CPU stage; the CLIP-L tokenizer, which that job loads too, stays. Its dataset's
    captioned copy (pointer, zip and captioned dataset) goes with the dataset."""
    from jobs.agent.captions import parse_caption_spec
    from jobs.captions import CaptionPlan, manifest_section
    from jobs.orchestrator import _model_cache_key
    from jobs.queue import ModelFileRef
    from jobs.sdscripts import HUB_ENDPOINT
    from storage.models import Job
    from storage.transitions import add_notice
    from tests.jobs.data.specs import spec
    from tests.world.fixtures_db import new_job

    world = make_lorabot_world()
    volume_id, root = existing_volume(world)
    now = world.now()
    long_ago = now - dt.timedelta(days=60)
    extras = ("clip_l.safetensors", "t5xxl_fp16.safetensors", "ae.safetensors")
    model = ModelFileRef("https://example.invalid/flux-old.safetensors", "flux-old.safetensors", 1, None, None, tuple(
        ModelFileRef(f"https://example.invalid/{name}", name, 1, None, None) for name in extras
    ))  # fmt: skip
    settings = CaptionPlan("keep", 6, 6, 0.35, 1.01, ()).job_settings(spec(trigger="kana", class_word="girl"))
    plan = JobPlan("flux_train_network.py", [], {}, 1, 0, "out", "flux", model, "gpu", {}, 1, 1, captions=settings)
    source, captioned = "a" * 64, "c" * 64
    caption_spec = parse_caption_spec(manifest_section(settings or {}, HUB_ENDPOINT))
    assert caption_spec is not None
    key = caption_spec.cache_key(source)
    planted = {
        "models/flux-old.safetensors": 9_000,
        **{f"models/{name}": 1_000 for name in extras},
        "hf/tokenizers/google_t5-v1_1-xxl/spiece.model": 700,
        f"datasets/{source}/a.png": 300,
        f"captioned/{key}.json": 80,
        f"captioned/{key}.zip": 400,
        f"datasets/{captioned}/a.png": 300,
    }
    for name in ["flux-old.safetensors", *extras]:
        planted[f"models/.{name}.verified"] = 2
    for rel, size in planted.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * size)
    with session_scope(world.sessions) as s:
        old = s.get_one(Job, new_job(s, now=long_ago, dataset_sha256=source))
        old.volume_id, old.status, old.plan_json = volume_id, JobStatus.SUCCEEDED, plan.to_json()
        s.flush()
        add_notice(s, job_id=old.id, kind=NoticeKind.CAPTIONS, key=f"j{old.id}:captions",
                   payload={"sha256": captioned}, now=long_ago)  # fmt: skip
        mark_cache_ready(s, volume_id, CacheKind.MODEL, _model_cache_key(plan), now=long_ago)
        mark_cache_ready(s, volume_id, CacheKind.DATASET, source, now=long_ago)
        lines = list_volume_lines(s, env_hash=world.orchestrator.env_hash, now=now, month=month_of(now))
        assert mark_stale(s, lines, now=now) == 2

    job_id = world.submit(images=3, epochs=1)
    await world.run_until(lambda: world.status(job_id).is_terminal(), timeout=90, what="the job")
    assert world.status(job_id) is JobStatus.SUCCEEDED, world.describe()
    job_plan = JobPlan.from_json(world.job(job_id).plan_json)
    assert job_plan.script != "flux_train_network.py"  # so the T5 tokenizer is nobody's now
    for rel in planted:
        assert not (root / rel).exists(), rel
    assert not (root / "hf/tokenizers/google_t5-v1_1-xxl").exists()
    assert (root / "hf/tokenizers/openai_clip-vit-large-patch14").is_dir()  # the job's own, fetched and kept
    with session_scope(world.sessions) as s:
        (line,) = list_volume_lines(s, env_hash=world.orchestrator.env_hash, now=world.now(), month=month_of(now))
    assert {c.kind for c in line.cache if c.key in (source, _model_cache_key(plan))} == set()
    assert sorted((f.kind, f.freed_bytes, f.refused) for f in line.freed) == [
        ("dataset", 300 + 80 + 400 + 300, None),
        ("model", 9_000 + 3_000 + 4 * 2 + 700, None),
    ]
    assert world.running_pods() == []
    world.wait_for_no_processes()
    assert_ledger_matches_runpod(world, job_id, case="prune-flux")
