"""The outbox contract under a failing Discord, at the store level (bot/notifier.py was not there yet).

`FlakyThread` stands for Discord's "create message" endpoint as strictly as the suite needs: it answers a
scripted storm of 429s (with retry_after) and 5xxs, and, like Discord with `enforce_nonce`, a message sent
twice with the same nonce is stored once. `drain()` is the notifier's loop as CONTRACTS.md describes it:
`pending_notices(now=…)` in id order, `mark_notice_sent` on success, `mark_notice_failed` with a retry time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from storage.db import session_scope
from storage.queries import pending_notices
from storage.transitions import mark_notice_failed, mark_notice_sent


class DiscordHTTPError(Exception):
    def __init__(self, status: int, retry_after: float = 0.0) -> None:
        super().__init__(f"Discord answered HTTP {status}")
        self.status = status
        self.retry_after = retry_after


@dataclass
class FlakyThread:
    """Scripted answers: each entry of `storm` is consumed by one send (429 or 5xx); then sends succeed."""

    storm: list[int]
    delivered: list[tuple[int | None, str]] = field(default_factory=list)  # (job_id, idempotency key)
    nonces: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    lose_ack_of: set[str] = field(default_factory=set)  # keys whose first success the bot never hears about

    def send(self, job_id: int | None, key: str) -> int:
        if self.storm:
            status = self.storm.pop(0)
            self.refused += 1
            raise DiscordHTTPError(status, retry_after=2.0 if status == 429 else 0.0)
        nonce = hashlib.sha256(key.encode()).hexdigest()[:25]  # Discord nonces are ≤ 25 characters
        if nonce in self.nonces:
            return self.nonces[nonce]  # enforce_nonce: the same message, not a second one
        message_id = 1000 + len(self.delivered)
        self.nonces[nonce] = message_id
        self.delivered.append((job_id, key))
        if key in self.lose_ack_of:
            self.lose_ack_of.discard(key)
            raise ConnectionResetError("connection reset after Discord stored the message")
        return message_id


def drain(sessions: sessionmaker[Session], thread: FlakyThread, now: Callable[[], dt.datetime]) -> int:
    """One pass of the notifier; returns how many notices were sent."""
    sent = 0
    with session_scope(sessions) as s:
        due = [(n.id, n.job_id, n.idempotency_key) for n in pending_notices(s, now=now())]
    blocked: set[int | None] = set()
    for notice_id, job_id, key in due:
        if job_id is not None and job_id in blocked:
            continue  # keep a job's thread in order: nothing after a notice that failed this pass
        try:
            message_id = thread.send(job_id, key)
        except (DiscordHTTPError, ConnectionResetError) as exc:
            delay = getattr(exc, "retry_after", 0.0) or 1.0
            with session_scope(sessions) as s:
                mark_notice_failed(s, notice_id, error=str(exc), retry_at=now() + dt.timedelta(seconds=delay))
            blocked.add(job_id)
            continue
        with session_scope(sessions) as s:
            mark_notice_sent(s, notice_id, discord_message_id=message_id, now=now())
        sent += 1
    return sent
