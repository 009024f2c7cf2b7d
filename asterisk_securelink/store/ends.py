"""The end of a routed call, written together with whatever other calls end at the same moment (a group commit).

When an admitted call ends, three things change in the shared store: its lease is released (`store.routes`), its call
record is inserted, and its per-call key's vouchers are deleted (they can no longer be claimed). `CallEnds.end` does
all three in one transaction, and calls that end while a transaction is being written go together in the next one:
at one call at a time nothing waits, under load one transaction (one commit, one fsync) serves many calls. Each
`end` returns once its own call is written (durable as before); if the shared transaction fails, each call of it is
written again on its own, so one bad record fails alone and loses nothing else.

Statements are SQLAlchemy Core, built once. Nothing written is secret (a record never holds a key).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import String, Table, bindparam, delete, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import BindParameter

from asterisk_securelink.store.api_models import CallVoucher
from asterisk_securelink.store.driver import NOT_RUN, immediate, positional, run_fast, settle
from asterisk_securelink.store.models import CallRecord, utcnow
from asterisk_securelink.store.route_models import CallLease

log = logging.getLogger(__name__)

RECORDS = cast(Table, CallRecord.__table__)
_COLUMNS = ("call_id", "device_id", "direction", "verdict", "legs", "answered_by", "started_at", "answered_at",
            "ended_at", "hangup_cause", "method", "caller", "destination", "node")  # fmt: skip
_CALL: BindParameter[str] = bindparam("call_id", type_=String())
_ADD_RECORD = insert(RECORDS).values({c: bindparam(c, type_=RECORDS.c[c].type) for c in _COLUMNS})
_RELEASE = delete(CallLease).where(CallLease.call_id == _CALL)
_END_VOUCHERS = delete(CallVoucher).where(CallVoucher.call_id == _CALL)


def _clip(value: Any, length: int) -> str | None:
    return None if value is None else str(value)[:length]


def record_values(record: dict[str, Any]) -> dict[str, Any]:
    """A call record's columns from the dict both directions hand over (`callkeys.book.CallBook.record`: call_id,
    device_id, direction, verdict, legs, answered_by, started_at, answered_at, ended_at, hangup_cause, and optional
    method, caller, destination, node), each clipped to its column."""
    return {
        "call_id": str(record["call_id"])[:128],
        "device_id": record.get("device_id"),
        "direction": str(record.get("direction", "outbound")),
        "verdict": record.get("verdict"),
        "legs": json.dumps(record.get("legs", []), default=str),
        "answered_by": record.get("answered_by"),
        "started_at": record.get("started_at") or utcnow(),
        "answered_at": record.get("answered_at"),
        "ended_at": record.get("ended_at") or utcnow(),
        "hangup_cause": _clip(record.get("hangup_cause"), 64),
        "method": _clip(record.get("method"), 16),
        "caller": _clip(record.get("caller"), 32),
        "destination": _clip(record.get("destination"), 20),
        "node": _clip(record.get("node"), 64),
    }


@dataclass(frozen=True)
class CallEnd:
    call_id: str
    record: dict[str, Any] | None  # the call record's columns (`record_values`), or None: no record
    release: bool  # the call holds a lease to release


class CallEndWriter:
    """The group commit of calls' ends for one process (`end`); `transactions` counts what it committed."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.transactions = 0
        self._queue: list[tuple[CallEnd, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def end(self, call_id: str, record: dict[str, Any] | None, *, release: bool) -> None:
        """Write the call's end (module doc); returns when it is committed, raises what its own write raised.
        A caller cancelled meanwhile does not cancel the write."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((CallEnd(call_id, None if record is None else record_values(record), release), done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="securelink-call-ends")
        await asyncio.shield(done)

    async def close(self) -> None:
        """Wait for what is queued to be written."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _write(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            if len(batch) == 1:
                await self._one(*batch[0])
                continue
            try:
                await self._commit([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - then each on its own: one bad end fails alone
                log.warning("%d call ends not written together (%s); one at a time", len(batch), type(exc).__name__)
                for item, done in batch:
                    await self._one(item, done)
                continue
            for _, done in batch:
                settle(done, None)

    async def _one(self, item: CallEnd, done: asyncio.Future[None]) -> None:
        try:
            await self._commit([item])
        except Exception as exc:  # noqa: BLE001 - handed to the call's own `end`
            settle(done, exc)
        else:
            settle(done, None)

    async def _commit(self, items: list[CallEnd]) -> None:
        records = [i.record for i in items if i.record is not None]
        released = [{"call_id": i.call_id} for i in items if i.release]
        ended = [{"call_id": i.call_id} for i in items]
        engine = self.engine
        done = await run_fast(
            engine, _sqlite_commit, _pg_commit, engine.dialect, records, released, ended, together=True
        )
        if done is NOT_RUN:
            await self._generic(records, released, ended)
        self.transactions += 1

    async def _generic(self, records: list[dict[str, Any]], released: list[dict[str, Any]],
                       ended: list[dict[str, Any]]) -> None:  # fmt: skip
        async with self.engine.begin() as c:
            if records:
                await c.execute(_ADD_RECORD, records)
            if released:
                await c.execute(_RELEASE, released)
            await c.execute(_END_VOUCHERS, ended)


def _sqlite_commit(
    db: sqlite3.Connection, dialect: Dialect, records: list[dict[str, Any]], released: list[dict[str, Any]],
    ended: list[dict[str, Any]],
) -> None:  # fmt: skip
    """`_commit` as one SQLite transaction on the driver's thread (`store.driver`)."""
    with immediate(db):
        positional(_ADD_RECORD, dialect).executemany(db, records)
        positional(_RELEASE, dialect).executemany(db, released)
        positional(_END_VOUCHERS, dialect).executemany(db, ended)


async def _pg_commit(
    conn: Any, dialect: Dialect, records: list[dict[str, Any]], released: list[dict[str, Any]],
    ended: list[dict[str, Any]],
) -> None:  # fmt: skip
    """`_commit` as one PostgreSQL transaction on asyncpg (`store.driver`)."""
    async with conn.transaction():
        await positional(_ADD_RECORD, dialect).executemany_pg(conn, records)
        await positional(_RELEASE, dialect).executemany_pg(conn, released)
        await positional(_END_VOUCHERS, dialect).executemany_pg(conn, ended)
