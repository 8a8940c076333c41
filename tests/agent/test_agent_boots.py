"""RunPod starts a container again whenever its process ends: the agent counts its boots and never redoes a stage.

A restart of a pod that finished its stage idles until the terminate's SIGTERM (exiting would only be restarted
again); a restart after a crash says so in its status and carries on where the crash left off.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from .bucket import Bucket
from .world import Agent, put_job, wait_for


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    return proc.returncode, out


def test_a_restart_after_ready_does_no_work_and_idles_until_sigterm(bucket: Bucket, agent: Agent, volume: Path):
    job = put_job(bucket)
    assert agent.run(job, "prepare")[0] == 0
    assert job.status("prepare")["boots"] == 1
    log = volume / "lorabot/jobs/j1/logs/prepare.log"
    steps_run = log.read_text().count("step env: done")

    restarted = agent.start(job, "prepare")
    wait_for(lambda: job.status("prepare")["boots"] == 2, what="the restart's status")
    time.sleep(0.5)
    assert restarted.poll() is None, "a finished pod's agent must not exit (RunPod would start it again)"
    status = job.status("prepare")
    assert status["phase"] == "ready" and status["error"] is None
    assert log.read_text().count("step env: done") == steps_run
    assert "this pod already finished the prepare stage (ready); idling" in log.read_text()
    assert (volume / "lorabot/jobs/j1/boots/prepare-pod-prepare").read_text() == "2"
    assert _stop(restarted)[0] == 0


def test_a_failed_stage_stays_failed_on_its_pod_and_a_new_pod_tries_again(bucket: Bucket, agent: Agent):
    job = put_job(bucket, epochs=1)
    assert agent.run(job, "prepare")[0] == 0
    assert agent.run(job, "train", gpu=False)[0] == 1  # no GPU on this pod

    restarted = agent.start(job, "train", gpu=False)
    wait_for(lambda: job.status("train")["boots"] == 2, what="the restart's status")
    status = job.status("train")
    assert (status["phase"], status["error"]["kind"]) == ("failed", "no_gpu")
    assert restarted.poll() is None
    assert _stop(restarted)[0] == 1

    code, out = agent.run(job, "train", gpu=True, extra={"RUNPOD_POD_ID": "pod-train-2"})
    assert code == 0, out
    assert (job.status("train")["phase"], job.status("train")["boots"]) == ("succeeded", 1)


def test_a_restart_after_a_crash_says_so_and_resumes_training(bucket: Bucket, agent: Agent, volume: Path):
    job = put_job(bucket, epochs=6)
    assert agent.run(job, "prepare")[0] == 0
    output = volume / "lorabot/jobs/j1/output"
    crashing = agent.start(job, "train", gpu=True)
    wait_for(lambda: (output / "kana-000002-state/random_states_0.pkl").exists(), what="epoch 2's state")
    crashing.kill()  # the OOM killer, say: no SIGTERM, no last status
    crashing.communicate(timeout=10)

    code, out = agent.run(job, "train", gpu=True)
    assert code == 0, out
    history = job.history("train")
    restarted = [entry for entry in history if entry["boots"] == 2]
    assert restarted[0]["error"]["kind"] == "agent_restarted"
    assert "the agent restarted (boot 2 on this pod) during training" in restarted[0]["error"]["message"]
    final = job.status("train")
    assert (final["phase"], final["error"], final["boots"]) == ("succeeded", None, 2)
    assert final["resumed_from"] is not None and final["resumed_from"].startswith("kana-00000")
