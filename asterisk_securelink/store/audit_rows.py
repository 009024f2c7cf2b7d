"""The audit writer's batches: many rows in one INSERT and one transaction (`insert_audit`).

On SQLite the batch runs as one function on aiosqlite's own thread, on PostgreSQL as one coroutine on asyncpg
(`store.driver`): one hand-off for the whole batch, where SQLAlchemy's executemany cost several (issue 24: the
audit's batches were 8 % of the event loop's busy time at 40 calls/s). With another driver, the same Core statement
through SQLAlchemy. The rows are `store.audit_fields` dicts (every column but the id).

A batch's commit does not wait for the disk (`driver.immediate(durable=False)`, `driver.not_durable`): its rows were
held in memory for up to 50 ms before it anyway (`audit.AuditWriter`), and the next durable commit (a spend) makes it
durable too; a power cut in between loses it, as it loses the rows not yet written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from asterisk_securelink.store.driver import NOT_RUN, immediate, not_durable, positional, run_fast
from asterisk_securelink.store.models import AuditEvent

AUDIT = cast(Table, AuditEvent.__table__)
AUDIT_COLUMNS = frozenset(c for c in AUDIT.columns.keys() if c != "id")
_ADD = insert(AUDIT).values({c: bindparam(c, type_=AUDIT.c[c].type) for c in sorted(AUDIT_COLUMNS)})


async def insert_audit(engine: AsyncEngine, rows: Sequence[dict[str, Any]]) -> None:
    """`rows` written in one transaction: all of them or none."""
    if not rows:
        return
    if await run_fast(engine, _sqlite_insert, _pg_insert, engine.dialect, rows, together=True) is not NOT_RUN:
        return
    async with engine.begin() as conn:
        await conn.execute(_ADD, list(rows))


def _sqlite_insert(db: sqlite3.Connection, dialect: Dialect, rows: Sequence[dict[str, Any]]) -> None:
    """`insert_audit` as one SQLite transaction on the driver's thread (`store.driver`), not durable (module doc)."""
    with immediate(db, durable=False):
        positional(_ADD, dialect).executemany(db, rows)


async def _pg_insert(conn: Any, dialect: Dialect, rows: Sequence[dict[str, Any]]) -> None:
    """`insert_audit` as one PostgreSQL transaction on asyncpg (`store.driver`), not durable (module doc)."""
    async with conn.transaction():
        await not_durable(conn)
        await positional(_ADD, dialect).executemany_pg(conn, rows)
