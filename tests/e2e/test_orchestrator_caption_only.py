"""A caption-only job (/caption) in the orchestrator: one CPU pod, never a GPU (even when the CPU stage's ETA would
reserve one for training), its ledger lines equal to RunPod's bill, /cancel mid-stage, and zero pods at every end."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import pytest

from jobs import ledger
from jobs.caption_job import caption_job_plan, estimate_caption_job
from jobs.captions import WD14_REPO
from jobs.catalog import load_catalog
from jobs.dataset import ingest_zip, pack_dataset
from jobs.planning import make_plan
from jobs.presets import load_presets
from jobs.prices import StaticPriceProvider
from jobs.queue import job_plan_of, submit
from jobs.spec import UserOptions
from jobs.states import JobStatus, NoticeKind, PodRole
from storage.db import session_scope
from tests.agent.world import standin_hub
from tests.e2e.test_discord_captions import captionless_zip
from tests.world.lorabot_world import LorabotWorld, with_standin_model
from tests.world.money import assert_ledger_matches_runpod
from tests.world.wd14_model import tiny_wd14_onnx

pytestmark = pytest.mark.timeout(180)


def submit_caption_job(world: LorabotWorld, *, images: int = 5, user_id: int = 1001) -> int:
    """Ingest, plan and queue a /caption job as the bot does on Confirm (bot/captioning.py)."""
    root = Path(tempfile.mkdtemp(dir=world.workdir))
    (root / "upload.zip").write_bytes(captionless_zip(images))
    dataset = ingest_zip(root / "upload.zip", root / "dataset", captions="keep")
    options = UserOptions(trigger="kana", class_word="girl", captions="keep")
    prices = StaticPriceProvider()
    plan = make_plan(dataset, options, presets=load_presets(), catalog=load_catalog(), prices=prices)
    sha, size = pack_dataset(dataset.root, root / "dataset.zip")
    assert plan.captions is not None
    estimate = estimate_caption_job(plan.captions, dataset_bytes=size, prices=prices.get_table(), env_ready=False)
    with session_scope(world.sessions) as s:
        job = submit(
            s,
            world.store,
            plan=plan,
            dataset_zip=root / "dataset.zip",
            dataset_sha256=sha,
            dataset_size=size,
            image_count=images,
            report={},
            user_id=user_id,
            name="captions",
            now=world.now(),
            wall_time=dt.timedelta(hours=6),
            job_plan=caption_job_plan(job_plan_of(plan), estimate),
        )
        job.plan_json = with_standin_model(job.plan_json, world.store)
        return job.id


async def test_a_caption_job_never_rents_a_gpu_and_bills_what_its_cpu_pod_ran(make_lorabot_world: Any) -> None:
    # A reserve margin this large would rent the training GPU at the CPU stage's first status.
    world: LorabotWorld = make_lorabot_world(reserve_margin_s=100_000)
    standin_hub().repos[WD14_REPO]["model.onnx"] = tiny_wd14_onnx()
    job_id = submit_caption_job(world)
    await world.run_until(lambda: world.status(job_id).is_terminal(), timeout=120, what="the caption job")
    assert world.status(job_id) is JobStatus.SUCCEEDED, world.describe()
    assert [p.role for p in world.pods(job_id)] == [PodRole.CPU]
    assert all(p.gpu_count == 0 for p in world.emulator.all_pods())
    assert world.running_pods() == []
    world.wait_for_no_processes()

    [captions] = world.notices(job_id, NoticeKind.CAPTIONS)
    [done] = world.notices(job_id, NoticeKind.SUCCEEDED)
    assert done.payload_json["caption_only"] and done.payload_json["sha256"] == captions.payload_json["sha256"]
    with session_scope(world.sessions) as s:
        cost = ledger.job_cost(s, job_id, now=world.now())
    assert cost.gpu_pod_micros == 0 and cost.cpu_pod_micros > 0 and cost.volume_micros > 0
    assert not cost.live
    assert done.payload_json["cost"]["total_micros"] == cost.total_micros
    assert_ledger_matches_runpod(world, job_id)

    # The CPU pod fetched no base model; the volume's model cache is not marked as if it had.
    [volume] = world.emulator.volumes()
    on_volume = [p.name for p in (world.emulator.volume_path(volume.id) / "lorabot").rglob("*.safetensors")]
    assert on_volume == []


async def test_cancelling_a_caption_job_mid_stage_leaves_zero_pods(make_lorabot_world: Any) -> None:
    world: LorabotWorld = make_lorabot_world()
    standin_hub().repos[WD14_REPO]["model.onnx"] = tiny_wd14_onnx()
    job_id = submit_caption_job(world, images=3)
    await world.run_until(
        lambda: any(p.runpod_pod_id for p in world.pods(job_id)), timeout=60, what="the CPU pod to be created"
    )
    assert world.status(job_id) is JobStatus.PREPARING
    await world.orchestrator.cancel(job_id, by="test")
    await world.run_until(lambda: world.status(job_id).is_terminal(), timeout=60, what="the cancel to finish")
    assert world.status(job_id) is JobStatus.CANCELLED
    assert world.running_pods() == [] and [p.role for p in world.pods(job_id)] == [PodRole.CPU]
    [cancelled] = world.notices(job_id, NoticeKind.CANCELLED)
    assert cancelled.payload_json["cost"]["gpu_pod_micros"] == 0
    assert world.notices(job_id, NoticeKind.SUCCEEDED) == []
