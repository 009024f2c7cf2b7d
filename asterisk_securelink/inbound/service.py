"""The verification service: the one place a presented number becomes a verdict.

It glues the pure parts (normalization, key index, policy, lockout) to the store, and is shared by every adapter
(Stasis app, FastAGI, CLI). Any failure to decide is the verdict `error`: the caller rejects the call (fail closed).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asterisk_securelink.audit import AuditWriter
from asterisk_securelink.config import Config
from asterisk_securelink.core.compare import same_registered_number
from asterisk_securelink.core.keyindex import Candidate
from asterisk_securelink.core.lockout import LockoutTracker
from asterisk_securelink.core.numbers import Kind, classify, normalize
from asterisk_securelink.core.policy import identify
from asterisk_securelink.core.slk1 import Direction, SLK1Error, check_t0, now_ms
from asterisk_securelink.core.verdicts import FAILURES, Mode, Verdict
from asterisk_securelink.errors import StartupError
from asterisk_securelink.lifecycle import DeviceStatus, after_spend, can_register, inbound_verdict
from asterisk_securelink.livekeys import DEVICE_SYNC_MIN_INTERVAL, LiveKeys, key_settings_problem
from asterisk_securelink.store.models import utcnow
from asterisk_securelink.store.store import DeviceRow, Store, audit_fields

log = logging.getLogger(__name__)

NODE_INFO_TIMEOUT = 5.0  # seconds `learn_node` waits for ARI asterisk/info at start


@dataclass(frozen=True)
class VerifyRequest:
    presented: str | None  # the number carrying the key (caller number in ANI mode, dialed number in DNIS mode)
    mode: Mode = Mode.ANI
    caller: str | None = None  # the caller number when it is not the key (DNIS): narrows collisions
    dialed: str | None = None  # for Mode.EITHER: the dialed number, tried before the caller number
    call_id: str | None = None  # the Asterisk uniqueid: with the node, "the same call" (re-presented: not a replay)
    source: str | None = None  # trunk / remote address, for per-source lockout
    channel: str | None = None
    at_ms: int | None = None  # unix time in integer milliseconds; now when None


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
        clock_ms: Callable[[], int] = now_ms,
        device_sync_interval: float = DEVICE_SYNC_MIN_INTERVAL,
        audit: AuditWriter | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock_ms = clock_ms
        self.keys = LiveKeys(config, store, master_key, clock_ms=clock_ms, device_sync_interval=device_sync_interval)
        self.node = config.ari.node or socket.gethostname()[:64] or "node"  # see `learn_node`
        self.audit = audit if audit is not None else AuditWriter(store.audit_many)
        lo = config.lockout
        self.caller_lockout = LockoutTracker(lo.max_failures, lo.window, lo.cooldown)
        self.source_lockout = LockoutTracker(lo.source_max_failures, lo.window, lo.cooldown)

    async def start(self, actor: str = "service") -> None:
        """Refuses (`StartupError`) a `t0` in the future, and a `period` or `t0` other than the one the devices' keys
        were made with (SLK1.md: changing either is a rotation); then loads the devices and builds the index."""
        k = self.config.keys
        try:
            check_t0(k.t0, self.clock_ms())
        except SLK1Error as exc:
            raise StartupError(f"keys.t0: {exc}") from None
        problem = await key_settings_problem(self.store, k, record=True, actor=actor)
        if problem is not None:
            raise StartupError(problem)
        await self.keys.start()

    async def learn_node(self, asterisk_info: Callable[[], Awaitable[Mapping[str, Any]]]) -> str:
        """The node identity of "the same call", unless `ari.node` names it: Asterisk's system name, else its entity
        id, from ARI `GET /asterisk/info`. When ARI does not answer, this host's name stays (logged)."""
        if not self.config.ari.node:
            try:
                self.node = node_identity(await asyncio.wait_for(asterisk_info(), NODE_INFO_TIMEOUT)) or self.node
            except Exception as exc:  # noqa: BLE001 - ARI down at start: the host name is the node
                log.warning("node identity: ARI asterisk/info failed (%s); using host name %r", type(exc).__name__,
                            self.node)  # fmt: skip
        log.info("node identity %r: the same call is this node + the Asterisk uniqueid", self.node)
        return self.node

    def same_call(self, uniqueid: str | None) -> str | None:
        """The platform's channel identity, node + Asterisk uniqueid (SLK1.md: "the same call"; never the SIP
        Call-ID or anything else the caller chooses). At most 128 characters, the width of its column."""
        if not uniqueid:
            return None
        identity = f"{self.node}/{uniqueid}"
        return identity if len(identity) <= 128 else "sha256:" + hashlib.sha256(identity.encode()).hexdigest()

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
        at_ms = self.clock_ms() if req.at_ms is None else req.at_ms
        now = at_ms / 1000  # lockout timing, in seconds
        current = self.keys.epoch_now(at_ms)
        mode = req.mode
        presented = req.presented
        if mode is Mode.EITHER:
            mode, presented = await self._pick_either(req, current)
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
        candidates = await self.keys.candidates(p.digits, current)
        found = identify(
            candidates,
            self._registered_as(hint, candidates),
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
            cand.device_id, key_id, Direction.INBOUND, cand.epoch, self.same_call(req.call_id), cand.epoch - current
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

    async def _pick_either(self, req: VerifyRequest, current: int) -> tuple[Mode, str | None]:
        """EITHER mode: the dialed number when it carries a live key, else the caller number."""
        dialed = normalize(req.dialed)
        if dialed is not None and await self.keys.candidates(dialed, current):
            return Mode.DNIS, req.dialed
        return Mode.ANI, req.presented

    def _registered_as(self, caller: str | None, candidates: Sequence[Candidate]) -> dict[int, str]:
        """The candidates registered with the caller's number, mapped to it (what `policy.identify` narrows by).

        SLK1.md, "The registered number": compared by rules 1-3 with the country code as the literal prefix and the
        same `trunk_prefixes`, so `+15550002222` registered is `5550002222`, `15550002222` or `+1 555 000 2222`
        delivered. A number 0003 could not rewrite to E.164 (no '+') is compared digit for digit, as 1.0 did.
        """
        if caller is None:
            return {}
        trunks = self.config.keys.trunk_prefixes
        out: dict[int, str] = {}
        for c in candidates:
            registered = self.keys.mobile_numbers.get(c.device_id)
            if not registered:
                continue
            if registered.startswith("+"):
                same = same_registered_number(caller, registered, trunks)
            else:
                same = normalize(registered) == caller
            if same:
                out[c.device_id] = caller
        return out

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


def node_identity(info: Mapping[str, Any]) -> str | None:
    """This node's identity from an ARI `GET /asterisk/info` answer: `config.name` (asterisk.conf `systemname`) when
    set, else `system.entity_id` (the EID, unique per Asterisk instance). None when it has neither."""
    for section, key in (("config", "name"), ("system", "entity_id")):
        part = info.get(section)
        value = part.get(key) if isinstance(part, Mapping) else None
        if isinstance(value, str) and value.strip():
            text = "".join(c for c in value.strip() if c.isascii() and c.isprintable() and c != " ")
            if text:
                return text[:64]
    return None
