"""One orchestrator at a time: the bot process that holds the database lease advances jobs, reaps pods and sends
notices; any other process pointed at the same database (a restart overlapping the old process, a second copy
started by mistake) waits as a standby and takes over once the holder stops renewing.

The holder renews every tick, and again before a job's step whenever less than half the lease is left, so a leader
that overran its lease (a hung call, a paused VM) notices before its next job's step and stops. A standby asks once a
tick: it takes over at most one lease length plus one tick after the leader died (``kill -9`` included, since
nothing needs to be cleaned up by the dead process). Everything the orchestrator does is idempotent besides, so the
short window in which an old leader may still finish a step costs nothing twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from storage.db import session_scope
from storage.lease import ORCHESTRATOR_LEASE, get_lease, release, try_hold

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 30.0


def wall_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_holder_id() -> str:
    """``host:pid:random``: unique per process start, and says which process an operator should look at."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Leadership:
    """This process's side of the orchestrator lease.

    The lease runs on the wall clock, never on a simulated one: it is about real processes dying in real time.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        lease_s: float = DEFAULT_LEASE_S,
        holder: str | None = None,
        clock: Callable[[], dt.datetime] = wall_clock,
        name: str = ORCHESTRATOR_LEASE,
    ) -> None:
        if lease_s <= 0:
            raise ValueError(f"the lease lasts a positive time, got {lease_s}")
        self.sessions = sessions
        self.ttl = dt.timedelta(seconds=lease_s)
        self.holder = holder or new_holder_id()
        self.clock = clock
        self.name = name
        # Until when this process knows it holds the lease (None: it does not).
        self._held_until: dt.datetime | None = None
        # A standby says so once, not every tick.
        self._told_standby = False

    def hold(self) -> bool:
        """Take or renew the lease in the database; True while this process is the leader."""
        now = self.clock()
        try:
            with session_scope(self.sessions) as s:
                held = try_hold(s, name=self.name, holder=self.holder, now=now, ttl=self.ttl)
                other = None if held else get_lease(s, self.name)
                other_text = f"{other.holder} until {other.expires_at:%H:%M:%S} UTC" if other is not None else ""
        except SQLAlchemyError as exc:
            # Without the database no one can act safely; the lease held so far runs out on its own.
            log.warning("orchestrator lease: the database did not answer (%s); acting as a standby", exc)
            held, other_text = False, "unknown (database error)"
        if held:
            if self._held_until is None:
                log.warning("orchestrator lease taken by %s: this process now advances jobs", self.holder)
            self._held_until = now + self.ttl
            return True
        if self._held_until is not None:
            log.warning("orchestrator lease lost to %s: this process stops advancing jobs", other_text)
        elif not self._told_standby:
            log.warning("orchestrator lease held by %s: this process waits as a standby", other_text)
            self._told_standby = True
        self._held_until = None
        return False

    def is_held(self, now: dt.datetime | None = None) -> bool:
        """Whether the last renewal still covers ``now``: no database round trip (the notifier asks per notice)."""
        return self._held_until is not None and (now or self.clock()) < self._held_until

    def ensure(self) -> bool:
        """Before a job's step: renew when less than half the lease is left, else trust the last renewal."""
        now = self.clock()
        if self._held_until is not None and self._held_until - now > self.ttl / 2:
            return True
        return self.hold()

    def release(self) -> None:
        """Give the lease up (a clean shutdown): a process started next takes over at once, not after it expires."""
        if self._held_until is None:
            return
        self._held_until = None
        try:
            with session_scope(self.sessions) as s:
                release(s, name=self.name, holder=self.holder, now=self.clock())
        except SQLAlchemyError as exc:
            log.warning("orchestrator lease not released (%s); it expires on its own", exc)
        else:
            log.info("orchestrator lease released by %s", self.holder)
