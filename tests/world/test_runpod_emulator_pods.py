"""Emulated pods really run: start command, env, volume folder, signals, billing on the simulated clock."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import runpod

from jobs.sandbox.emulator import SECURE, RunpodEmulator
from jobs.sandbox.emulator.billing import billed_seconds, cost_micros, volume_cost_micros
from tests.world.fixtures_runpod import EmulatorFactory, runpod_graphql

RTX_4090 = "NVIDIA GeForce RTX 4090"
GPU_STARTUP_S = 120
CPU_STARTUP_S = 30


def _python(tmp_path: Path, name: str, body: str) -> str:
    """dockerArgs that run `body` as a Python script (the SDK can't carry double quotes in dockerArgs)."""
    script = tmp_path / f"{name}.py"
    script.write_text(body)
    return f"{sys.executable} {script}"


def _gpu_pod(volume_id: str | None, docker_args: str, env: dict[str, str] | None = None, **kwargs: object) -> str:
    created = runpod.create_pod(
        "lorabot-test-gpu",
        "runpod/pytorch",
        RTX_4090,
        cloud_type="SECURE",
        network_volume_id=volume_id,
        volume_mount_path="/workspace",
        docker_args=docker_args,
        env=env,
        **kwargs,
    )
    return str(created["id"])


async def test_start_command_runs_with_the_pod_env_and_the_volume_in_place_of_workspace(
    runpod_emulator: RunpodEmulator, tmp_path: Path
) -> None:
    volume = runpod_emulator.create_volume("v", 30, "EU-RO-1")
    args = _python(
        tmp_path,
        "show_env",
        (
            "import json, os, pathlib\n"
            "keys = ['RUNPOD_POD_ID', 'LORABOT_TIME_SCALE', 'LORABOT_VOLUME', 'LORABOT_FAKE_GPU', 'HOME']\n"
            "print(json.dumps({k: os.environ.get(k) for k in keys}))\n"
            "print(os.getcwd())\n"
            "volume = pathlib.Path(os.environ['LORABOT_VOLUME'])\n"
            "(volume / 'hello.txt').write_text('written by ' + os.environ['RUNPOD_POD_ID'])\n"
        ),
    )
    pod_id = _gpu_pod(volume.id, args, {"LORABOT_VOLUME": "/workspace", "LORABOT_STAGE": "train"})
    runpod_emulator.advance(GPU_STARTUP_S)
    runpod_emulator.wait_until(lambda: len(runpod_emulator.pod_log(pod_id).splitlines()) >= 2, what="script end")

    env_line, cwd_line, *_ = runpod_emulator.pod_log(pod_id).splitlines()
    assert env_line == (
        f'{{"RUNPOD_POD_ID": "{pod_id}", "LORABOT_TIME_SCALE": "60.0", "LORABOT_VOLUME": "{volume.path}", '
        f'"LORABOT_FAKE_GPU": "RTX 4090", "HOME": "{Path.home()}"}}'
    )
    assert Path(cwd_line) == runpod_emulator.pod_disk(pod_id)
    assert (volume.path / "hello.txt").read_text() == f"written by {pod_id}"


async def test_a_file_one_pod_writes_on_the_volume_is_read_by_another_pod(runpod_emulator: RunpodEmulator) -> None:
    volume = runpod_emulator.create_volume("v", 30, "EU-RO-1")
    cpu = runpod.create_pod(
        "lorabot-j1-cpu",
        "runpod/base",
        instance_id="cpu3g-2-8",
        network_volume_id=volume.id,
        volume_mount_path="/workspace",
        docker_args="sh -c 'echo ready-from-$RUNPOD_POD_ID > /workspace/READY.tmp && mv /workspace/READY.tmp "
        "/workspace/READY; sleep 1000'",
    )["id"]
    runpod_emulator.advance(CPU_STARTUP_S)
    runpod_emulator.wait_until(lambda: (volume.path / "READY").exists(), what="READY on the volume")

    gpu = _gpu_pod(volume.id, "sh -c 'cat /workspace/READY; sleep 1000'")
    runpod_emulator.advance(GPU_STARTUP_S)
    runpod_emulator.wait_until(lambda: "ready-from" in runpod_emulator.pod_log(gpu), what="the GPU pod's read")
    assert runpod_emulator.pod_log(gpu) == f"ready-from-{cpu}\n"


async def test_gpu_pods_have_an_nvidia_smi_stand_in_and_cpu_pods_have_none(runpod_emulator: RunpodEmulator) -> None:
    gpu = _gpu_pod(None, "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader")
    cpu = runpod.create_pod(
        "c", "img", instance_id="cpu3c-2-4", docker_args="sh -c 'command -v nvidia-smi || echo no-gpu'"
    )["id"]
    runpod_emulator.advance(GPU_STARTUP_S)
    runpod_emulator.wait_until(lambda: bool(runpod_emulator.pod_log(gpu) and runpod_emulator.pod_log(cpu)))
    assert runpod_emulator.pod_log(gpu).startswith("NVIDIA GeForce RTX 4090, 24576 MiB")
    assert runpod_emulator.pod_log(cpu).startswith("no-gpu\n")  # more lines when the platform restarted it


async def test_terminate_sends_sigterm_then_removes_the_container_disk(
    runpod_emulator: RunpodEmulator, tmp_path: Path
) -> None:
    args = _python(
        tmp_path,
        "graceful",
        (
            "import signal, sys, time\n"
            "def bye(signum, frame):\n"
            "    print('got SIGTERM', flush=True); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, bye)\n"
            "open('scratch.bin', 'w').write('x')\n"
            "print('up', flush=True)\n"
            "time.sleep(1000)\n"
        ),
    )
    pod_id = _gpu_pod(None, args)
    runpod_emulator.advance(GPU_STARTUP_S)
    runpod_emulator.wait_until(lambda: "up" in runpod_emulator.pod_log(pod_id), what="the process")
    assert (runpod_emulator.pod_disk(pod_id) / "scratch.bin").exists()

    runpod.terminate_pod(pod_id)
    runpod_emulator.wait_until(lambda: not runpod_emulator.pod(pod_id).process_alive, what="the process to end")
    assert runpod_emulator.pod_log(pod_id) == "up\ngot SIGTERM\n"
    assert runpod_emulator.pod(pod_id).exit_code == 0
    runpod_emulator.wait_until(lambda: not runpod_emulator.pod_disk(pod_id).exists(), what="disk removal")


async def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(
    make_runpod_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = make_runpod_emulator(time_scale=20.0, kill_grace_s=10.0)  # grace = 0.5 real seconds
    args = _python(
        tmp_path,
        "stubborn",
        (
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, lambda *_: print('ignoring SIGTERM', flush=True))\n"
            "print('up', flush=True)\n"
            "time.sleep(1000)\n"
        ),
    )
    pod_id = _gpu_pod(None, args)
    emulator.advance(GPU_STARTUP_S)
    emulator.wait_until(lambda: "up" in emulator.pod_log(pod_id), what="the process")

    runpod.terminate_pod(pod_id)
    emulator.wait_until(lambda: "ignoring SIGTERM" in emulator.pod_log(pod_id), what="SIGTERM")
    assert emulator.pod(pod_id).process_alive, "killed before the grace period ended"
    emulator.wait_until(lambda: not emulator.pod(pod_id).process_alive, what="SIGKILL")
    report = emulator.pod(pod_id)
    assert report.exit_code == -9
    assert [event for _, event in report.events] == ["created", "started", "terminated", "killed after grace period"]


async def test_a_program_detached_into_its_own_session_still_dies_with_its_pod(
    make_runpod_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    """The agent starts sd-scripts with start_new_session (seed 000: SSH hang-ups); a container's end still
    takes it down, so the emulator must too."""
    emulator = make_runpod_emulator(time_scale=20.0, kill_grace_s=10.0)
    trainer = tmp_path / "trainer.py"
    trainer.write_text(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('training', flush=True)\n"
        "time.sleep(1000)\n"
    )
    args = _python(
        tmp_path,
        "agent",
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, {str(trainer)!r}], start_new_session=True)\n"
        "time.sleep(1000)\n",
    )
    pod_id = _gpu_pod(None, args)
    emulator.advance(GPU_STARTUP_S)
    emulator.wait_until(lambda: "training" in emulator.pod_log(pod_id), what="the detached trainer")
    assert len(_group(pod_id)) == 2

    runpod.terminate_pod(pod_id)
    emulator.wait_until(lambda: _group(pod_id) == [], what="the whole container to die")
    assert not emulator.pod(pod_id).process_alive


