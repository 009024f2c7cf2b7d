"""The device keys this process holds: the live inbound key index and the PBX's outbound keys.

Loads the devices whose keys count (provisioned, registered: a suspended or revoked device is left out) from the
store, derives each device's secret from the master key (the database holds no secret), and keeps
`core.keyindex.KeyIndex` on the live epochs: rolled at every epoch boundary by `keep_fresh`, and on demand when a
lookup finds nothing (a device added, rotated or resumed moments ago). The master key never leaves this object.

Nothing heavy runs on the event loop: the devices are read as plain rows (`store.devicerows`), their secrets are
derived and the epoch tables built in a worker thread in slices of `SLICE_SECONDS` (the HMAC loop holds the GIL;
between slices the loop takes it back, so a call waits for one slice at most), and the results are applied on the
loop a slice at a time. `start` builds only the current epoch's table before the service is ready; the other live
epochs follow (`keep_fresh`, or the first lookup that finds nothing waits for them).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from asterisk_securelink.config import Config, KeysConfig
from asterisk_securelink.core.keyindex import Candidate, KeyIndex, Window
from asterisk_securelink.core.policy import WEAK_BITS, strength_bits
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret, epoch_at_ms, epoch_start_ms, now_ms
from asterisk_securelink.lifecycle import SPENDABLE
from asterisk_securelink.store.devicerows import KeyRows, key_rows
from asterisk_securelink.store.models import utcnow
from asterisk_securelink.store.store import Store

if TYPE_CHECKING:
    from asterisk_securelink.metrics import Metrics

log = logging.getLogger(__name__)

DEVICE_SYNC_MIN_INTERVAL = 0.5  # seconds between device reloads triggered by an unknown key
SETTING_PERIOD = "keys.period"  # the settings rows recording what the devices' keys were made with
SETTING_T0 = "keys.t0"
SLICE_SECONDS = 0.0005  # longest a worker-thread slice (secrets, tables) or an on-loop apply slice runs
START_SLICE_SECONDS = 0.2  # the same during `start`: no call is served yet, so fewer hops is all that counts
SLICE_STEP = 32  # devices between two clock reads within a slice
APPLY_STEP = 4  # rows applied on the loop between two clock reads (a rotated device: ~6 HMACs with 3 tables)
INLINE_ROWS = 16  # a sync of at most this many changed rows derives on the loop (~0.1 ms): not worth a thread hop


class Stepper(Protocol):
    def step(self, n: int) -> bool: ...


def run_slice(stepper: Stepper, seconds: float = SLICE_SECONDS) -> bool:
    """Step for about `seconds` (in a worker thread); True when the work is done."""
    deadline = time.perf_counter() + seconds
    while True:
        if stepper.step(SLICE_STEP):
            return True
        if time.perf_counter() >= deadline:
            return False


async def in_slices(stepper: Stepper, seconds: float = SLICE_SECONDS) -> None:
    """Run `stepper` to the end in a worker thread, one short slice per hop: the thread gives the GIL back (and the
    loop runs) between slices, instead of holding it for a whole switch interval (5 ms) each time."""
    while not await asyncio.to_thread(run_slice, stepper, seconds):
        pass


class SecretDeriver:
    """The secrets of the rows whose key ids are new to the index (a `Stepper`, run in a worker thread): `secrets[i]`
    is row i's secret, None when its key id is unchanged or its keys do not count. Reads `key_ids` without changing
    it; the caller holds the sync lock. One list, no object per row (the garbage collector walks those)."""

    def __init__(self, master_key: bytes, rows: KeyRows, key_ids: Mapping[int, str]) -> None:
        self._master_key = master_key
        self._rows = rows
        self._key_ids = key_ids
        self.secrets: list[bytes | None] = []

    def step(self, n: int) -> bool:
        rows, key_ids, secrets = self._rows, self._key_ids, self.secrets
        start = len(secrets)
        end = min(len(rows), start + n)
        for i in range(start, end):
            key_id = rows.key_ids[i]
            if rows.statuses[i] in SPENDABLE and key_ids.get(rows.ids[i]) != key_id:
                secrets.append(device_secret(self._master_key, key_id))
            else:
                secrets.append(None)
        return end == len(rows)


class LiveKeys:
    def __init__(
        self,
        config: Config,
        store: Store,
        master_key: bytes,
        *,
        clock_ms: Callable[[], int] = now_ms,
        device_sync_interval: float = DEVICE_SYNC_MIN_INTERVAL,
        metrics: Metrics | None = None,
    ) -> None:
        """`metrics`: told of every index build (time, devices, key strength), when `[metrics] listen` is set."""
        self.store = store
        self._master_key = master_key
        self.clock_ms = clock_ms  # unix time in integer milliseconds (SLK1 1.1: no floating-point epochs)
        self.device_sync_interval = device_sync_interval
        self.metrics = metrics
        k = config.keys
        self.window = Window(k.period, k.t0, k.look_behind, k.look_ahead)
        self.index = KeyIndex(Direction.INBOUND, config.inbound_fmt, self.window, k.trunk_prefixes)
        self._outbound_fmt = config.outbound_fmt
        self._key_ids: dict[int, str] = {}
        self._mobile: dict[int, str | None] = {}
        self._synced_at: datetime | None = None
        self._last_sync_mono = -1e9
        self._lock = asyncio.Lock()
        self._refresh_lock = asyncio.Lock()
        self._roll: asyncio.Task[int] | None = None  # a roll started by a lookup at an epoch boundary
        self._slice = SLICE_SECONDS  # how long one slice of index work runs (longer during `start`)
        self.last_refresh_seconds = 0.0

    def epoch_now(self, at_ms: int | None = None) -> int:
        return epoch_at_ms(self.clock_ms() if at_ms is None else at_ms, self.window.period, self.window.t0)

    def epoch_start_ms(self, epoch: int) -> int:
        return epoch_start_ms(epoch, self.window.period, self.window.t0)

    @property
    def mobile_numbers(self) -> Mapping[int, str | None]:
        """Device id -> registered mobile number (E.164, or a 1.0 number 0003 could not rewrite), for two-factor."""
        return self._mobile

    def key_id_of(self, device_id: int) -> str:
        """The key id the index was built with for this device ('' when not indexed: unknown, suspended, revoked)."""
        return self._key_ids.get(device_id, "")

    def outbound_key(self, key_id: str, epoch: int) -> str:
        """The key the PBX presents to the device with `key_id` in `epoch` (an `outbound.controller.Keyer`)."""
        return derive_key(device_secret(self._master_key, key_id), Direction.OUTBOUND, epoch, self._outbound_fmt)

    def strength(self) -> float:
        """log2(S / (W*D)) with W = look_behind + look_ahead + 1 (SLK1.md, "How strong is a key, really")."""
        return strength_bits(self.index.fmt.size, self.window.width, len(self.index))

    def strength_inputs(self) -> tuple[int, int, int]:
        """(S, W, D): format size, live windows, devices in the index; what the guess budget is derived from."""
        return self.index.fmt.size, self.window.width, len(self.index)

    def strength_line(self) -> str:
        """The strength report of the live configuration, for the start-up log (see `strength_report`)."""
        line = strength_report(self.index.fmt.size, self.window, len(self.index))
        if self.strength() < WEAK_BITS:
            line += f"; below {WEAK_BITS:.0f} bits: use two-factor (DNIS, require_registered_number) or a larger format"
        return line

    # -- population ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the devices and build the current epoch's table: ready. The other live epochs are built next by
        `keep_fresh` (or by the first lookup that finds nothing, which waits for them)."""
        self._slice = START_SLICE_SECONDS
        try:
            await self.sync_devices(full=True)
            await self.refresh(current_only=True)
        finally:
            self._slice = SLICE_SECONDS

    async def sync_devices(self, full: bool = False) -> int:
        """Load devices changed since the last sync (all of them when `full`) into the index."""
        async with self._lock:
            since = None if full or self._synced_at is None else self._synced_at - timedelta(seconds=2)
            started = utcnow()
            rows = await key_rows(self.store, since)
            deriver = SecretDeriver(self._master_key, rows, self._key_ids)
            if len(rows) <= INLINE_ROWS:
                deriver.step(len(rows))
            else:
                await in_slices(deriver, self._slice)  # the HMACs off the loop
            done = 0
            while done < len(rows):  # applied on the loop, a slice at a time
                done = self._apply_slice(rows, deriver.secrets, done)
                await asyncio.sleep(0)
            self._synced_at = started
            self._last_sync_mono = time.monotonic()
            return len(rows)

    def _apply_slice(self, rows: KeyRows, secrets: Sequence[bytes | None], lo: int) -> int:
        """Apply rows `lo`.. for about `SLICE_SECONDS` (a device whose key changes patches the live tables: a few
        HMACs); returns where it stopped."""
        deadline = time.perf_counter() + self._slice
        i = lo
        while i < len(rows):
            for j in range(i, min(i + APPLY_STEP, len(rows))):
                self._apply(rows.ids[j], rows.key_ids[j], rows.statuses[j], rows.mobile_numbers[j], secrets[j])
            i += APPLY_STEP
            if time.perf_counter() >= deadline:
                break
        return min(i, len(rows))

    def _apply(self, device_id: int, key_id: str, status: str, mobile: str, secret: bytes | None) -> None:
        """Index a device whose keys count (`lifecycle.SPENDABLE`); a suspended or revoked one leaves the index, so
        its keys never make a genuine device's colliding key `ambiguous` (docs/decisions.md). Resumed, it comes back.
        `secret` is the device's secret when its key id is new to the index (derived off the loop), else None."""
        if status not in SPENDABLE:
            self._mobile.pop(device_id, None)
            if self._key_ids.pop(device_id, None) is not None:
                self.index.set_device(device_id, None)
            return
        self._mobile[device_id] = mobile
        if secret is not None and self._key_ids.get(device_id) != key_id:
            self._key_ids[device_id] = key_id
            self.index.set_device(device_id, secret)

    async def refresh(self, at_ms: int | None = None, *, current_only: bool = False) -> int:
        """Bring the index to the live epochs of `at_ms` (with `current_only`, the current epoch first: the others
        stay missing). The tables are built in a worker thread in slices (`in_slices`)."""
        current = self.epoch_now(at_ms)
        async with self._refresh_lock:
            missing = self.index.missing(current)
            if current_only and current in missing:
                missing = [current]
            if not missing and self.index.current == current:
                return 0
            started = time.perf_counter()
            snapshot = self.index.snapshot()
            builder = self.index.builder(missing, snapshot)
            await in_slices(builder, self._slice)
            self.index.install(current, builder.tables, snapshot)
            self.last_refresh_seconds = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.index_refreshed(self.last_refresh_seconds, len(self.index))
                self.metrics.key_strength(self.strength())
            return len(missing)

    async def keep_fresh(self, stop: asyncio.Event) -> None:
        """Background task: at every epoch boundary roll the index and load device changes."""
        await self.refresh()  # the live epochs `start` left for later
        while not stop.is_set():
            now = self.clock_ms()
            boundary = self.epoch_start_ms(self.epoch_now(now) + 1)
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0, boundary - now) / 1000 + 0.005)
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
        """The (device, epoch) pairs whose live key is `digits`, only epochs live in `current`; when nothing matches,
        waits for the live epochs still being built (just after `start`, or a roll), then reloads devices once.

        At an epoch boundary the new current epoch's table is usually built already (it was the look-ahead): then
        the roll (one new table) runs in the background and calls go on at once, instead of every call of the
        next few hundred milliseconds waiting for that table."""
        if self.index.current != current:
            if current in self.index.epochs:
                self._roll_soon(current)
            else:
                await self.refresh(self.epoch_start_ms(current))
        found = self._found(digits, current)
        if not found and self.index.missing(current):
            await self.refresh(self.epoch_start_ms(current))
            found = self._found(digits, current)
        if not found and await self.sync_if_due():  # a device added or rotated moments ago
            found = self._found(digits, current)
        return found

    async def sync_if_due(self) -> int:
        """For a lookup that found nothing: load device changes now (devices sync at each epoch boundary, so one
        added, registered or rotated moments ago is not known yet), unless a sync ran within
        `device_sync_interval`; the rows loaded (0 when not due)."""
        if time.monotonic() - self._last_sync_mono < self.device_sync_interval:
            return 0
        return await self.sync_devices()

    def _found(self, digits: str, current: int) -> list[Candidate]:
        live = self.window.live_epochs(current)
        return [c for c in self.index.lookup(digits) if c.epoch in live and self.index.confirm(c, digits)]

    def _roll_soon(self, current: int) -> None:
        """Roll the index to `current` in a background task (one at a time)."""
        if self._roll is None or self._roll.done():
            self._roll = asyncio.create_task(self.refresh(self.epoch_start_ms(current)), name="index-roll")
            self._roll.add_done_callback(_log_failed_roll)


