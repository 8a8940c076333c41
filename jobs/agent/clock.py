"""Simulated time for the emulator and the sandbox (docs/CONTRACTS.md "Simulated time").

With LORABOT_TIME_SCALE=s the agent sleeps sim/s real seconds and reports every duration, ETA and timestamp in
simulated seconds, so a ten-minute training can be tested in a few real seconds. Unset means real time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping


class Clock:
    def __init__(self, scale: float = 1.0) -> None:
        if not scale > 0:
            raise ValueError(f"time scale must be a positive number, got {scale!r}")
        self.scale = scale
        self._real_start = time.monotonic()
        self._sim_start = time.time()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Clock:
        raw = env.get("LORABOT_TIME_SCALE", "").strip()
        if not raw:
            return cls()
        try:
            return cls(float(raw))
        except ValueError:
            raise ValueError(f"LORABOT_TIME_SCALE must be a positive number, got {raw!r}") from None

    def now(self) -> float:
        """Simulated UNIX time."""
        return self._sim_start + (time.monotonic() - self._real_start) * self.scale

    def iso(self, at: float | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.now() if at is None else at))

    def real_seconds(self, sim_seconds: float) -> float:
        return sim_seconds / self.scale

    def sleep(self, sim_seconds: float) -> None:
        time.sleep(max(0.0, sim_seconds) / self.scale)