async def test_a_start_command_that_ends_is_restarted_with_a_fresh_disk_and_the_same_volume(
    runpod_emulator: RunpodEmulator,
) -> None:
    """RunPod restarts a container whose main process ended (dstack #1142): the pod never sits EXITED."""
    volume = runpod_emulator.create_volume("v", 30, "EU-RO-1")
    runpod_emulator.set_restart_policy(crash_window_s=0)  # no run counts as quick: it restarts forever
    pod_id = _gpu_pod(volume.id, "sh -c 'ls; echo run >> /workspace/runs; touch on-disk; sleep 0.2; exit 3'")
    runpod_emulator.advance(GPU_STARTUP_S)
    runpod_emulator.wait_until(lambda: runpod_emulator.pod(pod_id).restarts >= 2, what="two restarts")

    report = runpod_emulator.pod(pod_id)
    assert report.state == "RUNNING" and report.exit_code == 3
    assert (volume.path / "runs").read_text().startswith("run\nrun\n")
    assert "on-disk" not in runpod_emulator.pod_log(pod_id)  # each run found an empty container disk
    events = [event for _, event in report.events]
    assert events[:5] == ["created", "started", "exited with code 3", "restarting in 10 s", "restarted (1)"]
    assert runpod.get_pod(pod_id)["desiredStatus"] == "RUNNING"
    assert [p.id for p in runpod_emulator.running_pods()] == [pod_id]


