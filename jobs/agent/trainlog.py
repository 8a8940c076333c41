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
    # Seconds each epoch's end (checkpoint, state, samples) took, measured in this run; None until one has passed.
    epoch_end_s: float | None = None
    nan_seen: bool = False
    epoch_losses: dict[int, float] = field(default_factory=dict)


class TrainLog:
    """Fed the trainer's output in chunks; keeps the latest progress and the last lines for error messages.

    `resumed_epochs` is how many epochs the run resumed past: without --skip_until_initial_step, sd-scripts
    restarts its bar at 0 of the full total after a resume, so the real step is (done epochs' steps) + n.

    The ETA: sd-scripts calls `progress_bar.unpause()` after sampling and after each epoch's saves
    (train_network.py @48d368fa), so the bar's elapsed time, its rate and its own "remaining" leave out every
    checkpoint, state and sample image. The agent measures that time from its own clock: at the newest bar line,
    everything since the bar first showed that the bar did not count (wall time minus n / rate, tqdm's elapsed
    with smoothing=0) was spent at the epoch ends passed so far. The ETA is the bar's steps left at its rate plus
    one such end for the current epoch and each later one (the last epoch's end saves and samples too).
    Only the newest line of each read is measured (it was printed at most a step ago, however long the agent was
    busy uploading), and never one at an epoch's last step, where a pause may be under way.
    """

    def __init__(self, total_epochs: int, resumed_epochs: int = 0) -> None:
        self.progress = Progress(total_epochs=total_epochs)
        self.resumed_epochs = resumed_epochs
        self._pending = ""
        self.tail: list[str] = []
        self.epochs_started: list[int] = []
        self._now: float | None = None
        self._bar_started_at: float | None = None  # agent's clock when this run's bar first showed
        self._bar_n = 0  # the bar's own count at its latest line (it restarts at 0 on a resume)

    def feed(self, text: str, now: float | None = None) -> None:
        """`now`: the agent's clock (simulated seconds) when the text was read; without it no end is measured."""
        self._now = now
        data = self._pending + text
        pieces = re.split(r"[\r\n]", data)
        self._pending = pieces.pop()
        for line in pieces:
            self._line(line)
        # tqdm ends each redraw with the next one's "\r": its newest line is still pending, already complete.
        if (match := TQDM.search(self._pending)) is not None:
            self._tqdm(match)
        self._measure_epoch_ends()
        self._update_eta()

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
        self._bar_n = n
        if self._bar_started_at is None and self._now is not None:
            self._bar_started_at = self._now
        rate = match.group("rate")
        if rate != "?" and float(rate) > 0:
            p.it_per_s = float(rate) if match.group("unit") == "it/s" else 1.0 / float(rate)
        self._update_eta()
        if loss := AVR_LOSS.search(match.group("post")):
            value = float(loss.group(1))
            if math.isnan(value) or math.isinf(value):
                p.nan_seen = True
            else:
                p.loss = value
                if p.epoch is not None:
                    p.epoch_losses[p.epoch] = value

    def _measure_epoch_ends(self) -> None:
        """The time the bar paused for, shared by the epoch ends this run has passed (see the class)."""
        p, ends = self.progress, len(self.epochs_started) - 1
        if ends < 1 or self._now is None or self._bar_started_at is None or not p.it_per_s:
            return
        if p.step is None or not p.total_steps or not p.total_epochs:
            return
        if p.step % max(1, p.total_steps // p.total_epochs) == 0:
            return  # an epoch's last step: its end may be running now, not yet counted in `ends`
        paused = (self._now - self._bar_started_at) - self._bar_n / p.it_per_s
        p.epoch_end_s = round(max(0.0, paused) / ends, 1)

    def _update_eta(self) -> None:
        p = self.progress
        if p.step is None or p.total_steps is None or not p.it_per_s:
            return
        eta = (p.total_steps - p.step) / p.it_per_s
        if p.epoch_end_s is not None and p.epoch is not None and p.total_epochs is not None:
            eta += max(0, p.total_epochs - p.epoch + 1) * p.epoch_end_s
        p.eta_seconds = round(eta, 1)

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
            "epoch_end_s": p.epoch_end_s,
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
