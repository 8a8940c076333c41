"""The fake Discord's clock: real time plus an offset that tests can push forward.

Discord's deadlines (3 s to acknowledge, 15 min of token lifetime) are checked against this clock, so a test
can jump past them with `advance()` instead of sleeping.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class FakeClock:
    def __init__(self) -> None:
        self._offset_s = 0.0

    def now(self) -> float:
        """Monotonic seconds, shifted by every `advance()` so far."""
        return time.monotonic() + self._offset_s

    def utcnow(self) -> datetime:
        """Wall-clock UTC time, shifted the same way (used for message timestamps)."""
        return datetime.now(UTC) + timedelta(seconds=self._offset_s)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"the fake clock only moves forward, got advance({seconds})")
        self._offset_s += seconds

    @property
    def offset(self) -> float:
        return self._offset_s
