"""The device keys this process holds: the live inbound key index and the PBX's outbound keys.

Loads the enrolled devices from the store, derives each device's secret from the master key (the database holds no
secret), and keeps `core.keyindex.KeyIndex` on the live epochs: rolled at every epoch boundary by `keep_fresh`, and on
demand when a lookup finds nothing (a device added or rotated moments ago). The master key never leaves this object.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from asterisk_securelink.config import Config
from asterisk_securelink.core.keyindex import Candidate, KeyIndex, Window
from asterisk_securelink.core.policy import strength_bits
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret, epoch_at
from asterisk_securelink.store.models import utcnow
from asterisk_securelink.store.store import DeviceRow, Store

if TYPE_CHECKING:
    from asterisk_securelink.metrics import Metrics

log = logging.getLogger(__name__)

DEVICE_SYNC_MIN_INTERVAL = 0.5  # seconds between device reloads triggered by an unknown key


class LiveKeys:
    def __init__(
        self,
        config: Config,
        store: Store,
        master_key: bytes,
        *,
        clock: Callable[[], float] = time.time,
        device_sync_interval: float = DEVICE_SYNC_MIN_INTERVAL,
    ) -> None:
        self.store = store
        self._master_key = master_key
        self.clock = clock
        self.device_sync_interval = device_sync_interval
        self.metrics: Metrics | None = None  # set by the runner when [metrics] listen is configured
        k = config.keys
        self.window = Window(k.period, k.t0, k.look_behind, k.look_ahead)
        self.index = KeyIndex(Direction.INBOUND, config.inbound_fmt, self.window)
        self._outbound_fmt = config.outbound_fmt
        self._key_ids: dict[int, str] = {}
        self._mobile: dict[int, str | None] = {}
        self._synced_at: datetime | None = None
        self._last_sync_mono = -1e9
        self._lock = asyncio.Lock()
        self._refresh_lock = asyncio.Lock()
        self.last_refresh_seconds = 0.0

    def epoch_now(self, at: float | None = None) -> int:
        return epoch_at(self.clock() if at is None else at, self.window.period, self.window.t0)

    @property
    def mobile_numbers(self) -> Mapping[int, str | None]:
        """Device id -> registered mobile number (normalized digits), for two-factor identification."""
        return self._mobile

    def key_id_of(self, device_id: int) -> str:
        """The key id the index was built with for this device ('' when unknown)."""
        return self._key_ids.get(device_id, "")

    def outbound_key(self, key_id: str, epoch: int) -> str:
        """The key the PBX presents to the device with `key_id` in `epoch` (an `outbound.controller.Keyer`)."""
        return derive_key(device_secret(self._master_key, key_id), Direction.OUTBOUND, epoch, self._outbound_fmt)

    def strength(self) -> float:
        return strength_bits(self.index.fmt.size, self.window.width, len(self.index))

    # -- population ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.sync_devices(full=True)
        await self.refresh()

    async def sync_devices(self, full: bool = False) -> int:
        """Load devices changed since the last sync (all of them when `full`) into the index."""
        async with self._lock:
            since = None if full or self._synced_at is None else self._synced_at - timedelta(seconds=2)
            started = utcnow()
            rows = await self.store.list_devices(since)
            for row in rows:
                self._apply(row)
            self._synced_at = started
            self._last_sync_mono = time.monotonic()
            return len(rows)

    def _apply(self, row: DeviceRow) -> None:
        self._mobile[row.id] = row.mobile_number
        if self._key_ids.get(row.id) != row.key_id:
            self._key_ids[row.id] = row.key_id
            self.index.set_device(row.id, device_secret(self._master_key, row.key_id))

    async def refresh(self, at: float | None = None) -> int:
        """Bring the index to the live epochs of `at`; the HMAC work runs in a worker thread."""
        current = self.epoch_now(at)
        async with self._refresh_lock:
            missing = self.index.missing(current)
            if not missing and self.index.current == current:
                return 0
            started = time.perf_counter()
            snapshot = self.index.snapshot()
            tables = await asyncio.to_thread(lambda: {e: self.index.build(e, snapshot) for e in missing})
            self.index.install(current, tables, snapshot)
            self.last_refresh_seconds = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.index_refreshed(self.last_refresh_seconds, len(self.index))
            return len(missing)

    async def keep_fresh(self, stop: asyncio.Event) -> None:
        """Background task: at every epoch boundary roll the index and load device changes."""
        while not stop.is_set():
            now = self.clock()
            boundary = self.window.t0 + (self.epoch_now(now) + 1) * self.window.period
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, boundary - now) + 0.005)
                return
            except TimeoutError:
                pass
            await self.refresh()  # pure CPU: works even while the database is down
            try:
                await self.sync_devices()
            except Exception as exc:  # noqa: BLE001 - keep going; lookups sync on demand too
                log.warning("device sync failed (%s); retrying at the next boundary", type(exc).__name__)

    # -- lookup ----------------------------------------------------------------------------------------------
    async def candidates(self, digits: str, current: int) -> list[Candidate]:
        """The (device, epoch) pairs whose live key is `digits`; reloads devices once when nothing matches."""
        if self.index.current != current:
            await self.refresh(self.window.t0 + current * self.window.period)
        found = [c for c in self.index.lookup(digits) if self.index.confirm(c, digits)]
        if not found and time.monotonic() - self._last_sync_mono >= self.device_sync_interval:
            if await self.sync_devices():  # a device added or rotated moments ago
                found = [c for c in self.index.lookup(digits) if self.index.confirm(c, digits)]
        return found
