"""SIGTERM handling: the handler only raises a flag; the stage loops look at it and shut down in order."""

from __future__ import annotations

import signal
import time
from types import FrameType

# Real seconds between two looks at the flag while sleeping.
SLICE = 0.05


class StopFlag:
    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.received_at: float | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        # Seed 000: a hang-up of the session must not end the run.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            self.received_at = time.monotonic()

    def sleep(self, real_seconds: float) -> bool:
        """Sleep, waking early when a stop is requested; True when it was."""
        deadline = time.monotonic() + real_seconds
        while not self.requested:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(SLICE, left))
        return self.requested
