"""Each job trains on its own view of the shared dataset, so sd-scripts' latents cache stays with the job.

`--cache_latents_to_disk` writes `<image>_<W>x<H>_sdxl.npz` beside each image and later reuses any such file with
the right keys, whichever model wrote it: in the content-addressed dataset folder, a second job on another base
model would train on the first job's latents.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .bucket import Bucket
from .world import Agent, put_job

LATENTS = ["--cache_latents", "--cache_latents_to_disk"]
OTHER_MODEL = ("other.safetensors", hashlib.sha256(b"another base model").digest() * 4096)


def npz_files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*.npz"))}


def test_two_jobs_on_one_dataset_with_different_base_models_never_share_latents(
    bucket: Bucket, agent: Agent, volume: Path
):
    first = put_job(bucket, "j1", epochs=1, extra_args=LATENTS)
    second = put_job(bucket, "j2", epochs=1, extra_args=LATENTS, model=OTHER_MODEL)
    assert first.manifest["dataset"]["sha256"] == second.manifest["dataset"]["sha256"]
    for job in (first, second):
        assert agent.run(job, "prepare")[0] == 0
        code, out = agent.run(job, "train", gpu=True)
        assert code == 0, out

    shared = volume / "lorabot" / "datasets" / first.manifest["dataset"]["sha256"]
    assert npz_files(shared) == {}, "the shared dataset folder must never receive latents"
    jobs = volume / "lorabot" / "jobs"
    first_npz, second_npz = npz_files(jobs / "j1" / "data"), npz_files(jobs / "j2" / "data")
    assert sorted(first_npz) == sorted(second_npz) == ["1_kana/000_0512x0512_sdxl.npz", "1_kana/001_0512x0512_sdxl.npz"]
    assert set(first_npz.values()) == {"stand-in latents of base.safetensors\n"}
    assert set(second_npz.values()) == {"stand-in latents of other.safetensors\n"}


def test_the_view_links_every_image_and_caption_of_the_shared_folder(bucket: Bucket, agent: Agent, volume: Path):
    job = put_job(bucket, epochs=1)
    assert agent.run(job, "prepare")[0] == 0
    shared = volume / "lorabot" / "datasets" / job.manifest["dataset"]["sha256"]
    view = volume / "lorabot" / "jobs" / job.job_id / "data"
    assert view.is_dir() and not view.is_symlink()
    linked = sorted(p.relative_to(view) for p in view.rglob("*") if p.is_symlink())
    assert linked == sorted(p.relative_to(shared) for p in shared.rglob("*") if p.is_file() and p.name != "COMPLETE")
    for path in linked:
        assert not os.readlink(view / path).startswith("/"), "relative: the volume is mounted elsewhere on each pod"
        assert (view / path).resolve() == (shared / path).resolve()
    # A second prepare of the same job (another pod) keeps the view as it is.
    marker = (view / ".lorabot-dataset").stat().st_mtime_ns
    assert agent.run(job, "prepare", extra={"RUNPOD_POD_ID": "pod-prepare-2"})[0] == 0
    assert (view / ".lorabot-dataset").stat().st_mtime_ns == marker
