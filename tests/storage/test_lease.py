"""The orchestrator lease: one holder at a time, taken over once it expires, never by two racing processes."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.orm import Session, sessionmaker

from jobs.leadership import Leadership
from storage.db import session_scope
from storage.lease import get_lease, release, try_hold
from tests.world.fixtures_db import T0

pytestmark = pytest.mark.both_dbs

TTL = dt.timedelta(seconds=30)


def _hold(sessions: sessionmaker[Session], holder: str, now: dt.datetime) -> bool:
    with session_scope(sessions) as s:
        return try_hold(s, name="orchestrator", holder=holder, now=now, ttl=TTL)


def test_one_holder_until_it_stops_renewing_then_the_next_asker(db_sessions: sessionmaker[Session]) -> None:
    assert _hold(db_sessions, "a", T0)
    assert not _hold(db_sessions, "b", T0 + dt.timedelta(seconds=1))
    assert _hold(db_sessions, "a", T0 + dt.timedelta(seconds=20))  # renewed: runs to 50 s now
    assert not _hold(db_sessions, "b", T0 + dt.timedelta(seconds=45))
    assert _hold(db_sessions, "b", T0 + dt.timedelta(seconds=50))  # a stopped renewing: b takes over
    assert not _hold(db_sessions, "a", T0 + dt.timedelta(seconds=51))  # and a, back from a pause, is refused
    with session_scope(db_sessions) as s:
        lease = get_lease(s, "orchestrator")
        assert lease is not None
        assert (lease.holder, lease.acquired_at, lease.expires_at) == (
            "b",
            T0 + dt.timedelta(seconds=50),
            T0 + dt.timedelta(seconds=80),
        )


def test_a_released_lease_is_taken_at_once(db_sessions: sessionmaker[Session]) -> None:
    assert _hold(db_sessions, "a", T0)
    with session_scope(db_sessions) as s:
        assert not release(s, name="orchestrator", holder="b", now=T0)  # only the holder can give it up
        assert release(s, name="orchestrator", holder="a", now=T0 + dt.timedelta(seconds=1))
    assert _hold(db_sessions, "b", T0 + dt.timedelta(seconds=1))


@pytest.mark.parametrize("existing", [False, True], ids=["first take", "expired lease"])
def test_processes_racing_for_a_free_lease_one_wins(db_sessions: sessionmaker[Session], existing: bool) -> None:
    if existing:
        assert _hold(db_sessions, "old", T0 - dt.timedelta(minutes=5))
    racers = 6
    start = threading.Barrier(racers)

    def race(index: int) -> bool:
        start.wait()
        return _hold(db_sessions, f"p{index}", T0)

    with ThreadPoolExecutor(racers) as pool:
        won = list(pool.map(race, range(racers)))
    assert won.count(True) == 1, won


def test_leadership_renews_trusts_its_renewal_and_stands_by(db_sessions: sessionmaker[Session]) -> None:
    now = [T0]
    leader = Leadership(db_sessions, lease_s=30, holder="a", clock=lambda: now[0])
    standby = Leadership(db_sessions, lease_s=30, holder="b", clock=lambda: now[0])
    assert leader.hold() and leader.is_held()
    assert not standby.hold() and not standby.is_held()
    now[0] = T0 + dt.timedelta(seconds=10)
    assert leader.ensure()  # two thirds left: no round trip needed
    now[0] = T0 + dt.timedelta(seconds=31)
    assert not leader.is_held()  # its own clock says the lease ran out
    assert standby.hold()  # and the standby takes it
    assert not leader.ensure()
    standby.release()
    assert leader.hold()