async def test_a_crash_loop_ends_in_error_and_keeps_billing_until_terminated(
    make_runpod_emulator: EmulatorFactory,
) -> None:
    # The clock runs on its own here (a jump would make a run look long): 310 s of back-offs, 10, 20, 40, 80
    # and 160, take about a real second; every run ends at once, so the 6th quick exit in a row is the crash loop.
    runpod_emulator = make_runpod_emulator(time_scale=300.0)
    pod_id = _gpu_pod(None, "sh -c 'exit 1'")
    runpod_emulator.advance(GPU_STARTUP_S)
    runpod_emulator.wait_until(lambda: runpod_emulator.pod(pod_id).state == "ERROR", timeout=10, what="the crash loop")
    report = runpod_emulator.pod(pod_id)
    assert (report.restarts, report.exit_code, report.process_alive) == (5, 1, False)
    pod = runpod.get_pod(pod_id)
    assert (pod["desiredStatus"], pod["runtime"]) == ("EXITED", None)

    before = report.billed_seconds
    runpod_emulator.advance(600)
    assert runpod_emulator.pod(pod_id).billed_seconds >= before + 600
    assert runpod_emulator.pod(pod_id).restarts == 5  # ERROR stays ERROR
    assert [p.id for p in runpod_emulator.running_pods()] == [pod_id]
    runpod.terminate_pod(pod_id)
    assert runpod_emulator.running_pods() == []


async def test_a_start_command_that_cannot_start_counts_as_an_exit_and_restarts(
    runpod_emulator: RunpodEmulator,
) -> None:
    pod_id = _gpu_pod(None, "/no/such/program")
    runpod_emulator.advance(GPU_STARTUP_S)
    runpod_emulator.advance(10)
    runpod_emulator.wait_until(lambda: runpod_emulator.pod(pod_id).restarts >= 1, what="a restart")
    assert runpod_emulator.pod(pod_id).exit_code == 127
    assert runpod_emulator.pod_log(pod_id).count("container start failed") >= 2


