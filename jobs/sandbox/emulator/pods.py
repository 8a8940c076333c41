"""A pod's container, played by a local process group.

The start command runs with `start_new_session=True`, so the pod is its own process group and stop,
terminate and spot interruption reach every process it started (SIGTERM, then SIGKILL after the grace
period), like `docker stop` does to a container. When the main process ends, whatever it left in its group
is killed too: a container ends with its PID 1.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from pathlib import Path

_NVIDIA_SMI = """#!/bin/sh
# Stand-in for nvidia-smi on an emulated GPU pod: enough for "is there a GPU, which one, how much memory".
name={name}
mem={memory_mib}
count={count}
case "$*" in
  *--query-gpu*)
    i=0
    while [ "$i" -lt "$count" ]; do echo "$name, $mem MiB, 0 MiB, 0 %"; i=$((i + 1)); done ;;
  *-L*)
    i=0
    while [ "$i" -lt "$count" ]; do echo "GPU $i: $name (UUID: GPU-emulated-$i)"; i=$((i + 1)); done ;;
  *)
    echo "+-----------------------------------------------------------------------------------------+"
    echo "| NVIDIA-SMI 550.127.05   (lorabot emulator)   Driver Version: 550.127.05   CUDA Version: 12.4 |"
    i=0
    while [ "$i" -lt "$count" ]; do echo "|   $i  $name   0MiB / ${{mem}}MiB   0%   Default |"; i=$((i + 1)); done
    echo "+-----------------------------------------------------------------------------------------+" ;;
esac
"""


def write_nvidia_smi(bin_dir: Path, gpu_product_name: str, memory_gb: int, gpu_count: int) -> None:
    """`gpu_product_name` is what nvidia-smi prints, which is RunPod's GPU type id ("NVIDIA GeForce RTX 4090")."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text(
        _NVIDIA_SMI.format(
            name=shlex.quote(gpu_product_name),
            memory_mib=memory_gb * 1024,
            count=gpu_count,
        )
    )
    script.chmod(0o755)


def substitute_mount(text: str, mount_path: str, local_path: Path) -> str:
    """Every occurrence of the pod's volumeMountPath stands for the volume's local folder (CONTRACTS.md)."""
    return text.replace(mount_path, str(local_path)) if mount_path else text


class PodProcess:
    """One run of a pod's start command. Not thread-safe: the emulator's lock guards it.

    The container is the start command's process group plus every process that carries the pod's
    `RUNPOD_POD_ID` in its environment: a program that detaches into a session of its own (nohup, setsid,
    `start_new_session`) still dies with its container, as it would on RunPod.
    """

    def __init__(self, popen: subprocess.Popen[bytes], pod_id: str) -> None:
        self.popen = popen
        self.pgid = popen.pid  # start_new_session makes the child its own group leader
        self.marker = f"RUNPOD_POD_ID={pod_id}".encode()
        self.term_sent_at: float | None = None  # sim time of SIGTERM, for the grace period
        self.killed = False

    @classmethod
    def spawn(cls, pod_id: str, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> PodProcess:
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        return cls(popen, pod_id)

    def exit_code(self) -> int | None:
        """None while the main process runs; reaps it once it has ended."""
        return self.popen.poll()

    @property
    def alive(self) -> bool:
        return self.exit_code() is None

    def group_alive(self) -> bool:
        """Whether any process of the container is left (a child may outlive the main process)."""
        if self.alive:
            return True
        return bool(self._members())

    def send_term(self, sim_now: float) -> None:
        if self.term_sent_at is None:
            self.term_sent_at = sim_now
            self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        self.killed = True
        self.exit_code()

    def kill_and_wait(self, timeout: float = 2.0) -> None:
        self.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
        for pid, in_group in self._members():
            if not in_group:  # the group got it already; a second SIGTERM could cut a clean exit short
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)

    def _members(self) -> list[tuple[int, bool]]:
        """Live (non-zombie) pids of the container, each with whether it is in the start command's group.

        Orphans of a killed pod are reparented to PID 1, which may reap them late: a zombie holds nothing, so
        it doesn't count. Without /proc (macOS) only the process group is known.
        """
        proc = Path("/proc")
        if not proc.is_dir():
            try:
                os.killpg(self.pgid, 0)
            except (ProcessLookupError, PermissionError):
                return []
            return [(self.pgid, True)]
        members = []
        for entry in proc.iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                stat = (entry / "stat").read_text()
                # Fields after the command name (which may hold spaces and parentheses): state ppid pgrp ...
                fields = stat[stat.rfind(")") + 2 :].split()
                if fields[0] == "Z":
                    continue
                if int(fields[2]) == self.pgid:
                    members.append((int(entry.name), True))
                elif self.marker in (entry / "environ").read_bytes().split(b"\0"):
                    members.append((int(entry.name), False))
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile, or another user's process
        return members
