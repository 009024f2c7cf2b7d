"""The verification service: the one place a presented number becomes a verdict.

It glues the pure parts (normalization, key index, policy, lockout) to the store, and is shared by every adapter
(Stasis app, FastAGI, CLI). Any failure to decide is the verdict `error`: the caller rejects the call (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from asterisk_securelink.config import Config
from asterisk_securelink.core.keyindex import Candidate, KeyIndex, Window
from asterisk_securelink.core.lockout import LockoutTracker
from asterisk_securelink.core.numbers import Kind, classify, normalize
from asterisk_securelink.core.policy import identify, strength_bits
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret, epoch_at
from asterisk_securelink.core.verdicts import FAILURES, Mode, Verdict
from asterisk_securelink.lifecycle import DeviceStatus, after_spend, can_register, inbound_verdict
from asterisk_securelink.store.models import utcnow
from asterisk_securelink.store.store import DeviceRow, Store, audit_fields

if TYPE_CHECKING:
    from asterisk_securelink.metrics import Metrics

log = logging.getLogger(__name__)

MAX_PENDING_AUDIT = 100_000  # audit events kept in memory while the database is down
DEVICE_SYNC_MIN_INTERVAL = 0.5  # seconds between device reloads triggered by an unknown key


@dataclass(frozen=True)
class VerifyRequest:
    presented: str | None  # the number carrying the key (caller number in ANI mode, dialed number in DNIS mode)
    mode: Mode = Mode.ANI
    caller: str | None = None  # the caller number when it is not the key (DNIS): narrows collisions
    dialed: str | None = None  # for Mode.EITHER: the dialed number, tried before the caller number
    call_id: str | None = None  # same call re-presented is not a replay
    source: str | None = None  # trunk / remote address, for per-source lockout
    channel: str | None = None
    at: float | None = None  # unix time; now when None


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    device_id: int | None = None
    epoch: int | None = None
    mode: Mode = Mode.ANI
    detail: dict[str, Any] = field(default_factory=dict)


class VerificationService:
    def __init__(
        self,
        config: Config,
        store: Store,
        master_key: bytes,
        *,
        clock: Callable[[], float] = time.time,
        device_sync_interval: float = DEVICE_SYNC_MIN_INTERVAL,
    ) -> None:
        self.config = config
        self.store = store
        self._master_key = master_key
        self.clock = clock
        self.device_sync_interval = device_sync_interval
        self.metrics: Metrics | None = None  # set by the runner when [metrics] listen is configured
        k = config.keys
        self.window = Window(k.period, k.t0, k.look_behind, k.look_ahead)
        self.index = KeyIndex(Direction.INBOUND, config.inbound_fmt, self.window)
        self._outbound_fmt = config.outbound_fmt
        lo = config.lockout
        self.caller_lockout = LockoutTracker(lo.max_failures, lo.window, lo.cooldown)
        self.source_lockout = LockoutTracker(lo.source_max_failures, lo.window, lo.cooldown)
        self._key_ids: dict[int, str] = {}
        self._mobile: dict[int, str | None] = {}
        self._synced_at: datetime | None = None
        self._last_sync_mono = -1e9
        self._lock = asyncio.Lock()
        self._refresh_lock = asyncio.Lock()
        self._pending_audit: list[dict[str, Any]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.last_refresh_seconds = 0.0

    # -- population ------------------------------------------------------------------------------------------
    def epoch_now(self, at: float | None = None) -> int:
        return epoch_at(self.clock() if at is None else at, self.window.period, self.window.t0)

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

    async def start(self) -> None:
        await self.sync_devices(full=True)
        await self.refresh()

    async def keep_fresh(self, stop: asyncio.Event) -> None:
        """Background task: at every epoch boundary load device changes and roll the index."""
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
            except Exception as exc:  # noqa: BLE001 - keep going; verify() syncs on demand too
                log.warning("device sync failed (%s); retrying at the next boundary", type(exc).__name__)
            else:
                await self.flush_audit()  # events kept while the database was down

    def outbound_key(self, key_id: str, epoch: int) -> str:
        """The key the PBX presents to the device with `key_id` in `epoch` (an `outbound.Keyer`); the master key
        stays inside the service."""
        return derive_key(device_secret(self._master_key, key_id), Direction.OUTBOUND, epoch, self._outbound_fmt)

    def strength(self) -> float:
        return strength_bits(self.index.fmt.size, self.window.width, len(self.index))

    # -- verification ----------------------------------------------------------------------------------------
    async def verify(self, req: VerifyRequest) -> Outcome:
        try:
            outcome = await self._verify(req)
        except Exception as exc:  # noqa: BLE001 - any failure to decide is `error`: the call is rejected
            log.error("verification failed (%s); verdict error", type(exc).__name__)
            outcome = Outcome(Verdict.ERROR, mode=req.mode, detail={"reason": type(exc).__name__})
        await self._record(req, outcome)
        return outcome

    async def _verify(self, req: VerifyRequest) -> Outcome:
        now = self.clock() if req.at is None else req.at
        mode = req.mode
        presented = req.presented
        if mode is Mode.EITHER:
            mode, presented = await self._pick_either(req, now)
        p = classify(presented)
        caller_subject = p.digits if mode is Mode.ANI else normalize(req.caller)
        if p.kind is Kind.ANONYMOUS:
            return Outcome(Verdict.ANONYMOUS, mode=mode)
        if self._locked(caller_subject, req.source, now):
            return Outcome(Verdict.LOCKED_OUT, mode=mode)
        if p.kind is Kind.MALFORMED:
            return self._failed(Outcome(Verdict.MALFORMED, mode=mode), caller_subject, req.source, now)

        hint = normalize(req.caller) if mode is not Mode.ANI else None
        if mode is not Mode.ANI and hint is None and self.config.inbound.require_registered_number:
            # two-factor: the caller's registered number picks the device; without one there is nothing to check
            return self._failed(Outcome(Verdict.MISMATCH, mode=mode), caller_subject, req.source, now)
        current = self.epoch_now(now)
        candidates = await self._candidates(p.digits, current)
        found = identify(
            candidates,
            self._mobile,
            hint,
            require_hint=self.config.inbound.require_registered_number and mode is not Mode.ANI,
        )
        if found.verdict is not None or found.candidate is None:
            verdict = found.verdict or Verdict.MISMATCH
            return self._failed(Outcome(verdict, mode=mode), caller_subject, req.source, now)
        cand = found.candidate
        key_id = self._key_ids.get(cand.device_id, "")
        # one transaction: read the device, spend only if it still has this key id and may use keys
        result = await self.store.check_and_spend(
            cand.device_id, key_id, Direction.INBOUND, cand.epoch, req.call_id, cand.epoch - current
        )
        device = result.device
        if device is None or device.key_id != key_id:
            # deleted or rotated since the index was built: its old keys no longer count
            await self.sync_devices()
            return self._failed(Outcome(Verdict.MISMATCH, mode=mode), caller_subject, req.source, now)
        stopped = inbound_verdict(device.status)
        if stopped is not None:
            return Outcome(stopped, device.id, cand.epoch, mode, {"status": device.status})
        verdict = after_spend(device.status, result.spent)
        outcome = Outcome(verdict, device.id, cand.epoch, mode, {"drift": cand.epoch - current})
        if verdict is Verdict.REPLAYED:
            return self._failed(outcome, caller_subject, req.source, now)
        if caller_subject:
            self.caller_lockout.record_success(caller_subject)
        return outcome

    async def _pick_either(self, req: VerifyRequest, now: float) -> tuple[Mode, str | None]:
        """EITHER mode: the dialed number when it carries a live key, else the caller number."""
        dialed = normalize(req.dialed)
        if dialed is not None and await self._candidates(dialed, self.epoch_now(now)):
            return Mode.DNIS, req.dialed
        return Mode.ANI, req.presented

    async def _candidates(self, digits: str, current: int) -> list[Candidate]:
        if self.index.current != current:
            await self.refresh_to(current)
        found = [c for c in self.index.lookup(digits) if self.index.confirm(c, digits)]
        if not found and time.monotonic() - self._last_sync_mono >= self.device_sync_interval:
            if await self.sync_devices():  # a device added or rotated moments ago
                found = [c for c in self.index.lookup(digits) if self.index.confirm(c, digits)]
        return found

    async def refresh_to(self, current: int) -> None:
        await self.refresh(self.window.t0 + current * self.window.period)

    def _locked(self, caller: str | None, source: str | None, now: float) -> bool:
        if not self.config.lockout.enabled:
            return False
        return bool(
            (caller and self.caller_lockout.is_locked(caller, now))
            or (source and self.source_lockout.is_locked(source, now))
        )

    def _failed(self, outcome: Outcome, caller: str | None, source: str | None, now: float) -> Outcome:
        if self.config.lockout.enabled and outcome.verdict in FAILURES:
            if caller:
                self.caller_lockout.record_failure(caller, now)
            if source:
                self.source_lockout.record_failure(source, now)
        return outcome

    # -- registration ----------------------------------------------------------------------------------------
    async def register(self, device_id: int, actor: str) -> DeviceRow:
        device = await self.store.get_device(device_id)
        if device is None:
            raise LookupError(f"no device with id {device_id}")
        if not can_register(device.status):
            return device
        return await self.store.update_device(
            device_id, "device.register", actor, status=DeviceStatus.REGISTERED.value, registered_at=utcnow()
        )

    # -- audit -----------------------------------------------------------------------------------------------
    async def _record(self, req: VerifyRequest, outcome: Outcome) -> None:
        # the caller number only when the key was the dialed number: in ANI (and undecided EITHER) mode it is the key
        subject = normalize(req.caller) if outcome.mode is Mode.DNIS else None
        event = audit_fields(
            "verify",
            outcome.verdict.value,
            "asterisk",
            device_id=outcome.device_id,
            direction=Direction.INBOUND.value,
            mode=outcome.mode.value,
            call_id=req.call_id,
            channel=req.channel,
            subject=subject,
            source=req.source[:128] if req.source else None,
            detail=outcome.detail or None,
        )
        self.record_audit(event)  # written in the background: the verdict never waits for the audit commit

    def record_audit(self, event: dict[str, Any]) -> None:
        """Keep one event and have it written by the single background flusher (batched while a write is in
        flight). While the database is down events stay in memory; `keep_fresh` retries at every boundary."""
        if len(self._pending_audit) >= MAX_PENDING_AUDIT:
            log.error("audit buffer full (%d events): dropping the oldest", MAX_PENDING_AUDIT)
            del self._pending_audit[0]
        self._pending_audit.append(event)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_pending(), name="audit-flush")

    async def _flush_pending(self) -> None:
        while self._pending_audit:
            if not await self.flush_audit():
                return  # the database is down: keep the events, retry at the next epoch boundary

    async def drain_audit(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109 - a bound, not an operation timeout
        """Wait for the background flusher, then write what is left. True when nothing is pending."""
        if self._flusher is not None and not self._flusher.done():
            await asyncio.wait({self._flusher}, timeout=timeout)
        return await self.flush_audit()

    async def write_audit(self, event: dict[str, Any]) -> bool:
        """Write one audit event and wait for it; while the database is unreachable it is kept and written later."""
        self.record_audit(event)
        return await self.drain_audit()

    async def flush_audit(self) -> bool:
        if not self._pending_audit:
            return True
        # take the whole buffer before the first await: a concurrent flush then finds it empty, so no event is
        # written twice (copying it and deleting after the write let two flushers write the same events)
        batch, self._pending_audit = self._pending_audit, []
        try:
            await self.store.audit_many(batch)
        except Exception as exc:  # noqa: BLE001 - the database may be down; keep the events for later
            log.warning("audit write failed (%s); %d event(s) kept for retry", type(exc).__name__, len(batch))
            self._pending_audit[:0] = batch  # back in front, in order, ahead of what arrived meanwhile
            if len(self._pending_audit) > MAX_PENDING_AUDIT:
                log.error("audit buffer full (%d events): dropping the oldest", MAX_PENDING_AUDIT)
                del self._pending_audit[: len(self._pending_audit) - MAX_PENDING_AUDIT]
            if self.metrics is not None:
                self.metrics.database(False)
            return False
        if self.metrics is not None:
            self.metrics.database(True)
        return True

    @property
    def pending_audit(self) -> int:
        return len(self._pending_audit)