def _log_failed_roll(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("index roll failed (%s); the next lookup or boundary tries again", type(task.exception()).__name__)


def burst_cost_bits(window: Window) -> float:
    """What accepting `look_ahead` epochs ahead costs against look_ahead 0: log2(W / (W - look_ahead))."""
    return math.log2(window.width / (window.width - window.look_ahead))


def strength_report(size: int, window: Window, devices: int) -> str:
    """One line: how likely one random guess is admitted when the key alone identifies the device, and what burst
    (look_ahead) costs of it. SLK1.md: bits = log2(S / (W*D)), W = look_behind + look_ahead + 1."""
    bits = strength_bits(size, window.width, devices)
    line = (
        f"key alone: one guess succeeds with ~2^-{bits:.1f} (S={size:.3g} keys, W={window.width} live windows = "
        f"look_behind {window.look_behind} + look_ahead {window.look_ahead} + 1, D={devices} devices)"
    )
    if window.look_ahead:
        line += f"; burst (look_ahead {window.look_ahead}) costs {burst_cost_bits(window):.2f} bits of it"
    return line


async def key_settings_problem(store: Store, keys: KeysConfig, *, record: bool, actor: str = "service") -> str | None:
    """None when the devices' keys were made with this config's `period` and `t0`, else what is wrong and the fix.

    SLK1.md: a change of either is a rotation, since epochs of another period are not comparable with the spent ones.
    With `record`, the settings are recorded when none are yet (a database from before 0003) or no device's keys
    depend on them. `doctor` calls it without `record`.
    """
    want = {SETTING_PERIOD: str(keys.period), SETTING_T0: str(keys.t0)}
    have = await store.settings()
    if all(have.get(name, value) == value for name, value in want.items()):
        if record and have != {**have, **want}:
            await store.record_settings(want, actor)
        return None
    live = await store.count_live_devices()
    if not live:
        if record:
            await store.record_settings(want, actor)
        return None
    return (
        f"keys.period = {keys.period}, keys.t0 = {keys.t0}, but the keys of the {live} device(s) were made with "
        f"period {have.get(SETTING_PERIOD, keys.period)}, t0 {have.get(SETTING_T0, keys.t0)}: epochs of another "
        f"period are not comparable. Restore the old values, or run `securelink device rotate --all` (every device "
        f"then needs its new provisioning URI)"
    )