async def test_stop_keeps_the_volume_wipes_the_disk_and_resume_runs_the_command_again(
    runpod_emulator: RunpodEmulator,
) -> None:
    volume = runpod_emulator.create_volume("v", 30, "EU-RO-1")
    pod_id = _gpu_pod(volume.id, "sh -c 'echo run >> /workspace/runs; touch on-disk; sleep 1000'")
    runpod_emulator.advance(GPU_STARTUP_S)
    runpod_emulator.wait_until(lambda: (runpod_emulator.pod_disk(pod_id) / "on-disk").exists(), what="first run")

    runpod.stop_pod(pod_id)
    runpod_emulator.wait_until(lambda: not (runpod_emulator.pod_disk(pod_id) / "on-disk").exists(), what="wipe")
    billed_when_stopped = runpod_emulator.pod(pod_id).billed_seconds
    runpod_emulator.advance(3600)
    assert runpod_emulator.pod(pod_id).billed_seconds == billed_when_stopped
    assert runpod_emulator.running_pods() == []

    runpod.resume_pod(pod_id, 1)
    runpod_emulator.advance(GPU_STARTUP_S)
    runpod_emulator.wait_until(lambda: (volume.path / "runs").read_text() == "run\nrun\n", what="second run")


async def test_resume_without_free_gpus_gives_runpods_host_error(runpod_emulator: RunpodEmulator) -> None:
    pod_id = _gpu_pod(None, "sleep 1000", data_center_id="EU-RO-1")
    runpod.stop_pod(pod_id)
    runpod_emulator.set_stock(RTX_4090, SECURE, 0, data_center_id="EU-RO-1")
    with pytest.raises(runpod.error.QueryError, match="There are not enough free GPUs on the host machine"):
        runpod.resume_pod(pod_id, 1)


async def test_spot_interruption_sigterms_then_kills_and_stops_billing(
    make_runpod_emulator: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = make_runpod_emulator(time_scale=20.0, kill_grace_s=10.0)
    args = _python(
        tmp_path,
        "spot",
        (
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, lambda *_: print('saving state', flush=True))\n"
            "print('training', flush=True)\n"
            "time.sleep(1000)\n"
        ),
    )
    answer = runpod_graphql(
        emulator,
        """
        mutation($input: PodRentInterruptableInput!) { podRentInterruptable(input: $input) { id } }""",
        {
            "input": {
                "name": "lorabot-j3-gpu",
                "imageName": "img",
                "gpuTypeId": RTX_4090,
                "cloudType": "COMMUNITY",
                "bidPerGpu": 0.29,
                "dockerArgs": args,
            }
        },
    )
    pod_id = answer.json()["data"]["podRentInterruptable"]["id"]
    emulator.advance(GPU_STARTUP_S)
    emulator.wait_until(lambda: "training" in emulator.pod_log(pod_id), what="training")

    emulator.interrupt(pod_id)
    emulator.wait_until(lambda: not emulator.pod(pod_id).process_alive, what="the kill")
    report = emulator.pod(pod_id)
    assert emulator.pod_log(pod_id) == "training\nsaving state\n"
    assert (report.state, report.exit_code, report.interrupted_at is not None) == ("STOPPED", -9, True)
    pod = runpod.get_pod(pod_id)
    assert (pod["desiredStatus"], pod["runtime"], pod["podType"]) == ("EXITED", None, "INTERRUPTABLE")
    billed = report.billed_seconds
    emulator.advance(3600)
    assert emulator.pod(pod_id).billed_seconds == billed


async def test_billing_follows_the_simulated_clock_per_second(runpod_emulator: RunpodEmulator) -> None:
    pod_id = _gpu_pod(None, "sleep 1000")
    runpod_emulator.advance(3600)
    runpod.terminate_pod(pod_id)
    report = runpod_emulator.pod(pod_id)
    elapsed = report.terminated_at - report.created_at  # type: ignore[operator]
    assert 3600 <= report.billed_seconds <= elapsed + 1
    assert report.cost_micros == cost_micros(report.billed_seconds, 690_000)
    runpod_emulator.advance(3600)
    assert runpod_emulator.pod(pod_id).billed_seconds == report.billed_seconds


