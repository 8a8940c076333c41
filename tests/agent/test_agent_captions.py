"""Auto-captioning on the CPU stage: the agent runs the (stand-in) WD14 tagger from the environment like the trainer,
turns its tags into `TRIGGER, CLASS, <tags not in every image>`, stores the captioned dataset by hash on the volume,
uploads it, and a second run (a retry, another job) reuses it without tagging again."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from PIL import Image

from jobs.captions import WD14_REPO, CaptionPlan
from tests.jobs.data.specs import spec
from tests.world.wd14_model import tiny_wd14_onnx

from .bucket import Bucket
from .world import FIXED_TIME, Agent, Job, put_job, standin_hub

UNDESIRED = ("1girl", "1boy", "solo", "nose", "lips")


def captionless_zip(images: int = 6, captioned: int = 0, broken: int = 0) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for index in range(images):
            png = io.BytesIO()
            Image.new("RGB", (64, 64), (index * 40, 80 + index, 120)).save(png, "PNG")
            data = b"not an image at all" if index < broken else png.getvalue()
            zf.writestr(zipfile.ZipInfo(f"1_kana/{index:03d}.png", FIXED_TIME), data)
            if images - index <= captioned:
                zf.writestr(zipfile.ZipInfo(f"1_kana/{index:03d}.txt", FIXED_TIME), f"kana, girl, my own words {index}")
    return buffer.getvalue()


def serve_tiny_model() -> None:
    standin_hub().repos[WD14_REPO]["model.onnx"] = tiny_wd14_onnx()


def captioned_job(bucket: Bucket, job_id: str = "j1", dataset: bytes | None = None, **changes: Any) -> Job:
    serve_tiny_model()
    job = put_job(bucket, job_id, epochs=1, dataset=dataset or captionless_zip())
    plan = CaptionPlan("keep", 6, 6, 0.35, 1.01, UNDESIRED)
    section = plan.manifest_section(spec(trigger="kana", class_word="girl"), standin_hub().url)
    assert section is not None
    section.update(changes)
    job.manifest["captions"] = section
    job.manifest["uploads"]["captions"] = bucket.presign_put(job.keys.captioned_dataset)
    bucket.put(job.keys.manifest, json.dumps(job.manifest).encode())
    return job


def data_captions(volume: Path, job: Job) -> dict[str, str]:
    data = volume / "lorabot" / "jobs" / job.job_id / "data" / "1_kana"
    return {p.name: p.read_text().strip() for p in sorted(data.glob("*.txt"))}


def tagger_runs(volume: Path, job: Job) -> int:
    log = (volume / "lorabot" / "jobs" / job.job_id / "logs" / "prepare.log").read_text()
    return log.count("captions: tagging")


def test_a_dataset_without_captions_trains_on_trigger_class_and_pruned_tags(bucket: Bucket, agent: Agent, volume: Path):
    job = captioned_job(bucket)
    assert agent.run(job, "prepare")[0] == 0, job.status("prepare")
    status = job.status("prepare")
    summary = status["captions"]
    captions = data_captions(volume, job)
    assert len(captions) == 6 and summary["tagged"] == 6
    every = None
    for caption in captions.values():
        tags = [t.strip() for t in caption.split(",")]
        assert tags[:2] == ["kana", "girl"]
        assert not set(tags) & set(UNDESIRED)
        every = set(tags[2:]) if every is None else every & set(tags[2:])
    assert every == set(), "no tag may be in every caption"
    # simple_background is in every image (the stand-in's always-tag) and not undesired: dropped as shared.
    assert "simple background" in summary["shared_removed"]
    assert all(tag.count("_") == 0 for tag, _ in summary["top_tags"]), "--remove_underscore was passed"
    assert len(summary["examples"]) == 5 and summary["examples"][0]["caption"].startswith("kana, girl")
    # The captioned dataset is content-addressed on the volume and uploaded whole for the bot.
    sha = summary["sha256"]
    assert (volume / "lorabot" / "datasets" / sha / "COMPLETE").read_text() == sha
    uploaded = bucket.read(job.keys.captioned_dataset)
    assert hashlib.sha256(uploaded).hexdigest() == sha and len(uploaded) == summary["size"]
    with zipfile.ZipFile(io.BytesIO(uploaded)) as zf:
        assert sorted(n for n in zf.namelist() if n.endswith(".txt")) == [f"1_kana/{i:03d}.txt" for i in range(6)]
    ready = json.loads((volume / "lorabot" / "jobs" / job.job_id / "READY").read_text())
    assert ready["dataset_sha256"] == sha
    # The tagger model was put where the tagger looks, once, and the tagger ran offline from the environment.
    model = volume / "lorabot" / "models" / "wd14" / WD14_REPO.replace("/", "_")
    assert (model / "model.onnx").read_bytes() == tiny_wd14_onnx()
    log = (volume / "lorabot" / "jobs" / job.job_id / "logs" / "prepare.log").read_text()
    assert (
        "finetune/tag_images_by_wd14_tagger.py" in log and "--onnx" in log and "using existing wd14 tagger model" in log
    )

    assert agent.run(job, "train", gpu=True)[0] == 0
    assert job.status("train")["phase"] == "succeeded"


def test_keep_tags_only_the_images_without_a_caption(bucket: Bucket, agent: Agent, volume: Path):
    job = captioned_job(bucket, dataset=captionless_zip(captioned=3))
    assert agent.run(job, "prepare")[0] == 0, job.status("prepare")
    captions = data_captions(volume, job)
    assert job.status("prepare")["captions"]["tagged"] == 3
    for index in range(3, 6):
        assert captions[f"{index:03d}.txt"] == f"kana, girl, my own words {index}"
    for index in range(3):
        assert captions[f"{index:03d}.txt"].startswith("kana, girl")
        assert "my own words" not in captions[f"{index:03d}.txt"]


def test_a_retry_and_a_second_job_reuse_the_captioned_dataset_without_tagging(
    bucket: Bucket, agent: Agent, volume: Path
):
    job = captioned_job(bucket)
    assert agent.run(job, "prepare")[0] == 0
    first = job.status("prepare")["captions"]["sha256"]
    hub_before = len(standin_hub().fetched())
    second = captioned_job(bucket, "j2")
    assert agent.run(second, "prepare")[0] == 0
    assert second.status("prepare")["captions"]["sha256"] == first
    assert tagger_runs(volume, second) == 0
    assert [p for p in standin_hub().fetched()[hub_before:] if WD14_REPO in p] == []
    [step] = [s for s in second.status("prepare")["steps"] if s["name"] == "captions"]
    assert step["cached"] is True


def test_unreadable_images_are_listed_not_fatal(bucket: Bucket, agent: Agent, volume: Path):
    job = captioned_job(bucket, dataset=captionless_zip(broken=1))
    assert agent.run(job, "prepare")[0] == 0, job.status("prepare")
    summary = job.status("prepare")["captions"]
    assert [u["image"] for u in summary["unreadable"]] == ["1_kana/000.png"]
    assert "cannot identify image file" in summary["unreadable"][0]["error"]
    assert data_captions(volume, job)["000.txt"] == "kana, girl"
    assert summary["tagged"] == 5


def test_a_tagger_crash_fails_the_cpu_stage_with_the_taggers_message(bucket: Bucket, agent: Agent, volume: Path):
    standin_hub().repos[WD14_REPO]["selected_tags.csv"] = b"id,tag,kind\n1,x,0\n"
    try:
        job = captioned_job(bucket)
        assert agent.run(job, "prepare")[0] == 1
    finally:
        from jobs.sandbox.hub import WD14_TAGS_CSV

        standin_hub().repos[WD14_REPO]["selected_tags.csv"] = WD14_TAGS_CSV
    error = job.status("prepare")["error"]
    assert error["kind"] == "tagger"
    assert "exited with code 1" in error["message"] and "unexpected csv format" in error["message"]
    assert not (volume / "lorabot" / "jobs" / job.job_id / "READY").exists()


def test_a_caption_only_prepare_tags_without_fetching_the_base_model(bucket: Bucket, agent: Agent, volume: Path):
    """/caption's CPU stage (manifest caption_only): environment, dataset and tagging; the model step is skipped."""
    job = captioned_job(bucket)
    job.manifest["caption_only"] = True
    job.manifest["stages"] = ["prepare"]
    bucket.put(job.keys.manifest, json.dumps(job.manifest).encode())
    assert agent.run(job, "prepare")[0] == 0, job.status("prepare")
    status = job.status("prepare")
    assert status["phase"] == "ready" and status["captions"]["tagged"] == 6
    [model] = [s for s in status["steps"] if s["name"] == "model"]
    assert model["state"] == "skipped" and model["bytes_done"] == 0
    assert not list((volume / "lorabot" / "models").glob("*.safetensors"))
    assert (
        "step model: not needed, this job only captions"
        in (volume / "lorabot" / "jobs" / job.job_id / "logs" / "prepare.log").read_text()
    )


def test_caption_only_without_a_captions_section_is_refused(bucket: Bucket, agent: Agent, volume: Path):
    job = put_job(bucket, "j1", epochs=1, dataset=captionless_zip())
    job.manifest["caption_only"] = True
    bucket.put(job.keys.manifest, json.dumps(job.manifest).encode())
    code, out = agent.run(job, "prepare")
    assert code == 2 and "caption_only must be true or false, and true only with a captions section" in out
    assert not (volume / "lorabot" / "jobs" / job.job_id).exists()
