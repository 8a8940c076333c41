"""A second job from the same dataset (dataset_from, or the same zip again) uploads nothing new, and its pod agent
finds the dataset already unpacked on the volume and skips the download."""

from __future__ import annotations

import json

import pytest

from jobs.manifest import dataset_key
from jobs.states import JobStatus
from tests.world.lorabot_world import LorabotWorld

pytestmark = pytest.mark.timeout(240)


def dataset_step(world: LorabotWorld, job_id: int) -> dict[str, object]:
    """The `dataset` step of the job's prepare status (a warm job's GPU pod runs prepare itself)."""
    raw = world.store.get_bytes(f"jobs/j{job_id}/status/prepare.json")
    assert raw is not None, f"j{job_id} wrote no prepare status"
    steps = {step["name"]: step for step in json.loads(raw)["steps"]}
    return dict(steps["dataset"])


async def test_a_second_job_from_the_same_dataset_uploads_nothing_and_skips_the_download(
    lorabot_world: LorabotWorld,
) -> None:
    world = lorabot_world
    first = world.submit(images=4, epochs=1)
    await world.run_until(lambda: world.status(first).is_terminal(), timeout=90, what="the first job")
    assert world.status(first) is JobStatus.SUCCEEDED, world.describe()
    sha = world.job(first).dataset_sha256
    dataset_puts = [r for r in world.s3.requests if r.method == "PUT" and dataset_key(sha) in r.path]
    assert len(dataset_puts) == 1
    assert dataset_step(world, first)["state"] == "done"

    second = world.submit(images=4, epochs=1, name="kana-v2")
    assert world.job(second).dataset_sha256 == sha
    await world.run_until(lambda: world.status(second).is_terminal(), timeout=90, what="the second job")
    assert world.status(second) is JobStatus.SUCCEEDED, world.describe()

    dataset_puts = [r for r in world.s3.requests if r.method == "PUT" and "datasets/" in r.path]
    assert len(dataset_puts) == 1, "the store's request log shows a second dataset upload"
    step = dataset_step(world, second)
    assert (step["state"], step["cached"]) == ("skipped", True)
    dataset_gets = [r for r in world.s3.requests if r.method == "GET" and dataset_key(sha) in r.path]
    assert len(dataset_gets) == 1, "only the first job's pod downloaded the dataset"
