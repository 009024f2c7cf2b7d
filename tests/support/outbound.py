"""Stand-ins around the outbound controller (`outbound.controller.Outbound`): its store, its hooks, its keyer, a
device row and a caller's channel."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret
from asterisk_securelink.outbound.controller import Keyer
from asterisk_securelink.outbound.state import LegExtras
from asterisk_securelink.stasis import CallInfo
from asterisk_securelink.store.store import DeviceRow

CREATED = datetime(2026, 1, 1, tzinfo=UTC)  # the device rows' timestamps


def keyer_for(master_key: bytes, fmt: NumberFormat) -> Keyer:
    """An outbound keyer like the one the runner passes (the service's `outbound_key`), straight from SLK1."""

    def key(key_id: str, epoch: int) -> str:
        return derive_key(device_secret(master_key, key_id), Direction.OUTBOUND, epoch, fmt)

    return key


def device(
    status: str = "registered", desk: str | None = "PJSIP/desk1001", fork: bool = True, id: int = 7
) -> DeviceRow:
    return DeviceRow(id, "Alice", "15550001111", desk, f"key-{id}", status, None, fork, CREATED, CREATED, None, None)


def caller(kind: str = "mobile", dev: str = "7", cid: str = "c1") -> CallInfo:
    return CallInfo(cid, "PJSIP/carrier-00000001", "100", "67", (kind, dev))


class FakeStore:
    """The controller's store: one device, and an outbound high-water mark in memory."""

    def __init__(self, dev: DeviceRow | None) -> None:
        self.dev = dev
        self.last = -1

    async def get_device(self, ref: str | int) -> DeviceRow | None:
        return self.dev if self.dev is not None and int(ref) == self.dev.id else None

    async def next_outbound_epoch(self, device_id: int, current: int, call_id: str | None) -> int | None:
        for e in (current, current + 1):
            if e > self.last:
                self.last = e
                return e
        return None


class Hooks:
    """Records the controller's hooks: the legs it is about to ring, the calls it finished."""

    def __init__(self) -> None:
        self.finished: list[dict[str, Any]] = []
        self.done = asyncio.Event()
        self.extras = LegExtras()
        self.before: list[tuple[Any, ...]] = []
        self.presented: list[str | None] = []

    async def before_legs(self, call_id: str, device_id: int, endpoints: Any, presented: str | None = None
                          ) -> LegExtras:  # fmt: skip
        self.before.append((call_id, device_id, list(endpoints)))
        self.presented.append(presented)
        return self.extras

    async def on_finished(self, record: dict[str, Any]) -> None:
        self.finished.append(record)
        self.done.set()
