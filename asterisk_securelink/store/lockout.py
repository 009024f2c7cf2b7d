"""Lockout state in the database, shared by every node (`models.LockoutSource`: guesses per subject and hour; the
subjects are sources, `*` for every source together and `#<device id>` for a registered number's device).
`models.LockoutDevice` (the backoff of earlier versions) is no longer written; its old rows are purged.

Each counted failure is one atomic UPSERT that returns the new count, so concurrent nodes never lose an increment
and the node that makes a count cross its limit knows it. Reads are plain primary-key range selects; the caller
(`inbound.guard.GuessGuard`) caches them briefly. Both are on the admission path (a read a second per source, an
UPSERT per failed guess), so both run in the driver's own terms (`store.driver.run_fast`), the UPSERT committed
durably; the generic Core path is the fallback for another driver.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Integer, String, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import ReturningInsert

from asterisk_securelink.store.driver import NOT_RUN, immediate, positional, run_fast
from asterisk_securelink.store.models import LockoutDevice, LockoutSource
from asterisk_securelink.store.store import Store

_SUBJECT = bindparam("subject", type_=String())
_HOURS = select(LockoutSource.hour, LockoutSource.guesses).where(
    LockoutSource.subject == _SUBJECT, LockoutSource.hour >= bindparam("first_hour", type_=Integer())
)


def _upsert(insert: Any) -> ReturningInsert[Any]:
    """Add `n` to (subject, hour)'s count, returning the new count (`insert`: the dialect's, for ON CONFLICT)."""
    stmt = insert(LockoutSource).values(subject=_SUBJECT, hour=bindparam("hour", type_=Integer()),
                                        guesses=bindparam("n", type_=Integer()))  # fmt: skip
    return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[LockoutSource.subject, LockoutSource.hour],
        set_={"guesses": LockoutSource.guesses + stmt.excluded.guesses},
    ).returning(LockoutSource.guesses)


_UPSERT = {"postgresql": _upsert(postgresql.insert), "sqlite": _upsert(sqlite.insert)}


def _by_hour(rows: Iterable[Any]) -> dict[int, int]:
    """`_HOURS`' rows as hour -> guesses."""
    return {int(h): int(g) for h, g in rows}


def _sqlite_hours(db: sqlite3.Connection, dialect: Dialect, values: dict[str, Any]) -> dict[int, int]:
    return _by_hour(positional(_HOURS, dialect).execute(db, values))


async def _pg_hours(conn: Any, dialect: Dialect, values: dict[str, Any]) -> dict[int, int]:
    return _by_hour(await positional(_HOURS, dialect).fetch(conn, values))


def _sqlite_add(db: sqlite3.Connection, dialect: Dialect, values: dict[str, Any]) -> int:
    with immediate(db):  # durable: a count lost to a power cut would be guesses given back to a guesser
        rows = positional(_UPSERT["sqlite"], dialect).execute(db, values).fetchall()  # the statement runs to its end
    return int(rows[0][0])


async def _pg_add(conn: Any, dialect: Dialect, values: dict[str, Any]) -> int:
    return int((await positional(_UPSERT["postgresql"], dialect).fetchrow(conn, values))[0])  # autocommit


async def _generic_hours(engine: AsyncEngine, values: dict[str, Any]) -> dict[int, int]:
    async with engine.connect() as c:
        return _by_hour(await c.execute(_HOURS, values))


async def _generic_add(engine: AsyncEngine, values: dict[str, Any]) -> int:
    async with engine.begin() as c:
        return int((await c.execute(_UPSERT[engine.dialect.name], values)).scalar_one())


class LockoutStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- sources: guesses per hour ---------------------------------------------------------------------------------
    async def source_hours(self, subject: str, first_hour: int) -> dict[int, int]:
        """Guesses per hour for `subject`, from `first_hour` on."""
        engine = self.store.engine
        values = {"subject": subject, "first_hour": first_hour}
        got = await run_fast(engine, _sqlite_hours, _pg_hours, engine.dialect, values)
        return await _generic_hours(engine, values) if got is NOT_RUN else dict(got)

    async def add_guesses(self, subject: str, hour: int, n: int) -> int:
        """Add `n` (negative: give back) to the hour's count in one statement; returns the hour's new count."""
        engine = self.store.engine
        values = {"subject": subject, "hour": hour, "n": n}
        got = await run_fast(engine, _sqlite_add, _pg_add, engine.dialect, values, together=True)
        return await _generic_add(engine, values) if got is NOT_RUN else int(got)

    # -- housekeeping ----------------------------------------------------------------------------------------------
    async def purge(self, before_hour: int, before_ms: int) -> int:
        """Drop hours before `before_hour` and (earlier versions') device rows whose last failure is before
        `before_ms`."""
        async with self.store.transaction() as s:
            a = await s.execute(delete(LockoutSource).where(LockoutSource.hour < before_hour))
            b = await s.execute(delete(LockoutDevice).where(LockoutDevice.last_failure_ms < before_ms))
            return int(getattr(a, "rowcount", 0) or 0) + int(getattr(b, "rowcount", 0) or 0)
