"""Thin handlers: Stasis events and FastAGI requests in, verification service calls and channel commands out.

The decisions live elsewhere (`inbound.route_for`, `service.VerificationService`); a handler only reads the channel,
asks, applies the answer, and fails closed when anything goes wrong: a channel it could not decide on is hung up.

FastAGI (`agi_verify`, `agi_register`) returns channel variables instead and the dialplan applies them. The lockout
source (`routing.source_of`) is `SECURELINK_SOURCE` when the entry context passes it (the third Stasis argument, the
second AGI argument), else the trunk of the channel name (of `agi_channel` only when that value has the shape of an
Asterisk channel name, `asterisk.agi.is_channel_name`); anything else counts against the AGI peer's address
(`agi:127.0.0.1`), which the peer cannot choose. A peer that makes up names can spread its guesses over sources, but
not past the budget of every source together (`inbound.guard.TOTAL`); that a name is Asterisk's own rests on
`agi.allow_from` (Asterisk hosts only).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TypeVar

from asterisk_securelink.asterisk.agi import PEER_KEY, is_channel_name
from asterisk_securelink.calling.contract import Devices, agi_variables
from asterisk_securelink.calling.onward import Admitted, Onward
from asterisk_securelink.callkeys.service import CallKeys
from asterisk_securelink.config import Config
from asterisk_securelink.core.ascii import ascii_lower
from asterisk_securelink.core.handoff import Handoff
from asterisk_securelink.core.numbers import normalize
from asterisk_securelink.core.verdicts import Method, Mode, Verdict
from asterisk_securelink.dialplan import AGI_TOKEN_VAR, CALL_KEY_VAR, REGISTRATION_CONTEXT, RESULT_VAR
from asterisk_securelink.inbound.routing import Action, channel_vars, parse_mode, request_for, route_for, source_of
from asterisk_securelink.inbound.service import Outcome, VerificationService
from asterisk_securelink.lifecycle import DeviceStatus
from asterisk_securelink.notifier import Notifier, VerdictNote
from asterisk_securelink.stasis import CallInfo, ChannelControl, hand_off, hangup_quietly
from asterisk_securelink.store.store import audit_fields

log = logging.getLogger(__name__)
Key = TypeVar("Key", str, tuple[str, str])
Value = TypeVar("Value", int, Admitted)

VERIFY_TIMEOUT = 5.0  # seconds; past it the verdict is `error` and the call is rejected
REGISTRABLE_TTL = 300.0  # seconds a channel may take from the registration context to its register step
OVERLOAD_LOG_EVERY = 10.0  # seconds between log lines about calls turned away for overload
OVERLOAD_AUDIT_EVERY = 1.0  # seconds of overload summed up in one `verify.overload` audit row
VOUCHER_TIMEOUT = 2.0  # seconds for an admitted call's per-call key; past it the call goes on without one


class Handlers:
    def __init__(
        self,
        config: Config,
        service: VerificationService,
        channels: ChannelControl,
        notifier: Notifier,
        callkeys: CallKeys | None = None,
        onward: Onward | None = None,
        agi_routes: Devices | None = None,
    ) -> None:
        """`callkeys`: the per-call keys (an admitted call gets one with the device API on); `onward`: where an
        admitted call goes (`calling.onward`; None: straight into the admitted context, as before routing)."""
        self.config = config
        self.service = service
        self.channels = channels
        self.notifier = notifier
        self.callkeys = callkeys
        self.onward = onward
        self.agi_routes = agi_routes  # FastAGI: the devices whose routing variables an admitted call gets
        self._registrable: dict[str, tuple[Admitted, float]] = {}  # channel id -> (its admission, monotonic deadline)
        self._agi_registrable: dict[tuple[str, str], tuple[int, float]] = {}  # (AGI peer, uniqueid) -> the same
        self._in_flight = 0  # admissions being decided (`admit`)
        self._overload_logged_at = -1e9
        self._overloaded_since_log = 0
        self._overloaded_unaudited = 0  # turned away since the last `verify.overload` audit row
        self._overload_flush: asyncio.TimerHandle | None = None

    # -- Stasis ------------------------------------------------------------------------------------------------
    async def stasis_start(self, call: CallInfo) -> None:
        kind = "inbound" if call.kind is None else call.kind
        try:
            if kind == "inbound":
                await self.admit(call)
            elif kind == "register":
                await self.register(call)
            else:
                log.warning("channel %s entered Stasis with unknown arguments; rejecting", call.channel_id)
                await self.channels.hangup(call.channel_id, "rejected")
        except Exception as exc:  # noqa: BLE001 - fail closed on anything unexpected
            log.error("handling channel %s failed (%s); rejecting", call.channel_id, type(exc).__name__)
            await hangup_quietly(self.channels, call.channel_id, "rejected")

    async def admit(self, call: CallInfo) -> None:
        """Admission of one call, at most `inbound.max_in_flight` at once: past it the call is turned away at once
        (verdict `error`, reason `overload`) rather than queued behind the others, so a flood slows no admitted call
        and is never admitted unverified."""
        if self._in_flight >= self.config.inbound.max_in_flight:
            await self._overloaded(call)
            return
        started = time.perf_counter()
        self._in_flight += 1
        try:
            await self._admit(call)
        finally:
            self._in_flight -= 1
            self.notifier.admission(time.perf_counter() - started)

    async def _overloaded(self, call: CallInfo) -> None:
        """Turned away before verification: one ARI request (the hang-up), no audit row and no AMI event of its own;
        counted in /metrics and in one `verify.overload` audit row per second of overload (`_overload_summary`)."""
        try:
            mode = parse_mode(call.arg(1), self.config.inbound.mode)
        except ValueError:
            mode = Mode.ANI
        self.notifier.verdict(VerdictNote(Verdict.ERROR.value, "inbound", mode.value, None, "", ""), publish=False)
        self.notifier.overload()
        self._overloaded_since_log += 1
        self._overloaded_unaudited += 1
        if self._overload_flush is None:
            loop = asyncio.get_running_loop()
            self._overload_flush = loop.call_later(OVERLOAD_AUDIT_EVERY, self._overload_summary)
        now = time.monotonic()
        if now - self._overload_logged_at >= OVERLOAD_LOG_EVERY:  # a flood must not flood the log too
            log.warning("%d call(s) turned away: %d admissions in flight (inbound.max_in_flight); verdict error "
                        "(overload)", self._overloaded_since_log, self._in_flight)  # fmt: skip
            self._overload_logged_at, self._overloaded_since_log = now, 0
        await self.channels.hangup(call.channel_id, self.config.inbound.overload_hangup)

    def _overload_summary(self) -> None:
        """One audit row for the calls turned away in the last second (and at stop: `flush_overload`)."""
        self._overload_flush = None
        n, self._overloaded_unaudited = self._overloaded_unaudited, 0
        if n:
            detail = {"reason": "overload", "calls": n, "max_in_flight": self.config.inbound.max_in_flight}
            self.notifier.record(audit_fields("verify.overload", Verdict.ERROR.value, "asterisk",
                                              direction="inbound", detail=detail))  # fmt: skip

    def flush_overload(self) -> None:
        if self._overload_flush is not None:
            self._overload_flush.cancel()
        self._overload_summary()

    async def _admit(self, call: CallInfo) -> None:
        outcome = await self.decide(call, call.arg(1), "stasis", publish=False, logged=False)
        route = route_for(outcome.verdict, self.config.inbound)
        voucher = await self._voucher(call, outcome)
        note = self._note(call, outcome)
        if route.action is Action.ADMIT and self.onward is not None and outcome.device_id is not None:
            self.notifier.verdict(note, publish=False)  # the onward path logs the call's one line (where it went)
            await self.onward.go(call, self._admitted(call, outcome, voucher, note))
            return
        _log_verdict("stasis", call, outcome)
        if route.action is Action.ADMIT:  # no onward routing: straight into the admitted context, as it was
            self.notifier.verdict(note)
            variables = {**channel_vars(outcome.verdict, outcome.device_id, outcome.mode), **voucher}
            await asyncio.gather(*(self.channels.set_channel_var(call.channel_id, n, v) for n, v in variables.items()))
            await self.channels.continue_in_dialplan(call.channel_id, route.context, call.exten, 1)
            return
        # every other verdict in one request: the dialplan sets the variables, publishes it and acts on it
        self.notifier.verdict(note, publish=False)
        if route.action is Action.REGISTER and outcome.device_id is not None:
            _remember(self._registrable, call.channel_id, self._admitted(call, outcome, voucher, None))
        kind = {Action.REJECT: "r", Action.CONTINUE: "c", Action.REGISTER: "u"}[route.action]
        custom = route.context if kind == "u" and route.context != REGISTRATION_CONTEXT else ""
        handoff = Handoff(kind, outcome.verdict.value, outcome.device_id, outcome.mode.value, next_context=custom or "",
                          emit_verdict=True)  # fmt: skip
        await hand_off(self.channels, call, handoff)

    def allow_register(self, channel_id: str, admitted: Admitted) -> None:
        """`channel_id` (verified `unregistered` elsewhere, e.g. on an access number) may register its device once,
        from the registration context, within REGISTRABLE_TTL; it then goes on as `admitted` says."""
        _remember(self._registrable, channel_id, admitted)

    @staticmethod
    def _admitted(call: CallInfo, outcome: Outcome, variables: dict[str, str], note: VerdictNote | None) -> Admitted:
        """`note`: the admission's verdict, still to be published (by the dialplan when the call is handed over)."""
        assert outcome.device_id is not None
        return Admitted(outcome.device_id, Method(outcome.mode.value), caller=call.caller, variables=variables,
                        pending=note, device=outcome.device)  # fmt: skip

    async def register(self, call: CallInfo) -> None:
        """`Stasis(securelink,register)` from the registration context: only a channel this app admitted as
        `unregistered` may register its device, and only once."""
        admitted = _take(self._registrable, call.channel_id)
        if admitted is None:
            log.warning("channel %s asked to register without a verified unregistered key", call.channel_id)
            await self.channels.hangup(call.channel_id, "rejected")
            return
        if not await self._register(admitted.device_id):
            await self.channels.hangup(call.channel_id, "rejected")
            return
        if self.onward is not None:
            await self.onward.go(call, admitted)
            return
        await self.channels.set_channel_var(call.channel_id, RESULT_VAR, Verdict.ADMITTED.value)
        await self.channels.continue_in_dialplan(call.channel_id, self.config.inbound.admitted_context, call.exten, 1)

    async def _register(self, device_id: int) -> bool:
        device = await self.service.register(device_id, actor="call")
        if device.status != DeviceStatus.REGISTERED:  # suspended or revoked since the call was verified
            log.warning("device %s is %s: not registered, call rejected", device.id, device.status)
            return False
        log.info("device %s registered by its first verified call", device.id)
        return True

    # -- shared with FastAGI ---------------------------------------------------------------------------------
    async def decide(
        self,
        call: CallInfo,
        mode_arg: str | None,
        via: str,
        source: str | None = None,
        publish: bool = True,
        logged: bool = True,
    ) -> Outcome:
        """`source`: the lockout source when it is not `routing.source_of` the channel and the third Stasis argument
        (FastAGI: see the module). `publish=False`: the caller counts and publishes the verdict itself;
        `logged=False`: the caller logs it (an admitted call routed onward: one line, by the onward path)."""
        try:
            mode = parse_mode(mode_arg, self.config.inbound.mode)
        except ValueError:
            log.error("channel %s: bad mode argument; verdict error", call.channel_id)
            outcome = Outcome(Verdict.ERROR, mode=Mode.ANI, detail={"reason": "bad mode argument"})
        else:
            req = request_for(mode, call.caller, call.exten, call.channel_id, call.name, call.arg(2))
            if source is not None:
                req = dataclasses.replace(req, source=source)
            try:
                outcome = await asyncio.wait_for(self.service.verify(req), VERIFY_TIMEOUT)
            except TimeoutError:
                log.error("channel %s: verification timed out; verdict error", call.channel_id)
                outcome = Outcome(Verdict.ERROR, mode=mode, detail={"reason": "timeout"})
        if publish:
            self.notifier.verdict(self._note(call, outcome))
        if logged:
            _log_verdict(via, call, outcome)
        return outcome

    # -- FastAGI ----------------------------------------------------------------------------------------------
    async def agi_verify(self, env: Mapping[str, str], args: list[str]) -> dict[str, str]:
        """FastAGI `verify` route: returns the channel variables to set; the dialplan decides. A channel found
        `unregistered` may then register its device through the `register` route."""
        call = CallInfo(
            channel_id=env.get("agi_uniqueid", ""),
            name=env.get("agi_channel", ""),
            caller=env.get("agi_callerid"),
            exten=env.get("agi_extension") or env.get("agi_dnid"),
        )
        outcome = await self.decide(call, args[0] if args else None, "agi", source=agi_source(env, args))
        route = route_for(outcome.verdict, self.config.inbound)
        if route.action is Action.REGISTER and outcome.device_id is not None and call.channel_id:
            _remember(self._agi_registrable, _agi_channel(env), outcome.device_id)
        found = {**channel_vars(outcome.verdict, outcome.device_id, outcome.mode), **await self._voucher(call, outcome)}
        if route.action is Action.ADMIT and outcome.device_id is not None and self.agi_routes is not None:
            found.update(
                await agi_variables(self.config, self.agi_routes, outcome.device_id, Method(outcome.mode.value))
            )
        return self._vouched(found)

    def _vouched(self, variables: dict[str, str]) -> dict[str, str]:
        """A FastAGI answer with `agi.result_token`: the dialplan believes only answers that carry it (a process
        squatting the AGI port does not know it)."""
        token = self.config.agi.result_token
        return {**variables, AGI_TOKEN_VAR: token} if token else variables

    async def agi_register(self, env: Mapping[str, str], args: list[str]) -> dict[str, str]:
        """FastAGI `register` route (`[securelink-register-agi]`), the AGI twin of `Stasis(securelink,register)`:
        only a channel `agi_verify` found `unregistered` (same uniqueid, from the same peer, within
        REGISTRABLE_TTL) registers its device, and only once. `SECURELINK_RESULT=admitted` when it did."""
        device_id = _take(self._agi_registrable, _agi_channel(env))
        if device_id is None:
            log.warning(
                "AGI channel %s asked to register without a verified unregistered key", env.get("agi_uniqueid", "")
            )
            return {RESULT_VAR: Verdict.ERROR.value}
        if not await self._register(device_id):
            return {RESULT_VAR: Verdict.REVOKED.value}  # what a suspended or revoked device's key gets
        if self.agi_routes is not None:
            method = Method.DNIS if args and ascii_lower(args[0].strip()) == "dnis" else Method.ANI
            return self._vouched(await agi_variables(self.config, self.agi_routes, device_id, method))
        return self._vouched({RESULT_VAR: Verdict.ADMITTED.value})

    # -- helpers -----------------------------------------------------------------------------------------------
    async def _voucher(self, call: CallInfo, outcome: Outcome) -> dict[str, str]:
        """An admitted call's per-call key (device API on): `{SECURELINK_CALL_KEY_ID: id}`, or nothing."""
        if self.callkeys is None or outcome.verdict is not Verdict.ADMITTED or outcome.device_id is None:
            return {}
        delivered = normalize(call.exten if outcome.mode is Mode.DNIS else call.caller)
        if delivered is None or not call.channel_id:
            return {}
        try:
            coro = self.callkeys.inbound(call.channel_id, outcome.device_id, delivered)
            key_id = await asyncio.wait_for(coro, VOUCHER_TIMEOUT)
            return {} if key_id is None else {CALL_KEY_VAR: key_id}
        except Exception as exc:  # noqa: BLE001 - the call is admitted; it goes on without a per-call key
            log.error("channel %s: no per-call key (%s)", call.channel_id, type(exc).__name__)
            return {}

    @staticmethod
    def _note(call: CallInfo, outcome: Outcome) -> VerdictNote:
        device = outcome.device_id
        return VerdictNote(outcome.verdict.value, "inbound", outcome.mode.value, device, call.name, call.channel_id)


