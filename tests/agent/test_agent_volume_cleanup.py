"""The volume after a job: only the newest state while training, nothing heavy once every upload is confirmed.

One Network Volume per data center holds every job's outputs, so a finished job's LoRAs and states (GBs for SDXL)
must not stay there; a job that may still resume must keep them.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

from .bucket import Bucket
from .world import Agent, put_job, wait_for

KEEP_ONE_STATE = ["--save_last_n_epochs_state=1"]


def heavy_outputs(output: Path) -> list[str]:
    return sorted(p.name for p in output.iterdir() if p.name.endswith((".safetensors", "-state")))


def test_a_succeeded_job_leaves_no_lora_or_state_on_the_volume_only_its_small_files(
    bucket: Bucket, agent: Agent, volume: Path
):
    job = put_job(bucket, epochs=3, extra_args=KEEP_ONE_STATE)
    assert agent.run(job, "prepare")[0] == 0
    code, out = agent.run(job, "train", gpu=True)
    assert code == 0, out
    status = job.status("train")
    assert status["phase"] == "succeeded", status["error"]

    job_dir = volume / "lorabot/jobs/j1"
    assert heavy_outputs(job_dir / "output") == []
    for epoch in (1, 2, 3):  # what was removed is in the bucket
        assert job.keys.checkpoint(epoch) in bucket.objects
    assert job.keys.final in bucket.objects
    assert (job_dir / "TRAINED").is_file() and (job_dir / "UPLOADED").is_file()
    assert json.loads((job_dir / "uploads.json").read_text())["final"]["size"] > 0
    assert list((job_dir / "logs").glob("trainer-1.log"))
    assert len(list((job_dir / "output/sample").glob("*.png"))) == 6  # samples are small: they stay
    agent_log = (job_dir / "logs/train.log").read_text()
    assert re.search(r"every upload is confirmed: removed 5 outputs \(\d+ bytes\)", agent_log)
    # sd-scripts kept only the newest numbered state while it trained (--save_last_n_epochs_state=1)
    trainer_log = (job_dir / "logs/trainer-1.log").read_text()
    assert re.findall(r"removing old state: (\S+)", trainer_log) == [str(job_dir / "output/kana-000001-state")]


def test_a_new_pod_after_the_cleanup_reports_success_without_training_or_uploading_again(
    bucket: Bucket, agent: Agent, volume: Path
):
    job = put_job(bucket, epochs=2)
    assert agent.run(job, "prepare")[0] == 0
    assert agent.run(job, "train", gpu=True)[0] == 0
    output = volume / "lorabot/jobs/j1/output"
    # An agent stopped between UPLOADED and the end of the removal left this behind.
    (output / "kana-000001-state").mkdir()
    (output / "kana-000001-state/optimizer.bin").write_bytes(b"x" * 1000)

    code, out = agent.run(job, "train", gpu=True, extra={"RUNPOD_POD_ID": "pod-train-2"})
    assert code == 0, out
    status = job.status("train")
    assert status["phase"] == "succeeded", status["error"]
    assert [e["epoch"] for e in status["epochs"]] == [1, 2] and status["final"] is not None
    assert heavy_outputs(output) == []
    assert not list((volume / "lorabot/jobs/j1/logs").glob("trainer-2.log"))
    for key in (job.keys.checkpoint(1), job.keys.final, job.keys.sample(2, 1)):
        assert bucket.puts(key) == 1, key


def test_an_upload_not_confirmed_keeps_every_output_on_the_volume(bucket: Bucket, agent: Agent, volume: Path):
    job = put_job(bucket, epochs=2)
    assert agent.run(job, "prepare")[0] == 0
    bucket.failing_puts[job.keys.sample(1, 0)] = 10_000  # the bucket refuses it for the whole run
    code, out = agent.run(job, "train", gpu=True)
    assert code == 0, out
    output = volume / "lorabot/jobs/j1/output"
    assert heavy_outputs(output) == ["kana-000001-state", "kana-000001.safetensors", "kana-state", "kana.safetensors"]
    assert not (volume / "lorabot/jobs/j1/UPLOADED").exists()
    assert "not confirmed in the bucket: sample/1/0" in (volume / "lorabot/jobs/j1/logs/train.log").read_text()


def test_an_interrupted_or_failed_run_keeps_the_state_a_resume_needs(bucket: Bucket, agent: Agent, volume: Path):
    job = put_job(bucket, epochs=6, extra_args=KEEP_ONE_STATE)
    assert agent.run(job, "prepare")[0] == 0
    output = volume / "lorabot/jobs/j1/output"
    pod = agent.start(job, "train", gpu=True)
    wait_for(lambda: (output / "kana-000003-state/random_states_0.pkl").exists(), what="epoch 3's state")
    pod.send_signal(signal.SIGTERM)
    pod.communicate(timeout=10)
    status = job.status("train")
    assert status["phase"] == "interrupted"
    newest = status["last_completed_epoch"]
    states = [name for name in heavy_outputs(output) if name.endswith("-state")]
    assert states == [f"kana-{newest:06d}-state"]  # the older ones went as sd-scripts saved the next

    code, out = agent.run(job, "train", gpu=True, extra={"RUNPOD_POD_ID": "pod-2", "LORABOT_STANDIN_FAULT": "crash@1"})
    assert code == 1, out
    assert job.status("train")["error"]["kind"] == "trainer_crash"
    assert f"kana-{newest:06d}-state" in heavy_outputs(output)
    assert not (volume / "lorabot/jobs/j1/UPLOADED").exists()


def test_the_trainer_s_log_records_arrive_whole_on_one_line(bucket: Bucket, agent: Agent, volume: Path):
    """sd-scripts logs through rich, which folds records at 80 columns without a terminal: the agent widens the
    trainer's console (COLUMNS) so a path in a message stays on its line for the log tail and the classifier."""
    job = put_job(bucket, epochs=3)
    assert agent.run(job, "prepare")[0] == 0
    output = volume / "lorabot/jobs/j1/output"
    pod = agent.start(job, "train", gpu=True)
    wait_for(lambda: (output / "kana-000001-state/random_states_0.pkl").exists(), what="epoch 1's state")
    pod.send_signal(signal.SIGTERM)
    pod.communicate(timeout=10)
    assert agent.run(job, "train", gpu=True, extra={"RUNPOD_POD_ID": "pod-2"})[0] == 0

    log = (volume / "lorabot/jobs/j1/logs/trainer-2.log").read_text()
    resumed = job.status("train")["resumed_from"]
    assert re.search(rf"INFO +resume training from local state: {re.escape(str(output / resumed))} ", log), log[:3000]
