"""`lorabot demo` wall time and memory: `python -m bench.demo [--runs 3]`.

Runs the console script as the README does, in a fresh data folder each time, and samples every 50 ms the RSS of the
`lorabot` process itself and the sum over its whole process tree (the sandbox's pods are its children: agent,
stand-in trainer). Sampling can miss a peak shorter than 50 ms; `VmHWM` of the bot process is read too while it
runs, which cannot.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

MIB = 1024 * 1024


@dataclass(frozen=True)
class Run:
    seconds: float
    bot_peak_mib: float
    tree_peak_mib: float
    exit_code: int


def measure_once(lorabot: Path) -> Run:
    data_dir = Path(tempfile.mkdtemp(prefix="lorabot-bench-demo-"))
    try:
        started = time.monotonic()
        child = subprocess.Popen(
            [str(lorabot), "demo", "--data-dir", str(data_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        root = psutil.Process(child.pid)
        bot_peak = tree_peak = 0
        while child.poll() is None:
            try:
                bot_peak = max(bot_peak, _vm_hwm(child.pid), root.memory_info().rss)
                tree = [root, *root.children(recursive=True)]
                tree_peak = max(tree_peak, sum(_rss(p) for p in tree))
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.05)
        seconds = time.monotonic() - started
        if child.returncode != 0 and child.stderr is not None:
            print(child.stderr.read().decode(errors="replace"), file=sys.stderr)
        return Run(seconds, bot_peak / MIB, tree_peak / MIB, child.returncode)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _rss(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.NoSuchProcess:
        return 0


def _vm_hwm(pid: int) -> int:
    """The kernel's high-water mark of the process's RSS, in bytes (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lorabot = Path(sys.executable).parent / "lorabot"
    runs = [measure_once(lorabot) for _ in range(args.runs)]
    print("| run | exit | wall s | bot peak RSS MiB | process tree peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|")
    for index, run in enumerate(runs, 1):
        print(f"| {index} | {run.exit_code} | {run.seconds:.1f} | {run.bot_peak_mib:.0f} | {run.tree_peak_mib:.0f} |")
    print(
        f"median wall {statistics.median(r.seconds for r in runs):.1f} s, max {max(r.seconds for r in runs):.1f} s; "
        f"bot peak {max(r.bot_peak_mib for r in runs):.0f} MiB; tree peak {max(r.tree_peak_mib for r in runs):.0f} MiB"
    )
    return 0 if all(r.exit_code == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