def _log_verdict(via: str, call: CallInfo, outcome: Outcome) -> None:
    log.info("%s %s: %s device=%s mode=%s", via, call.channel_id, outcome.verdict, outcome.device_id, outcome.mode)


def agi_source(env: Mapping[str, str], args: Sequence[str] = ()) -> str:
    """The lockout source of a FastAGI request: `SECURELINK_SOURCE` (the second argument), else the trunk of a
    channel name, else the peer's address (module doc)."""
    name = env.get("agi_channel", "")
    named = args[1] if len(args) > 1 else None
    if is_channel_name(name) or named:
        found = source_of(name if is_channel_name(name) else None, named)
        if found:
            return found
    return f"agi:{env.get(PEER_KEY) or 'unknown'}"


def _agi_channel(env: Mapping[str, str]) -> tuple[str, str]:
    return env.get(PEER_KEY, ""), env.get("agi_uniqueid", "")


def _remember(table: dict[Key, tuple[Value, float]], key: Key, value: Value) -> None:
    """`key` (a channel) may register the device of `value` within REGISTRABLE_TTL; expired entries are dropped."""
    now = time.monotonic()
    for k in [k for k, (_, deadline) in table.items() if deadline < now]:
        del table[k]
    table[key] = (value, now + REGISTRABLE_TTL)


def _take(table: dict[Key, tuple[Value, float]], key: Key) -> Value | None:
    """The device `key` may register, once; None when it may not (never verified, already used, or expired)."""
    entry = table.pop(key, None)
    if entry is None or entry[1] < time.monotonic():
        return None
    return entry[0]