def test_billing_arithmetic_is_whole_seconds_and_integer_micros() -> None:
    assert billed_seconds([(0.0, 0.2), (10.0, 70.0)], now=100.0) == 1 + 60
    assert billed_seconds([(40.0, None)], now=100.5) == 61
    assert cost_micros(3600, 690_000) == 690_000
    assert cost_micros(1, 440_000) == 122  # 122.2 rounds half up to the micro-dollar
    assert volume_cost_micros(30, 4 * 3600) == 11_667  # seed 000: 30 GB for 4 h ≈ $0.01
    assert volume_cost_micros(30, 3601) == volume_cost_micros(30, 7200)  # every started hour


async def test_a_pod_that_never_starts_keeps_runtime_null_and_bills(runpod_emulator: RunpodEmulator) -> None:
    runpod_emulator.never_start_next_pod()
    stuck = _gpu_pod(None, "sleep 1000")
    fine = _gpu_pod(None, "sleep 1000")
    runpod_emulator.advance(3600)
    assert runpod.get_pod(stuck)["runtime"] is None
    assert runpod.get_pod(fine)["runtime"] is not None
    assert runpod_emulator.pod(stuck).billed_seconds >= 3600


def _group(pod_id: str) -> list[psutil.Process]:
    """Live (non-zombie) processes started for a pod, found by the RUNPOD_POD_ID in their environment."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get("RUNPOD_POD_ID") == pod_id:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_stop_kills_a_pod_that_ignores_sigterm_and_leaves_no_process_port_or_folder(tmp_path: Path) -> None:
    """Even with a running pod whose process ignores SIGTERM, stop() cleans everything up."""
    emulator = RunpodEmulator(time_scale=60.0).start()
    port, root = emulator.server.port, emulator.root
    volume = emulator.create_volume("v", 30, "EU-RO-1")
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import signal, subprocess, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen(['sleep', '1000'])\ntime.sleep(1000)\n"
    )  # and a grandchild
    answer = runpod_graphql(
        emulator,
        """
        mutation($input: PodFindAndDeployOnDemandInput) { podFindAndDeployOnDemand(input: $input) { id } }""",
        {
            "input": {
                "name": "p",
                "imageName": "img",
                "gpuTypeId": RTX_4090,
                "networkVolumeId": volume.id,
                "dockerArgs": f"{sys.executable} {script}",
            }
        },
    )
    pod_id = answer.json()["data"]["podFindAndDeployOnDemand"]["id"]
    emulator.advance(GPU_STARTUP_S)
    emulator.wait_until(lambda: emulator.pod(pod_id).process_alive, what="the pod process")
    emulator.wait_until(lambda: len(_group(pod_id)) == 2, what="the grandchild")
    assert _listening(port)

    stopping = time.monotonic()
    emulator.stop()
    assert time.monotonic() - stopping < 30, "stop() waited for the stubborn pod instead of killing it"
    assert psutil.Process().children(recursive=True) == []
    assert _group(pod_id) == []
    assert not _listening(port)
    assert not root.exists()
    assert not any(thread.name == "runpod-emulator" for thread in threading.enumerate())


async def test_seed_000s_run_costs_what_seed_000_paid(make_runpod_emulator: EmulatorFactory) -> None:
    """Volume 30 GB for 4 h, CPU pod 2 vCPU / 8 GB for 40 min, secure RTX 4090 for 60 min: about $0.75."""
    emulator = make_runpod_emulator(time_scale=1.0)  # time moves by advance() only, near enough
    volume = emulator.create_volume("lorabot", 30, "EU-RO-1")
    cpu = runpod.create_pod("cpu", "runpod/base", instance_id="cpu3g-2-8", network_volume_id=volume.id)["id"]
    emulator.advance(40 * 60)
    runpod.terminate_pod(cpu)
    gpu = _gpu_pod(volume.id, "sleep 1000")
    emulator.advance(60 * 60)
    runpod.terminate_pod(gpu)
    emulator.advance(4 * 3600 - 100 * 60 - 1)

    assert emulator.pod(cpu).cost_micros == pytest.approx(53_333, rel=0.001)
    assert emulator.pod(gpu).cost_micros == pytest.approx(690_000, rel=0.001)
    assert [v.cost_micros for v in emulator.volumes()] == [11_667]
    assert emulator.total_cost_micros() == pytest.approx(755_000, rel=0.001)
