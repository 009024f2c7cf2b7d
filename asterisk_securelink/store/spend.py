"""The single-use spend: the one write on the admission path, so the one place its cost is paid.

`spend_in` is one conditional UPDATE on `key_epochs` (SQLAlchemy Core, no ORM unit of work); its row count is 1 for
exactly one of any number of racing nodes. `check_and_spend` is the verifier's last step: read the device and spend
only while it still has the key id the index was built with and a status that may use keys; the UPDATE re-checks both
itself, so what another node changed between the read and the write is refused.

On PostgreSQL it is one statement (the UPDATE in a data-modifying CTE, the device read beside it) outside a
transaction, on asyncpg itself (`store.driver`): one round trip. On SQLite the whole transaction runs as one function
on the driver's own thread (`aiosqlite`): one hand-off between the event loop and that thread instead of one per
statement, fetch, commit and cursor (a dozen), each of which waits for the GIL behind whatever the loop is doing.
`BEGIN IMMEDIATE` takes the write lock before the read, so the read and the write see the same database. Spends that
arrive while the connection is writing share one transaction and one wait for the disk (`driver.run_together`, a
group commit), each still its own savepoint, durable before its verdict. Anything unexpected raises, and the caller's
verdict is `error` (fail closed).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, exists, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from asterisk_securelink.core.slk1 import Direction
from asterisk_securelink.lifecycle import SPENDABLE
from asterisk_securelink.store.driver import NOT_RUN, immediate, run_on_asyncpg, run_together
from asterisk_securelink.store.models import Device, KeyEpoch, utcnow

DEVICES = cast(Table, Device.__table__)
EPOCHS = cast(Table, KeyEpoch.__table__)


@dataclass(frozen=True)
class SpendDevice:
    """The device as read in the spending transaction: what the verdict depends on, and where an admitted call of
    it goes (its routing identity and home, `calling.identity.Routable`), so routing needs no second read."""

    id: int
    key_id: str
    status: str
    desk_endpoint: str | None = None
    context: str | None = None
    callerid: str | None = None
    home: str | None = None


@dataclass(frozen=True)
class SpendResult:
    device: SpendDevice | None  # None: no such device
    spent: bool


async def spend_in(
    conn: AsyncConnection | AsyncSession,
    device_id: int,
    key_id: str | None,
    direction: Direction,
    epoch: int,
    call_id: str | None,
    drift: int,
) -> bool:
    """Spend `epoch` and every earlier one (with `key_id`: only while the device still has that key id and a spendable
    status). True when this call may use it, including a re-presentation by the same call (SLK1.md)."""
    e = EPOCHS.c
    conditions = [e.device_id == device_id, e.direction == direction.value, e.last_epoch < epoch]
    if key_id is not None:
        d = DEVICES.c
        conditions.append(exists().where(d.id == device_id, d.key_id == key_id, d.status.in_(SPENDABLE)))
    values = {"last_epoch": epoch, "last_call_id": call_id, "drift": drift, "updated_at": utcnow()}
    result = cast(CursorResult[Any], await conn.execute(update(EPOCHS).where(*conditions).values(**values)))
    if result.rowcount == 1:
        return True
    if call_id is None:
        return False
    row = (
        await conn.execute(
            select(e.last_epoch, e.last_call_id).where(e.device_id == device_id, e.direction == direction.value)
        )
    ).first()
    return row is not None and row.last_epoch == epoch and row.last_call_id == call_id


async def check_and_spend(
    engine: AsyncEngine, device_id: int, key_id: str, direction: Direction, epoch: int, call_id: str | None, drift: int
) -> SpendResult:
    if engine.dialect.name == "sqlite":
        stamp = EPOCHS.c.updated_at.type.bind_processor(engine.dialect)
        now = stamp(utcnow()) if stamp is not None else utcnow()
        args = (device_id, key_id, direction.value, epoch, call_id, drift, now)
        got = await run_together(engine, _sqlite_check_and_spend, *args)
        if got is not NOT_RUN:
            return cast(SpendResult, got)
    if engine.dialect.name == "postgresql":
        args = (device_id, key_id, direction.value, epoch, call_id, drift, utcnow())
        got = await run_on_asyncpg(engine, _pg_check_and_spend, *args)
        if got is not NOT_RUN:
            return cast(SpendResult, got)
    async with engine.begin() as conn:
        d = DEVICES.c
        columns = (d.id, d.key_id, d.status, d.desk_endpoint, d.context, d.callerid, d.home)
        found = (await conn.execute(select(*columns).where(d.id == device_id))).first()
        device = SpendDevice(*found) if found is not None else None
        if device is None or device.key_id != key_id or device.status not in SPENDABLE:
            return SpendResult(device, False)
        return SpendResult(device, await spend_in(conn, device_id, key_id, direction, epoch, call_id, drift))


# `check_and_spend` on PostgreSQL, as text: built once, so no call pays SQLAlchemy's statement construction and
# cache-key work (~1 ms of CPU a call for the CTE). $1 epoch, $2 call id, $3 drift, $4 now, $5 device, $6 direction,
# $7 key id, $8.. the spendable statuses. Columns and conditions are those of `spend_in`.
_PG_SPEND = (
    "WITH spent AS (UPDATE key_epochs SET last_epoch = $1, last_call_id = $2, drift = $3, updated_at = $4 "
    "WHERE device_id = $5 AND direction = $6 AND last_epoch < $1 "
    "AND EXISTS (SELECT 1 FROM devices WHERE id = $5 AND key_id = $7 AND status IN ($8, $9)) RETURNING device_id) "
    "SELECT d.key_id, d.status, d.desk_endpoint, d.context, d.callerid, d.home, (SELECT count(*) FROM spent) AS n "
    "FROM devices AS d WHERE d.id = $5"
)
_PG_SAME_CALL = "SELECT last_epoch, last_call_id FROM key_epochs WHERE device_id = $1 AND direction = $2"


async def _pg_check_and_spend(
    conn: Any, device_id: int, key_id: str, direction: str, epoch: int, call_id: str | None, drift: int, now: Any
) -> SpendResult:
    """`check_and_spend` as one PostgreSQL statement on asyncpg, outside a transaction (`store.driver`): the
    conditional UPDATE in a data-modifying CTE (it runs whatever the outer SELECT finds) and the device read beside it,
    one round trip instead of BEGIN, SELECT, UPDATE, COMMIT. The UPDATE's own conditions decide exactly as in
    `spend_in`; a second statement runs only when it spent nothing and the same call may be presenting its key
    again."""
    row = await conn.fetchrow(_PG_SPEND, epoch, call_id, drift, now, device_id, direction, key_id, *SPENDABLE)
    if row is None:  # (key_id, status, 4 routing, spent count)
        return SpendResult(None, False)
    device = SpendDevice(device_id, *row[:6])
    if row[6] == 1:
        return SpendResult(device, True)
    if call_id is None or device.key_id != key_id or device.status not in SPENDABLE:
        return SpendResult(device, False)
    again = await conn.fetchrow(_PG_SAME_CALL, device_id, direction)
    return SpendResult(device, again is not None and again[0] == epoch and again[1] == call_id)


_SELECT_DEVICE = "SELECT key_id, status, desk_endpoint, context, callerid, home FROM devices WHERE id = ?"
_SPEND = (
    "UPDATE key_epochs SET last_epoch = ?, last_call_id = ?, drift = ?, updated_at = ? "
    "WHERE device_id = ? AND direction = ? AND last_epoch < ? "
    "AND EXISTS (SELECT 1 FROM devices WHERE id = ? AND key_id = ? AND status IN (?, ?))"
)
assert len(SPENDABLE) == 2, "_SPEND binds one placeholder per spendable status"
_SAME_CALL = "SELECT last_epoch, last_call_id FROM key_epochs WHERE device_id = ? AND direction = ?"


def _sqlite_check_and_spend(
    db: sqlite3.Connection,
    device_id: int,
    key_id: str,
    direction: str,
    epoch: int,
    call_id: str | None,
    drift: int,
    now: Any,
) -> SpendResult:
    """`check_and_spend` as one SQLite transaction, run on the connection's own thread (module doc)."""
    with immediate(db):
        found = db.execute(_SELECT_DEVICE, (device_id,)).fetchone()
        device = SpendDevice(device_id, *found) if found is not None else None
        spent = False
        if device is not None and device.key_id == key_id and device.status in SPENDABLE:
            args = (epoch, call_id, drift, now, device_id, direction, epoch, device_id, key_id, *SPENDABLE)
            spent = db.execute(_SPEND, args).rowcount == 1
            if not spent and call_id is not None:
                row = db.execute(_SAME_CALL, (device_id, direction)).fetchone()
                spent = row is not None and row[0] == epoch and row[1] == call_id
    return SpendResult(device, spent)
