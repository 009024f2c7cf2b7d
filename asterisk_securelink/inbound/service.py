"""The verification service: the one place a presented number becomes a verdict.

It glues the pure parts (normalization, key index, policy, lockout) to the store, and is shared by every adapter
(Stasis app, FastAGI, CLI). Any failure to decide is the verdict `error`: the caller rejects the call (fail closed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asterisk_securelink.audit import AuditWriter
from asterisk_securelink.config import Config
from asterisk_securelink.core.lockout import LockoutTracker
from asterisk_securelink.core.numbers import Kind, classify, normalize
from asterisk_securelink.core.policy import identify
from asterisk_securelink.core.slk1 import Direction
from asterisk_securelink.core.verdicts import FAILURES, Mode, Verdict
from asterisk_securelink.lifecycle import DeviceStatus, after_spend, can_register, inbound_verdict
from asterisk_securelink.livekeys import DEVICE_SYNC_MIN_INTERVAL, LiveKeys
from asterisk_securelink.store.models import utcnow
from asterisk_securelink.store.store import DeviceRow, Store, audit_fields

log = logging.getLogger(__name__)


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
        audit: AuditWriter | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.keys = LiveKeys(config, store, master_key, clock=clock, device_sync_interval=device_sync_interval)
        self.audit = audit if audit is not None else AuditWriter(store.audit_many)
        lo = config.lockout
        self.caller_lockout = LockoutTracker(lo.max_failures, lo.window, lo.cooldown)
        self.source_lockout = LockoutTracker(lo.source_max_failures, lo.window, lo.cooldown)

    async def start(self) -> None:
        await self.keys.start()

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
        current = self.keys.epoch_now(now)
        candidates = await self.keys.candidates(p.digits, current)
        found = identify(
            candidates,
            self.keys.mobile_numbers,
            hint,
            require_hint=self.config.inbound.require_registered_number and mode is not Mode.ANI,
        )
        if found.verdict is not None or found.candidate is None:
            verdict = found.verdict or Verdict.MISMATCH
            return self._failed(Outcome(verdict, mode=mode), caller_subject, req.source, now)
        cand = found.candidate
        key_id = self.keys.key_id_of(cand.device_id)
        # one transaction: read the device, spend only if it still has this key id and may use keys
        result = await self.store.check_and_spend(
            cand.device_id, key_id, Direction.INBOUND, cand.epoch, req.call_id, cand.epoch - current
        )
        device = result.device
        if device is None or device.key_id != key_id:
            # deleted or rotated since the index was built: its old keys no longer count
            await self.keys.sync_devices()
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
        if dialed is not None and await self.keys.candidates(dialed, self.keys.epoch_now(now)):
            return Mode.DNIS, req.dialed
        return Mode.ANI, req.presented

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
        self.audit.record(event)  # written in the background: the verdict never waits for the audit commit
