"""The train stage's ETA counts the time sd-scripts' bar leaves out: each epoch's checkpoint, state and samples."""

from __future__ import annotations

import datetime as dt

from .bucket import Bucket
from .world import Agent, dataset_zip, put_job


def at(iso: str) -> float:
    return dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def test_the_eta_on_the_way_matches_the_time_the_run_really_took(bucket: Bucket, agent: Agent):
    """4 epochs of 4 steps at 2 it/s (2 s) with a 4 s end each (checkpoint, state, two samples) that the stand-in's
    bar, like sd-scripts', does not count: from epoch 2 on, the ETA is the real time left, where the bar's own
    figure (steps left / rate) is a third of it."""
    job = put_job(bucket, epochs=4, dataset=dataset_zip(images=4), status_interval_s=0.5)
    assert agent.run(job, "prepare")[0] == 0
    # A slower clock than the other tests: the agent reads the trainer's output every 0.25 simulated seconds.
    code, out = agent.run(job, "train", gpu=True, extra={"LORABOT_TIME_SCALE": "5"}, timeout=90)
    assert code == 0, out
    final = job.status("train")
    assert final["phase"] == "succeeded", final["error"]
    ended = at(final["timings"]["finished_at"])
    checked = 0
    for status in job.history("train"):
        progress = status.get("progress") or {}
        if status["phase"] != "training" or (progress.get("epoch") or 0) < 2 or progress["step"] % 4 == 0:
            continue
        left = ended - at(status["updated_at"])  # whole seconds: the status's own resolution
        assert abs(status["eta_seconds"] - left) <= 0.2 * left + 2.0, (status["eta_seconds"], left, progress)
        bar_only = (progress["total_steps"] - progress["step"]) / progress["it_per_s"]
        assert bar_only < 0.6 * left, "the stand-in's bar must leave the epoch ends out, as sd-scripts' does"
        assert progress["epoch_end_s"] is not None and 3.0 <= progress["epoch_end_s"] <= 5.5, progress
        checked += 1
    assert checked >= 3
