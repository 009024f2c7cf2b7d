"""The verification service: the one place a presented number becomes a verdict.

It glues the pure parts (normalization, key index, policy, lockout) to the store, and is shared by every adapter
(Stasis app, FastAGI, CLI). Any failure to decide is the verdict `error`: the caller rejects the call (fail closed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from asterisk_securelink.config import Config
from asterisk_securelink.core.compare import same_registered_number
from asterisk_securelink.core.keyindex import Candidate
from asterisk_securelink.core.lockout import RegisteredNumbers, could_be_key
from asterisk_securelink.core.numbers import Kind, classify, normalize
from asterisk_securelink.core.policy import identify
from asterisk_securelink.core.slk1 import Direction, SLK1Error, check_t0
from asterisk_securelink.core.verdicts import Method, Mode, Verdict
from asterisk_securelink.errors import StartupError
from asterisk_securelink.inbound.guard import GuessGuard
from asterisk_securelink.lifecycle import DeviceStatus, after_spend, can_register, inbound_verdict
from asterisk_securelink.livekeys import LiveKeys, key_settings_problem
from asterisk_securelink.store.models import utcnow
from asterisk_securelink.store.spend import SpendDevice
from asterisk_securelink.store.store import DeviceRow, Store, audit_fields

log = logging.getLogger(__name__)

NODE_INFO_TIMEOUT = 5.0  # seconds `learn_node` waits for ARI asterisk/info at start
NUMBERS_BUILT_INLINE = 2_000  # registered numbers indexed inline (~6 ms); more in a worker thread (~0.3 s at 10^5)
NUMBERS_MAX_AGE = 60.0  # seconds before the index of registered numbers is rebuilt even without new devices
COUNTED = frozenset({Verdict.MISMATCH, Verdict.AMBIGUOUS, Verdict.REPLAYED})  # an evaluated guess that failed


class AuditLog(Protocol):
    """Where the verdict's audit row goes: `Notifier` in the app, an `AuditWriter` in tools; never blocks."""

    def record(self, fields: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class VerifyRequest:
    presented: str | None  # the number carrying the key (caller number in ANI mode, dialed number in DNIS mode)
    mode: Mode = Mode.ANI
    caller: str | None = None  # the caller number when it is not the key (DNIS): narrows collisions
    dialed: str | None = None  # for Mode.EITHER: the dialed number, tried before the caller number
    call_id: str | None = None  # the Asterisk uniqueid: with the node, "the same call" (re-presented: not a replay)
    source: str | None = None  # trunk / remote address: whose guess budget a key-alone guess spends
    channel: str | None = None
    at_ms: int | None = None  # unix time in integer milliseconds; now when None


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    device_id: int | None = None
    epoch: int | None = None
    mode: Mode | Method = Mode.ANI  # how the key came: a resolved `Mode`, or `Method.DTMF` / `Method.INTENT`
    detail: dict[str, Any] = field(default_factory=dict)
    # the device as the spend read it, with its routing identity (`calling.onward` routes on it without reading it
    # again); None when the verdict did not come from a spend
    device: SpendDevice | None = field(default=None, compare=False, repr=False)


class VerificationService:
    def __init__(
        self,
        config: Config,
        store: Store,
        keys: LiveKeys,
        guard: GuessGuard,
        audit: AuditLog,
        *,
        node: str | None = None,
    ) -> None:
        """Its parts are built by the composition root (`app.verifier`): the live key index, the guess guard (whose
        budget follows `keys.strength_inputs`), and where audit rows go (`Notifier`). `node`: the identity of
        "the same call" when known (else `ari.node`, else this host's name, until `learn_node`)."""
        self.config = config
        self.store = store
        self.keys = keys
        self.guard = guard
        self.audit = audit
        self.clock_ms = keys.clock_ms
        self.node = node or config.ari.node or socket.gethostname()[:64] or "node"  # see `learn_node`
        self._numbers: RegisteredNumbers | None = None  # see `_named_devices`
        self._numbers_task: asyncio.Task[None] | None = None

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
        # the registered numbers (two-factor failures count against them) are indexed in the background: the service
        # is ready without them, and the first two-factor call that needs them waits for that build (`_named`)
        self._numbers_task = asyncio.create_task(self._rebuild_numbers(dict(self.keys.mobile_numbers)))

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
        current = self.keys.epoch_now(at_ms)
        two_factor = self.config.inbound.require_registered_number
        mode, presented, probe = req.mode, req.presented, None
        if mode is Mode.EITHER:
            if two_factor:  # no ANI fallback: a key in the caller number would leave nothing to pick the device
                mode, presented = Mode.DNIS, req.dialed
            else:  # the dialed number is tried first, when it could be a key
                mode, probe = Mode.ANI, self._guess(req.dialed)
        p = classify(presented)
        digits = self._guess(presented)
        if probe is None:  # what could not be a key is rejected without spending any budget
            if p.kind is Kind.ANONYMOUS:
                return Outcome(Verdict.ANONYMOUS, mode=mode)
            if p.kind is Kind.MALFORMED:
                return Outcome(Verdict.MALFORMED, mode=mode)
            if digits is None:
                return Outcome(Verdict.MISMATCH, mode=mode)
        if mode is Mode.DNIS and two_factor and digits is not None:
            return await self._two_factor(req, digits, current, at_ms)
        return await self._key_alone(req, mode, digits, probe, current, at_ms)

    async def _two_factor(self, req: VerifyRequest, digits: str, current: int, at_ms: int) -> Outcome:
        """The caller's registered number picks the device and the key is checked for it alone (W / S, whatever D):
        failures count against that device's allowance; the source's budget does not apply."""
        hint = normalize(req.caller)
        if hint is None:  # nothing picks the device: no key can match
            return Outcome(Verdict.MISMATCH, mode=Mode.DNIS)
        named = await self._named(hint)
        if await self.guard.device_locked(named, at_ms):
            return Outcome(Verdict.LOCKED_OUT, mode=Mode.DNIS, detail={"lockout": "caller"})
        outcome = await self._identify_and_spend(req, digits, Mode.DNIS, hint, current, require_hint=True)
        if outcome.verdict in COUNTED:  # the lookup may have loaded devices enrolled moments ago: named again
            await self.guard.device_failed(await self._named(hint), at_ms)
        return outcome

    async def _key_alone(
        self, req: VerifyRequest, mode: Mode, digits: str | None, probe: str | None, current: int, at_ms: int
    ) -> Outcome:
        """The key alone identifies the device (W * D / S per guess): every number tried counts against the source's
        budget when it fails, and a source over budget is refused. `probe`: EITHER's dialed number, tried first."""
        locked = Outcome(Verdict.LOCKED_OUT, mode=mode, detail={"lockout": "source"})
        if await self.guard.spent(req.source, at_ms):
            return locked
        if probe is not None:
            if await self.keys.candidates(probe, current):  # the dialed number carries a live key: DNIS
                return await self._alone(req, probe, Mode.DNIS, normalize(req.caller), current, at_ms)
            if not await self.guard.count_failures(req.source, at_ms):
                return locked
        if digits is None:  # EITHER: the dialed number was no live key and the caller number cannot be one
            kind = classify(req.presented).kind
            verdict = {Kind.ANONYMOUS: Verdict.ANONYMOUS, Kind.MALFORMED: Verdict.MALFORMED}.get(kind)
            return Outcome(verdict or Verdict.MISMATCH, mode=mode)
        hint = normalize(req.caller) if mode is not Mode.ANI else None
        return await self._alone(req, digits, mode, hint, current, at_ms)

    async def _alone(
        self, req: VerifyRequest, digits: str, mode: Mode, hint: str | None, current: int, at_ms: int
    ) -> Outcome:
        """One key-alone guess. A failure is counted (refused instead when that would go over the budget); a match
        near the budget takes a slot first, so it cannot be admitted past a budget spent meanwhile."""
        locked = Outcome(Verdict.LOCKED_OUT, mode=mode, detail={"lockout": "source"})
        found = await self._identify(digits, mode, hint, current)
        if isinstance(found, Outcome):
            return found if await self.guard.count_failures(req.source, at_ms) else locked
        slot = await self.guard.slot(req.source, at_ms)
        if slot.refused:
            return locked
        outcome = await self._spend(req, found, mode, current)  # on an exception a reserved slot stays counted
        return outcome if await self.guard.settle(slot, at_ms, outcome.verdict in COUNTED) else locked

    async def _identify_and_spend(
        self, req: VerifyRequest, digits: str, mode: Mode, hint: str | None, current: int, *, require_hint: bool = False
    ) -> Outcome:
        found = await self._identify(digits, mode, hint, current, require_hint=require_hint)
        return found if isinstance(found, Outcome) else await self._spend(req, found, mode, current)

    async def _identify(
        self, digits: str, mode: Mode, hint: str | None, current: int, *, require_hint: bool = False
    ) -> Candidate | Outcome:
        """Which single device the number is a live key of (narrowed by the caller's registered number), or the
        failed outcome (mismatch, ambiguous)."""
        candidates = await self.keys.candidates(digits, current)
        found = identify(candidates, self._registered_as(hint, candidates), hint, require_hint=require_hint)
        if found.verdict is not None or found.candidate is None:
            return Outcome(found.verdict or Verdict.MISMATCH, mode=mode)
        return found.candidate

    async def _spend(self, req: VerifyRequest, cand: Candidate, mode: Mode, current: int) -> Outcome:
        """The atomic single-use spend of an identified key, and the verdict."""
        key_id = self.keys.key_id_of(cand.device_id)
        # one transaction: read the device, spend only if it still has this key id and may use keys
        result = await self.store.check_and_spend(
            cand.device_id, key_id, Direction.INBOUND, cand.epoch, self.same_call(req.call_id), cand.epoch - current
        )
        device = result.device
        if device is None or device.key_id != key_id:
            # deleted or rotated since the index was built: its old keys no longer count
            await self.keys.sync_devices()
            return Outcome(Verdict.MISMATCH, mode=mode)
        stopped = inbound_verdict(device.status)
        if stopped is not None:
            return Outcome(stopped, device.id, cand.epoch, mode, {"status": device.status})
        verdict = after_spend(device.status, result.spent)
        return Outcome(verdict, device.id, cand.epoch, mode, {"drift": cand.epoch - current}, device)

    def _guess(self, raw: str | None) -> str | None:
        """The digits of `raw` when it could be an inbound key as delivered (`core.lockout.could_be_key`), else None."""
        digits = normalize(raw)
        if digits is None or not could_be_key(digits, self.keys.index.fmt, self.config.keys.trunk_prefixes):
            return None
        return digits

    async def _named(self, caller: str) -> tuple[int, ...]:
        """`_named_devices`, once the index of registered numbers `start` began has been built."""
        task = self._numbers_task
        if self._numbers is None and task is not None and not task.done():
            await asyncio.shield(task)
        return self._named_devices(caller)

    def _named_devices(self, caller: str) -> tuple[int, ...]:
        """The devices registered with the caller's number (what two-factor failures count against). The index of
        registered numbers is rebuilt when devices were added or it is a minute old: at once when small, else in a
        worker thread while the old one keeps answering (it decides what is counted, never an admission)."""
        numbers = self.keys.mobile_numbers
        current = self._numbers
        if current is None or (current.stale(numbers) and len(numbers) <= NUMBERS_BUILT_INLINE):
            self._numbers = current = RegisteredNumbers(numbers, self.config.keys.trunk_prefixes, NUMBERS_MAX_AGE)
        elif current.stale(numbers) and (self._numbers_task is None or self._numbers_task.done()):
            self._numbers_task = asyncio.create_task(self._rebuild_numbers(dict(numbers)))
        return current.devices(caller)

    async def _rebuild_numbers(self, snapshot: dict[int, str | None]) -> None:
        trunks = self.config.keys.trunk_prefixes
        self._numbers = await asyncio.to_thread(RegisteredNumbers, snapshot, trunks, NUMBERS_MAX_AGE)

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

    # -- the access number (CALLING.md) -----------------------------------------------------------------------
    async def named_devices(self, caller: str | None) -> tuple[int, ...]:
        """The devices whose registered number `caller` is (SLK1's registered-number rule); () when none. When none,
        device changes are loaded once (rate limited) and the number asked again: a phone registered moments ago
        asks for an intent and calls at once, before the next epoch boundary's sync."""
        hint = normalize(caller)
        if hint is None:
            return ()
        named = await self._named(hint)
        if not named and await self.keys.sync_if_due():
            named = await self._named(hint)
        return named

    async def verify_dtmf(self, req: VerifyRequest) -> Outcome:
        """A key sent as DTMF after an access call was answered (CALLING.md, "DTMF"): the caller's registered number
        picks the device and the key (`presented`, the format's K digits) is checked for that device alone, against
        the windows around `at_ms` (the answer), and spent now. Failures count against the registered number's
        allowance; an unknown caller number matches nothing (`mismatch`)."""
        try:
            at_ms = self.clock_ms() if req.at_ms is None else req.at_ms
            digits = normalize(req.presented)
            current = self.keys.epoch_now(at_ms)
            if digits is None or len(digits) != self.keys.index.fmt.significant_length:
                outcome = Outcome(Verdict.NO_KEY, mode=Method.DTMF)
            elif normalize(req.caller) is not None:
                outcome = await self._two_factor(req, digits, current, at_ms)
            elif self.config.calling.dtmf_key_alone:  # a withheld number: the key alone, on the `dtmf` budget
                outcome = await self._key_alone(req, Mode.DNIS, digits, None, current, at_ms)
            else:
                outcome = Outcome(Verdict.ANONYMOUS, mode=Method.DTMF)
        except Exception as exc:  # noqa: BLE001 - any failure to decide is `error`: the call is rejected
            log.error("DTMF verification failed (%s); verdict error", type(exc).__name__)
            outcome = Outcome(Verdict.ERROR, detail={"reason": type(exc).__name__})
        outcome = dataclasses.replace(outcome, mode=Method.DTMF)
        await self._record(req, outcome)
        return outcome

    async def admitted_by_intent(self, req: VerifyRequest, device_id: int, intent_id: str) -> Outcome:
        """A call whose live intent was just spent: admitted if its device may still use keys (a suspension since the
        intent was made holds), audited with method `intent`."""
        device = await self.store.get_device(device_id)
        stopped = Verdict.ERROR if device is None else inbound_verdict(device.status)
        detail: dict[str, Any] = {"intent": intent_id}
        if stopped is not None:
            outcome = Outcome(stopped, device_id, mode=Method.INTENT, detail=detail)
        else:
            registered = device is not None and device.status == DeviceStatus.REGISTERED
            verdict = Verdict.ADMITTED if registered else Verdict.UNREGISTERED
            outcome = Outcome(verdict, device_id, mode=Method.INTENT, detail=detail)
        await self._record(req, outcome)
        return outcome

    def refused(self, req: VerifyRequest, verdict: Verdict, method: Method, **detail: Any) -> Outcome:
        """A call the access number turned away without checking a key (`no_key`, `anonymous`, `denied`, ...):
        its verdict, audited like any."""
        outcome = Outcome(verdict, mode=method, detail=dict(detail))
        self._audit_event(req, outcome)
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
        self._audit_event(req, outcome)

    def _audit_event(self, req: VerifyRequest, outcome: Outcome) -> None:
        # the caller number only when the key was the dialed number: in ANI mode it is the key, and in EITHER mode it
        # may be (a phone provisioned for ANI) unless the dialed number was a device's key
        keyless_caller = outcome.mode in (Mode.DNIS, Method.DTMF, Method.INTENT)
        dnis = keyless_caller and (req.mode is Mode.DNIS or outcome.device_id is not None)
        subject = normalize(req.caller) if dnis else None
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
