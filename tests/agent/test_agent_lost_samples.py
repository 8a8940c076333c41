"""A pod lost between an epoch's state save and its samples: the resumed run says those samples are lost."""

from __future__ import annotations

import signal
from pathlib import Path

from .bucket import Bucket
from .world import Agent, put_job, wait_for


def test_samples_a_lost_pod_never_drew_are_reported_lost_and_the_epoch_still_completes(
    bucket: Bucket, agent: Agent, volume: Path
):
    job = put_job(bucket, epochs=3)
    assert agent.run(job, "prepare")[0] == 0
    output = volume / "lorabot/jobs/j1/output"
    pod = agent.start(job, "train", gpu=True, extra={"LORABOT_STANDIN_FAULT": "hang_before_samples@1"})
    wait_for(lambda: (output / "kana-000001-state/random_states_0.pkl").exists(), what="epoch 1's state")
    wait_for(lambda: bucket.puts(job.keys.checkpoint(1)) == 1, what="epoch 1's checkpoint upload")
    pod.send_signal(signal.SIGTERM)
    out, _ = pod.communicate(timeout=10)
    assert job.status("train")["phase"] == "interrupted", out
    assert not list((output / "sample").glob("kana_e000001_*.png"))

    code, out = agent.run(job, "train", gpu=True, extra={"RUNPOD_POD_ID": "pod-train-2"})
    assert code == 0, out
    status = job.status("train")
    assert status["phase"] == "succeeded", status["error"]
    assert "epoch 1's samples [0, 1] were never drawn" in out
    first, *others = status["epochs"]
    assert first["epoch"] == 1 and first["checkpoint"] is not None
    assert first["samples"] == [] and first["samples_lost"] == [0, 1]
    assert [e["epoch"] for e in others] == [2, 3]
    assert all(len(e["samples"]) == 2 and e["samples_lost"] == [] for e in others)
    assert bucket.puts(job.keys.checkpoint(1)) == 1  # the LoRA of epoch 1 is fine and sent once
    assert job.keys.sample(1, 0) not in bucket.objects
    # Mid-run too, epoch 1 counted as complete once its checkpoint was in: the bot never waits for its gallery.
    resumed = [s for s in job.history("train") if s.get("resumed_from") and s["phase"] == "training"]
    assert resumed and all(s["last_completed_epoch"] >= 1 for s in resumed)
