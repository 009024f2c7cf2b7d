"""The device-row lock every cross-node decision of one device takes (intents, the routing guard's leases).

A write transaction that holds the devices' lock: on PostgreSQL their rows `FOR NO KEY UPDATE` (in id order, so no
deadlock between overlapping sets; inserts that reference the devices are not blocked), on SQLite `BEGIN IMMEDIATE`
(the one writer, taken before any read). Two nodes deciding for one device therefore decide one after the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import BindParameter

from asterisk_securelink.store.models import Device

_IDS: BindParameter[list[int]] = bindparam("ids", expanding=True)
_LOCK_PG = select(Device.id).where(Device.id.in_(_IDS)).order_by(Device.id).with_for_update(key_share=True)
_FIND = select(Device.id).where(Device.id.in_(_IDS)).order_by(Device.id)  # SQLite: BEGIN IMMEDIATE is the lock


@asynccontextmanager
async def devices_locked(
    engine: AsyncEngine, device_ids: Sequence[int]
) -> AsyncIterator[tuple[AsyncConnection, list[int]]]:
    """A write transaction holding the lock of `device_ids`; yields it and the ids of the devices that exist (in id
    order). Committed when the block ends, rolled back when it raises."""
    async with engine.connect() as c:
        if engine.dialect.name == "postgresql":
            found = await c.execute(_LOCK_PG, {"ids": list(device_ids)})
        else:
            await c.exec_driver_sql("BEGIN IMMEDIATE")
            found = await c.execute(_FIND, {"ids": list(device_ids)})
        yield c, [int(i) for i in found.scalars()]
        await c.commit()
