"""What sd-scripts' console looks like: a scaled clock, rich-style log lines, and a tqdm progress bar.

- `accelerator.print` goes to stdout (train_network.py); `logger.*` goes to stderr through rich's
  RichHandler (library/utils.py `setup_logging`, datefmt "%Y-%m-%d %H:%M:%S"); tqdm writes to stderr
  with carriage returns and a newline on close.
- Time is simulated per docs/CONTRACTS.md: sim = real elapsed x LORABOT_TIME_SCALE; sleeping `s` simulated
  seconds sleeps s / scale real seconds. Every time printed (log stamps, tqdm elapsed/rate) is simulated.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time


class Clock:
    def __init__(self, scale: float) -> None:
        if scale <= 0:
            raise ValueError(f"LORABOT_TIME_SCALE must be > 0, got {scale}")
        self.scale = scale
        self._real_start = time.monotonic()
        self._sim_start = time.time()

    @classmethod
    def from_env(cls) -> Clock:
        return cls(float(os.environ.get("LORABOT_TIME_SCALE", "1") or "1"))

    def now(self) -> float:
        """Simulated unix time."""
        return self._sim_start + (time.monotonic() - self._real_start) * self.scale

    def sleep(self, sim_seconds: float) -> None:
        if sim_seconds > 0:
            time.sleep(sim_seconds / self.scale)


def _console_width() -> int:
    """rich's Console width without a terminal: COLUMNS when it is a number, else 80."""
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() else 80


class Console:
    def __init__(self, clock: Clock, script: str) -> None:
        self.clock = clock
        self.script = script
        self._bar_open = False

    def print(self, text: str = "") -> None:
        """accelerator.print: plain print to stdout."""
        print(text, flush=True)

    def log(self, level: str, message: str, where: str | None = None) -> None:
        """A RichHandler line: time, level padded to 8, message, source file.

        Like rich without a terminal, the message column is folded to fit the console width (COLUMNS, else 80): a
        long message continues on the next lines under its first (rich wraps at spaces and folds longer words;
        this breaks at spaces and then anywhere). Rich's padding to the full width is left out.
        Like rich, it does not start a fresh line after a tqdm bar: sd-scripts logs "" first where it cares.
        """
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.clock.now()))
        suffix = f" {where}" if where else ""
        lead = len(stamp) + 1 + 9
        room = max(10, _console_width() - lead - len(suffix))
        lines = textwrap.wrap(message, room, break_on_hyphens=False) or [""]
        text = f"{stamp} {level:<8} {lines[0]:<{room}}{suffix}".rstrip()
        for more in lines[1:]:
            text += "\n" + " " * lead + more
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def _break_bar(self) -> None:
        # tqdm.close() ends the bar's line
        if self._bar_open:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._bar_open = False

    def bar_update(self, line: str) -> None:
        sys.stderr.write("\r" + line)
        sys.stderr.flush()
        self._bar_open = True

    def bar_close(self) -> None:
        self._break_bar()


def _format_interval(seconds: float) -> str:
    # tqdm.format_interval: MM:SS, or H:MM:SS from one hour
    minutes, s = divmod(int(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _format_num(value: float) -> str:
    # tqdm.format_num for set_postfix numbers: '{0:.3g}' unless str() is not longer
    short = f"{value:.3g}".replace("+0", "+").replace("-0", "-")
    plain = str(value)
    return short if len(short) < len(plain) else plain


_BLOCKS = " ▏▎▍▌▋▊▉█"


def bar_line(desc: str, n: int, total: int, elapsed: float, postfix: dict[str, float]) -> str:
    """One tqdm line with smoothing=0 (rate = n / elapsed) and the 10-cell bar tqdm draws without a tty."""
    frac = n / total if total else 0.0
    cells = frac * 10
    full = int(cells)
    bar = _BLOCKS[-1] * full
    if full < 10:
        bar += _BLOCKS[int((cells - full) * 8)] + " " * (9 - full)
    rate = n / elapsed if elapsed > 0 and n > 0 else None
    if rate is None:
        rate_text, remaining = "?it/s", "?"
    else:
        rate_text = f"{rate:5.2f}it/s" if rate >= 1 else f"{1 / rate:5.2f}s/it"
        remaining = _format_interval((total - n) / rate)
    post = "".join(f", {k}={_format_num(v)}" for k, v in postfix.items())
    return f"{desc}: {frac * 100:3.0f}%|{bar}| {n}/{total} [{_format_interval(elapsed)}<{remaining}, {rate_text}{post}]"
