"""Simulated time for the emulator and the sandbox (docs/CONTRACTS.md "Simulated time").

`sim_now = sim_start + real_elapsed * time_scale + jumps`. Every duration the emulator models (start-up delay,
billing, uptime, kill grace) is in simulated seconds, so a 50-minute training bills 50 minutes in a test
that takes seconds.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta


class SimClock:
    """A clock that runs `time_scale` simulated seconds per real second and can jump forward."""

    def __init__(self, time_scale: float = 1.0, start: datetime | None = None) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        self.time_scale = float(time_scale)
        self.start = start or datetime.now(UTC)
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        self._real_origin = time.monotonic()
        self._jumped = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Simulated seconds since the clock's start."""
        with self._lock:
            return (time.monotonic() - self._real_origin) * self.time_scale + self._jumped

    def utcnow(self) -> datetime:
        return self.start + timedelta(seconds=self.now())

    def to_datetime(self, sim_seconds: float) -> datetime:
        return self.start + timedelta(seconds=sim_seconds)

    def advance(self, seconds: float) -> None:
        """Jump forward (never back: billing and deadlines assume time only grows)."""
        if seconds < 0:
            raise ValueError(f"the clock only moves forward, got {seconds}")
        with self._lock:
            self._jumped += seconds

    def real_seconds(self, sim_seconds: float) -> float:
        """How long `sim_seconds` take in real time at this scale (what a sleeper should wait)."""
        return sim_seconds / self.time_scale
