"""A lease in the database: at most one bot process holds a name (``orchestrator``) at a time, until it expires.

Taking and renewing are one compare-and-set ``UPDATE … WHERE name = :name AND (holder = :me OR expires_at <= :now)``,
so two processes asking at once cannot both win: PostgreSQL makes the second wait for the first's row lock and then
re-checks the WHERE (the lease is no longer expired: no row), SQLite runs one writer at a time. The first ever take
inserts the row with ``ON CONFLICT DO NOTHING``. Times are the caller's clock: hosts sharing a database need clocks
that agree to well within the lease's length (NTP does). Nothing here commits: the caller ends the transaction.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.models import Lease

ORCHESTRATOR_LEASE = "orchestrator"


def try_hold(session: Session, *, name: str, holder: str, now: dt.datetime, ttl: dt.timedelta) -> bool:
    """Take the lease if it is free or expired, renew it if ``holder`` has it; True when ``holder`` holds it until
    ``now + ttl``. False (nothing written) while another holder's lease runs."""
    if ttl <= dt.timedelta(0):
        raise ValueError(f"a lease lasts a positive time, got {ttl}")
    current = session.execute(select(Lease.holder).where(Lease.name == name)).scalar_one_or_none()
    # A renewal keeps when this holder took it; a take starts it now.
    acquired = Lease.acquired_at if current == holder else now
    renewed = session.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at <= now))
        .values(holder=holder, acquired_at=acquired, expires_at=now + ttl)
        .execution_options(synchronize_session=False)
    )
    if renewed.rowcount == 1:  # type: ignore[attr-defined]
        return True
    if current is not None:
        return False
    values = {"name": name, "holder": holder, "acquired_at": now, "expires_at": now + ttl}
    statement: sqlite.Insert | postgresql.Insert
    if session.get_bind().dialect.name == "postgresql":
        statement = postgresql.insert(Lease).values(values).on_conflict_do_nothing(index_elements=["name"])
    else:
        statement = sqlite.insert(Lease).values(values).on_conflict_do_nothing(index_elements=["name"])
    # A row back means this insert made it; none means another process inserted it first (it holds it now).
    return session.execute(statement.returning(Lease.name)).first() is not None


def release(session: Session, *, name: str, holder: str, now: dt.datetime) -> bool:
    """Give the lease up at once (a clean shutdown), so the next process need not wait for it to expire."""
    result = session.execute(
        update(Lease)
        .where(Lease.name == name, Lease.holder == holder)
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def get_lease(session: Session, name: str) -> Lease | None:
    return session.get(Lease, name)
