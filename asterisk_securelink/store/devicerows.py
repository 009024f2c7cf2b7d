"""What the live key index needs of each device, read with one Core select (no ORM objects).

`Store.list_devices` builds a `Device` and a `DeviceRow` per row (twelve columns, four datetimes): at 10^5 devices
that is seconds of CPU on the event loop. The index needs four columns; they come here column by column (four lists: no
object per row for the garbage collector to walk), fetched in partitions so the loop serves other tasks between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from asterisk_securelink.store.models import Device
from asterisk_securelink.store.store import Store

PARTITION = 2000  # rows per fetch: the loop runs other tasks between partitions


@dataclass
class KeyRows:
    """Devices by column: row i is (ids[i], key_ids[i], statuses[i], mobile_numbers[i])."""

    ids: list[int] = field(default_factory=list)
    key_ids: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    mobile_numbers: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


async def key_rows(store: Store, since: datetime | None = None) -> KeyRows:
    """Every device (or those changed at or after `since`), in id order."""
    q = select(Device.id, Device.key_id, Device.status, Device.mobile_number).order_by(Device.id)
    if since is not None:
        q = q.where(Device.updated_at >= since)
    out = KeyRows()
    async with store.engine.connect() as conn:
        result = await conn.stream(q.execution_options(yield_per=PARTITION))
        async for part in result.partitions(PARTITION):
            for device_id, key_id, status, mobile in part:
                out.ids.append(device_id)
                out.key_ids.append(key_id)
                out.statuses.append(status)
                out.mobile_numbers.append(mobile)
    return out
