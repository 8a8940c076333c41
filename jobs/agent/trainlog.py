"""Reads sd-scripts' output: progress from the tqdm bar and the epoch lines, and why it failed.

Lines quoted from train_network.py @48d368fa (see facts/sd-scripts.md):
  "  total optimization steps / 学習ステップ数: 5900"
  "epoch 3/10"
  "steps:  10%|█         | 590/5900 [05:01<45:10,  1.96it/s, avr_loss=0.0912]"   (stderr, \\r-separated)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

TOTAL_STEPS = re.compile(r"total optimization steps[^:]*:\s*(\d+)")
EPOCH = re.compile(r"^\s*epoch (\d+)/(\d+)\s*$")
TQDM = re.compile(
    r"steps:\s*\d+%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*\[(?P<elapsed>[\d:]+)<(?P<left>[\d:?]+),\s*"
    r"(?P<rate>[\d.]+|\?)(?P<unit>it/s|s/it)(?P<post>[^\]]*)\]"
)
AVR_LOSS = re.compile(r"avr_loss=([-+]?(?:nan|inf|[\d.]+(?:e[-+]?\d+)?))", re.IGNORECASE)

# Most specific first: an OOM traceback also contains "Traceback" and "Error".
FAILURE_PATTERNS: list[tuple[str, re.Pattern[str], str]] = [
    (
        "oom",
        re.compile(r"OutOfMemoryError|CUDA out of memory|CUDA error: out of memory"),
        "The GPU ran out of memory. Try a smaller batch size or resolution, or enable gradient checkpointing.",
    ),
    (
        "nan",
        re.compile(r"avr_loss=nan|loss is nan|NaN detected", re.IGNORECASE),
        "The loss became NaN, so training was stopped. Try a lower learning rate or another precision.",
    ),
    ("assertion", re.compile(r"AssertionError"), "sd-scripts refused the settings (an assertion failed)."),
    (
        "missing_file",
        re.compile(r"FileNotFoundError|No such file or directory"),
        "sd-scripts could not find a file it needs.",
    ),
]


def _clock_to_seconds(text: str) -> float | None:
    if "?" in text:
        return None
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


@dataclass
class Progress:
    step: int | None = None
    total_steps: int | None = None
    epoch: int | None = None
    total_epochs: int | None = None
    loss: float | None = None
    it_per_s: float | None = None
    eta_seconds: float | None = None
    nan_seen: bool = False
    epoch_losses: dict[int, float] = field(default_factory=dict)


class TrainLog:
    """Fed the trainer's output in chunks; keeps the latest progress and the last lines for error messages.

    `resumed_epochs` is how many epochs the run resumed past: without --skip_until_initial_step, sd-scripts
    restarts its bar at 0 of the full total after a resume, so the real step is (done epochs' steps) + n.
    """

    def __init__(self, total_epochs: int, resumed_epochs: int = 0) -> None:
        self.progress = Progress(total_epochs=total_epochs)
        self.resumed_epochs = resumed_epochs
        self._pending = ""
        self.tail: list[str] = []
        self.epochs_started: list[int] = []

    def feed(self, text: str) -> None:
        data = self._pending + text
        pieces = re.split(r"[\r\n]", data)
        self._pending = pieces.pop()
        for line in pieces:
            self._line(line)

    def _line(self, line: str) -> None:
        if not line.strip():
            return
        if not TQDM.search(line):
            self.tail = [*self.tail[-199:], line]
        p = self.progress
        if match := TOTAL_STEPS.search(line):
            p.total_steps = int(match.group(1))
        elif match := EPOCH.match(line):
            p.epoch, p.total_epochs = int(match.group(1)), int(match.group(2))
            self.epochs_started.append(p.epoch)
        elif match := TQDM.search(line):
            self._tqdm(match)

    def _tqdm(self, match: re.Match[str]) -> None:
        p = self.progress
        n, bar_total = int(match.group("n")), int(match.group("total"))
        total = p.total_steps or bar_total
        # With --skip_until_initial_step the bar covers only what is left; otherwise it restarts at 0.
        offset = total * self.resumed_epochs // max(1, p.total_epochs or 1)
        p.step = total - (bar_total - n) if bar_total < total else min(total, offset + n)
        p.total_steps = total
        rate = match.group("rate")
        if rate != "?" and float(rate) > 0:
            p.it_per_s = float(rate) if match.group("unit") == "it/s" else 1.0 / float(rate)
            p.eta_seconds = round((total - p.step) / p.it_per_s, 1)
        if loss := AVR_LOSS.search(match.group("post")):
            value = float(loss.group(1))
            if math.isnan(value) or math.isinf(value):
                p.nan_seen = True
            else:
                p.loss = value
                if p.epoch is not None:
                    p.epoch_losses[p.epoch] = value

    def snapshot(self) -> dict[str, object]:
        p = self.progress
        return {
            "step": p.step,
            "total_steps": p.total_steps,
            "epoch": p.epoch,
            "total_epochs": p.total_epochs,
            "loss": p.loss,
            "it_per_s": p.it_per_s,
            "eta_seconds": p.eta_seconds,
        }


def classify_failure(tail: list[str], nan_seen: bool, exit_code: int | None) -> tuple[str, str]:
    """(error kind, human message) for a trainer that did not succeed."""
    text = "\n".join(tail)
    if nan_seen:
        return FAILURE_PATTERNS[1][0], FAILURE_PATTERNS[1][2]
    for kind, pattern, message in FAILURE_PATTERNS:
        match = pattern.search(text)
        if match:
            detail = next((line.strip() for line in reversed(tail) if pattern.search(line)), "")
            return kind, f"{message} ({detail[:300]})" if detail else message
    last = next((line.strip() for line in reversed(tail) if line.strip()), "")
    return "trainer_crash", f"sd-scripts exited with code {exit_code}." + (f" Last line: {last[:300]}" if last else "")
