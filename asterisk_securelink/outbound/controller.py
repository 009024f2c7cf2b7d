"""Outbound keyed calls: the PBX calls an enrolled mobile with the device's current `outbound` key as caller ID.

Entry points (dialplan/securelink.conf, [securelink-mobile] and [securelink-fork]):

* `Stasis(securelink,mobile,DEVICE)` - ring the device's mobile through `[outbound] endpoint`, presenting the key of
  the epoch claimed by `next_outbound_epoch` (SLK1.md, "Outbound presentation").
* `Stasis(securelink,fork,DEVICE)` - ring the desk endpoint and the mobile together; the first to answer wins.

Legs are originated into our own Stasis app with `appArgs="leg,<call id>"`, so their events come back through the
runner; a leg enters Stasis (StasisStart) when it answers. The caller is answered only then, and the two are joined in a
mixing bridge with connected-line updates inhibited, so the key never reaches the caller.

Split: `CallState` is the pure state machine (every decision: the fork winner, which cause the caller gets, which legs
to cancel), unit-tested without Asterisk; `Outbound` is the thin controller that feeds it events and carries out the
`Command`s it returns, one call at a time under a per-call lock.

Channel ids: the call id is the caller channel's id; legs get pre-assigned ids (`slk-<hex>-mobile`/`-desk`), so events
that arrive before `originate` returns are routed correctly.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from asterisk_securelink.asterisk.ari import ChannelDestroyed, Event, StasisEnd
from asterisk_securelink.config import Config
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret
from asterisk_securelink.core.verdicts import Verdict
from asterisk_securelink.dialplan import CALL_KEY_VAR, DEVICE_VAR, RESULT_VAR
from asterisk_securelink.lifecycle import outbound_verdict
from asterisk_securelink.stasis import CallInfo, VerdictPublisher
from asterisk_securelink.store.models import utcnow
from asterisk_securelink.store.store import DeviceRow, audit_fields

log = logging.getLogger(__name__)

CALL_KINDS = frozenset({"mobile", "fork"})
LEG_KIND = "leg"
DECIDE_TIMEOUT = 5.0  # seconds for the device lookup + epoch claim; past it the verdict is `error`
HOOK_TIMEOUT = 5.0  # seconds a hook may take
LINGER = 15.0  # seconds to wait for every channel of an ended call to be destroyed before giving up on them
ORIGINATE_BACKSTOP = 5  # Asterisk's own ring timeout is ring_timeout + this; our timer fires first
MAX_CALLS = 5000  # outbound calls tracked at once; past it new calls get congestion

# Asterisk hangup causes (causes.h) seen on legs that end before answering
CAUSE_BUSY = 17
CAUSE_NO_USER_RESPONSE = 18
CAUSE_NO_ANSWER = 19
CAUSE_CALL_REJECTED = 21


class Phase(StrEnum):
    DIALING = "dialing"  # legs ringing, caller hears ringback, not answered
    BRIDGED = "bridged"  # one leg won, caller answered and bridged with it
    ENDED = "ended"  # decided; waiting for the remaining channels to go


class LegOutcome(StrEnum):
    RINGING = "ringing"  # not over yet
    ANSWERED = "answered"  # the winner
    ANSWERED_ELSEWHERE = "answered_elsewhere"  # another leg won; this one was cancelled (or hung up)
    CANCELLED = "cancelled"  # the caller hung up first
    NOANSWER = "no_answer"  # ring timeout
    BUSY = "busy"
    DECLINED = "declined"  # the callee refused (SIP 403/603 -> cause 21)
    FAILED = "failed"  # anything else: unreachable, congestion, originate refused


# ---------------------------------------------------------------------------------------------- pure decisions
def reject_reason(verdict: Verdict) -> str:
    """ARI hangup reason for a call that gets no legs. rate_limited: try again later (cause 34, SIP 503);
    revoked / unregistered / error: refused (cause 21, SIP 403)."""
    return "congestion" if verdict is Verdict.RATE_LIMITED else "rejected"


def leg_outcome(cause: int | None) -> LegOutcome:
    """What a leg that ended before answering tells us (ChannelDestroyed cause)."""
    if cause == CAUSE_BUSY:
        return LegOutcome.BUSY
    if cause in (CAUSE_NO_USER_RESPONSE, CAUSE_NO_ANSWER):
        return LegOutcome.NOANSWER
    if cause == CAUSE_CALL_REJECTED:
        return LegOutcome.DECLINED
    return LegOutcome.FAILED


def caller_reason(outcomes: Sequence[LegOutcome]) -> str:
    """ARI hangup reason for the caller when no leg answered: busy (17 -> SIP 486) if any leg was busy or declined,
    else no_answer (19 -> SIP 480) if any rang out, else congestion (34 -> SIP 503)."""
    if any(o in (LegOutcome.BUSY, LegOutcome.DECLINED) for o in outcomes):
        return "busy"
    if LegOutcome.NOANSWER in outcomes:
        return "no_answer"
    return "congestion"


@dataclass(frozen=True)
class LegPlan:
    role: str  # "mobile" | "desk"
    endpoint: str
    caller_id: str | None  # what the leg sees as the caller: the key on the mobile leg, never on the desk leg


def plan_legs(kind: str, device: DeviceRow, endpoint_fmt: str, key: str, caller_number: str | None) -> list[LegPlan]:
    """The mobile leg always; the desk leg too for `fork` when the device has a desk endpoint and forking on."""
    legs = [LegPlan("mobile", endpoint_fmt.format(number=device.mobile_number), key)]
    if kind == "fork" and device.fork_enabled and device.desk_endpoint:
        legs.append(LegPlan("desk", device.desk_endpoint, caller_number or None))
    return legs


@dataclass(frozen=True)
class Hangup:
    channel_id: str
    reason: str


@dataclass(frozen=True)
class Bridge:
    leg_id: str  # answer the caller, bridge it with this leg


Command = Hangup | Bridge


@dataclass
class LegState:
    channel_id: str
    endpoint: str
    role: str
    outcome: LegOutcome = LegOutcome.RINGING
    cause: int | None = None
    gone: bool = False


@dataclass
class CallState:
    """One outbound call, no I/O. Each event method updates the state and returns what to do."""

    call_id: str
    caller_channel: str
    device_id: int | None
    kind: str
    verdict: Verdict
    started_at: datetime
    legs: dict[str, LegState] = field(default_factory=dict)
    phase: Phase = Phase.DIALING
    winner: str | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    cause: str | None = None  # what the call ended with, e.g. no_answer, busy, normal, caller_cancelled
    caller_gone: bool = False

    @classmethod
    def rejected(cls, call_id: str, caller: str, device_id: int | None, kind: str, verdict: Verdict, now: datetime
                 ) -> tuple[CallState, list[Command]]:  # fmt: skip
        state = cls(call_id, caller, device_id, kind, verdict, now, phase=Phase.ENDED, ended_at=now)
        state.cause = reject_reason(verdict)
        return state, [Hangup(caller, state.cause)]

    def add_leg(self, plan: LegPlan, channel_id: str) -> None:
        self.legs[channel_id] = LegState(channel_id, plan.endpoint, plan.role)

    def _end(self, cause: str, now: datetime) -> None:
        self.phase = Phase.ENDED
        self.cause = cause
        self.ended_at = now

    def _ringing(self) -> list[LegState]:
        return [leg for leg in self.legs.values() if leg.outcome is LegOutcome.RINGING and not leg.gone]

    def leg_answered(self, leg_id: str, now: datetime) -> list[Command]:
        """A leg answered (entered Stasis). The first one while dialing wins; any other is hung up."""
        leg = self.legs.get(leg_id)
        if leg is None:
            return [Hangup(leg_id, "normal")]
        if self.phase is Phase.DIALING and not self.caller_gone and leg.outcome is LegOutcome.RINGING:
            self.phase = Phase.BRIDGED
            self.winner = leg_id
            self.answered_at = now
            leg.outcome = LegOutcome.ANSWERED
            cmds: list[Command] = [Bridge(leg_id)]
            for other in self._ringing():
                other.outcome = LegOutcome.ANSWERED_ELSEWHERE
                cmds.append(Hangup(other.channel_id, "answered_elsewhere"))
            return cmds
        if leg.outcome is LegOutcome.RINGING:  # answered after the call was decided (timeout, caller gone)
            leg.outcome = LegOutcome.ANSWERED_ELSEWHERE if self.winner else LegOutcome.CANCELLED
        return [Hangup(leg_id, "answered_elsewhere" if self.winner and self.winner != leg_id else "normal")]

    def leg_gone(self, leg_id: str, cause: int | None, now: datetime) -> list[Command]:
        leg = self.legs.get(leg_id)
        if leg is None or leg.gone:
            return []
        leg.gone = True
        if leg.outcome is LegOutcome.RINGING:
            leg.outcome = leg_outcome(cause)
            leg.cause = cause
        if self.phase is Phase.DIALING and not self._ringing():
            self._end(caller_reason([x.outcome for x in self.legs.values()]), now)
            return [] if self.caller_gone else [Hangup(self.caller_channel, self.cause or "congestion")]
        if self.phase is Phase.BRIDGED and leg_id == self.winner:
            self._end("normal", now)  # the callee hung up
            return [] if self.caller_gone else [Hangup(self.caller_channel, "normal")]
        return []

    def caller_left(self, now: datetime) -> list[Command]:
        if self.caller_gone:
            return []
        self.caller_gone = True
        cmds: list[Command] = []
        if self.phase is Phase.DIALING:
            for leg in self._ringing():
                leg.outcome = LegOutcome.CANCELLED
                cmds.append(Hangup(leg.channel_id, "normal"))  # a ringing leg: SIP CANCEL
            self._end("caller_cancelled", now)
        elif self.phase is Phase.BRIDGED:
            if self.winner is not None and not self.legs[self.winner].gone:
                cmds.append(Hangup(self.winner, "normal"))
            self._end("normal", now)
        return cmds

    def timed_out(self, now: datetime) -> list[Command]:
        """The ring timeout passed with nobody answering: cancel every leg, the caller gets no_answer."""
        if self.phase is not Phase.DIALING:
            return []
        cmds: list[Command] = []
        for leg in self._ringing():
            leg.outcome = LegOutcome.NOANSWER
            cmds.append(Hangup(leg.channel_id, "normal"))
        self._end("no_answer", now)
        if not self.caller_gone:
            cmds.append(Hangup(self.caller_channel, "no_answer"))
        return cmds

    def abort(self, now: datetime) -> list[Command]:
        """Something failed (bridging, setting up the legs): tear every channel down, the caller gets congestion."""
        cmds: list[Command] = []
        for leg in self.legs.values():
            if leg.gone:
                continue
            if leg.outcome is LegOutcome.RINGING:
                leg.outcome = LegOutcome.FAILED
            cmds.append(Hangup(leg.channel_id, "normal"))
        if not self.caller_gone:
            cmds.append(Hangup(self.caller_channel, "congestion"))
        if self.phase is not Phase.ENDED:
            self._end("error", now)
        return cmds

    def channels(self) -> list[str]:
        return [self.caller_channel, *self.legs]

    @property
    def finished(self) -> bool:
        return self.phase is Phase.ENDED and self.caller_gone and all(leg.gone for leg in self.legs.values())

    def record(self) -> dict[str, Any]:
        """The call record handed to `on_finished` (field names as the call_records table)."""
        answered_by = self.legs[self.winner].endpoint if self.winner else None
        return {
            "call_id": self.call_id,
            "device_id": self.device_id,
            "direction": Direction.OUTBOUND.value,
            "kind": self.kind,
            "verdict": self.verdict.value,
            "legs": [
                {"endpoint": leg.endpoint, "channel": leg.channel_id, "role": leg.role, "outcome": leg.outcome.value}
                for leg in self.legs.values()
            ],
            "answered_by": answered_by,
            "started_at": self.started_at,
            "answered_at": self.answered_at,
            "ended_at": self.ended_at,
            "hangup_cause": self.cause,
        }


# ----------------------------------------------------------------------------------------------- collaborators
@dataclass(frozen=True)
class LegExtras:
    """What the hooks add to a keyed call before its legs ring: the per-call key id (set on every channel as
    SECURELINK_CALL_KEY_ID) and extra channel variables per leg endpoint (e.g. a PJSIP header on a TLS leg)."""

    call_key_id: str | None = None
    variables: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def __repr__(self) -> str:  # the variables may carry the per-call key
        return f"LegExtras(call_key_id={self.call_key_id!r}, legs={sorted(self.variables)!r})"


class OutboundHooks(Protocol):
    """Injected by the runner (escrowed per-call key, call records: `calls.CallHooks`). Each is awaited, bounded by
    HOOK_TIMEOUT; an exception is logged and the call goes on (without a per-call key if `before_legs` failed)."""

    async def before_legs(self, call_id: str, device_id: int, endpoints: Sequence[str]) -> LegExtras: ...

    async def on_bridged(
        self, call_id: str, device_id: int, caller_channel_id: str, leg_channel_id: str, leg_endpoint: str
    ) -> None: ...

    async def on_finished(self, record: dict[str, Any]) -> None: ...


class NoHooks:
    async def before_legs(self, call_id: str, device_id: int, endpoints: Sequence[str]) -> LegExtras:
        return LegExtras()

    async def on_bridged(
        self, call_id: str, device_id: int, caller_channel_id: str, leg_channel_id: str, leg_endpoint: str
    ) -> None:
        return None

    async def on_finished(self, record: dict[str, Any]) -> None:
        return None


class DeviceSource(Protocol):
    """What we need from the store (implemented by `store.Store`)."""

    async def get_device(self, ref: str | int) -> DeviceRow | None: ...

    async def next_outbound_epoch(self, device_id: int, current: int, call_id: str | None) -> int | None: ...


class OutboundChannels(Protocol):
    """What we need from ARI (implemented by `ari.AriClient`)."""

    async def originate(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: str | Sequence[str] | None = None,
        caller_id: str | None = None,
        timeout: int | None = None,  # noqa: ASYNC109 - ARI's ring timeout
        variables: Mapping[str, str] | None = None,
        channel_id: str | None = None,
    ) -> Any: ...

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool: ...

    async def answer(self, channel_id: str) -> None: ...

    async def ring(self, channel_id: str) -> None: ...

    async def set_channel_var(self, channel_id: str, name: str, value: str) -> None: ...

    async def create_bridge(self, type: str = "mixing", *, bridge_id: str | None = None, name: str | None = None
                            ) -> str: ...  # fmt: skip

    async def add_channel_to_bridge(
        self, bridge_id: str, channel_ids: str | Sequence[str], *, inhibit_connected_line_updates: bool | None = None
    ) -> None: ...

    async def destroy_bridge(self, bridge_id: str) -> bool: ...


Keyer = Callable[[str, int], str]  # (key_id, epoch) -> the rendered outbound key
AuditSink = Callable[[dict[str, Any]], Awaitable[Any]]


def keyer_for(master_key: bytes, fmt: NumberFormat) -> Keyer:
    def key(key_id: str, epoch: int) -> str:
        return derive_key(device_secret(master_key, key_id), Direction.OUTBOUND, epoch, fmt)

    return key


# -------------------------------------------------------------------------------------------------- controller
@dataclass(eq=False)
class _Call:
    state: CallState
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # no longer dialing
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)  # ended and every channel gone
    bridge_id: str | None = None
    task: asyncio.Task[None] | None = None


class Outbound:
    def __init__(
        self,
        config: Config,
        devices: DeviceSource,
        channels: OutboundChannels,
        keyer: Keyer,
        epoch_now: Callable[[], int],
        *,
        hooks: OutboundHooks | None = None,
        audit: AuditSink | None = None,
        publisher: VerdictPublisher | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.devices = devices
        self.channels = channels
        self.keyer = keyer
        self.epoch_now = epoch_now
        self.hooks: OutboundHooks = hooks or NoHooks()
        self.audit = audit
        self.publisher = publisher
        self.clock = clock
        self.ring_timeout = float(config.outbound.ring_timeout)
        self._calls: dict[str, _Call] = {}  # call id -> call
        self._by_channel: dict[str, str] = {}  # caller and leg channel ids -> call id
        self._background: set[asyncio.Task[Any]] = set()

    @staticmethod
    def handles(call: CallInfo) -> bool:
        kind = call.args[0].strip().lower() if call.args else ""
        return kind in CALL_KINDS or kind == LEG_KIND

    @property
    def active(self) -> int:
        return len(self._calls)

    # -- events ------------------------------------------------------------------------------------------------
    async def stasis_start(self, call: CallInfo) -> None:
        kind = call.args[0].strip().lower()
        if kind == LEG_KIND:
            await self._leg_answered(call)
            return
        if call.channel_id in self._by_channel:
            return  # seen again by a re-sync: already ours
        try:
            await self._start_call(call, kind)
        except Exception as exc:
            log.error("outbound call %s failed to start (%s); rejecting", call.channel_id, type(exc).__name__)
            log.debug("outbound start traceback", exc_info=True)
            c = self._calls.get(call.channel_id)
            if c is None:
                await self._hangup_quietly(call.channel_id, "congestion")
            else:
                async with c.lock:
                    await self._apply(c, c.state.abort(self.clock()))

    async def on_event(self, event: Event) -> None:
        if not isinstance(event, StasisEnd | ChannelDestroyed):
            return
        cid = event.channel.id
        call_id = self._by_channel.get(cid)
        c = self._calls.get(call_id) if call_id else None
        if c is None:
            return
        cause = event.cause if isinstance(event, ChannelDestroyed) else None
        await self._channel_gone(c, cid, cause)

    async def reconcile(self, live: set[str]) -> None:
        """After an ARI reconnect: channels that vanished while we were disconnected are gone."""
        for c in list(self._calls.values()):
            for cid in c.state.channels():
                if cid not in live:
                    await self._channel_gone(c, cid, None)

    # -- the call ----------------------------------------------------------------------------------------------
    async def _start_call(self, call: CallInfo, kind: str) -> None:
        call_id = call.channel_id
        now = self.clock()
        ref = call.args[1].strip() if len(call.args) > 1 else ""
        if len(self._calls) >= MAX_CALLS:
            log.error("outbound: %d calls in progress; refusing %s", len(self._calls), call_id)
            await self._hangup_quietly(call_id, "congestion")
            return
        device: DeviceRow | None = None
        epoch = current = None
        verdict = Verdict.ERROR
        try:
            async with asyncio.timeout(DECIDE_TIMEOUT):
                device = await self.devices.get_device(int(ref)) if ref.isascii() and ref.isdigit() else None
                refused = outbound_verdict(device.status if device is not None else None)
                if refused is not None or device is None:
                    verdict = refused or Verdict.ERROR
                else:
                    current = self.epoch_now()
                    epoch = await self.devices.next_outbound_epoch(device.id, current, call_id)
                    verdict = Verdict.ADMITTED if epoch is not None else Verdict.RATE_LIMITED
        except Exception as exc:  # noqa: BLE001 - store down, timeout: no decision, no leg
            log.error("outbound %s: could not decide (%s); verdict error", call_id, type(exc).__name__)
            verdict = Verdict.ERROR
        device_id = device.id if device is not None else None
        log.info("outbound %s %s: %s device=%s", kind, call_id, verdict, device_id)
        await self._record_verdict(call, kind, verdict, device_id, None if epoch is None else epoch - (current or 0))

        if verdict is not Verdict.ADMITTED or device is None or epoch is None:
            state, cmds = CallState.rejected(call_id, call_id, device_id, kind, verdict, now)
            c = self._track(state)
            await self._set_vars(call_id, verdict, device_id)
            async with c.lock:
                await self._apply(c, cmds)
            return

        key = self.keyer(device.key_id, epoch)
        plans = plan_legs(kind, device, self.config.outbound.endpoint, key, call.caller)
        state = CallState(call_id, call_id, device.id, kind, verdict, now)
        tag = uuid.uuid4().hex[:12]
        ids = [f"slk-{tag}-{p.role}" for p in plans]
        for plan, leg_id in zip(plans, ids, strict=True):
            state.add_leg(plan, leg_id)
        c = self._track(state)
        async with c.lock:
            extras = await self._before_legs(call_id, device.id, plans)
            await self._set_vars(call_id, verdict, device.id, extras.call_key_id)
            try:
                await self.channels.ring(call_id)  # ringback (180) while the legs ring; not answered yet
            except Exception as exc:  # noqa: BLE001 - the caller may be gone already; its events will say so
                log.warning("outbound %s: ring failed (%s)", call_id, type(exc).__name__)
            results = await asyncio.gather(
                *(self._originate(call_id, plan, leg_id, extras) for plan, leg_id in zip(plans, ids, strict=True)),
                return_exceptions=True,
            )
            for leg_id, result in zip(ids, results, strict=True):
                if isinstance(result, BaseException):
                    log.warning("outbound %s: originate of leg %s failed (%s)", call_id, leg_id, type(result).__name__)
                    await self._hangup_quietly(leg_id, "normal")  # in case it exists after all
                    await self._apply(c, state.leg_gone(leg_id, None, self.clock()))

    async def _before_legs(self, call_id: str, device_id: int, plans: Sequence[LegPlan]) -> LegExtras:
        try:
            coro = self.hooks.before_legs(call_id, device_id, [p.endpoint for p in plans])
            return await asyncio.wait_for(coro, HOOK_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - no per-call key for this call; the call itself goes on
            log.error("outbound %s: no per-call key (%s)", call_id, type(exc).__name__)
            return LegExtras()

    async def _originate(self, call_id: str, plan: LegPlan, leg_id: str, extras: LegExtras) -> None:
        variables = dict(extras.variables.get(plan.endpoint, {}))
        if extras.call_key_id:
            variables[CALL_KEY_VAR] = extras.call_key_id
        await self.channels.originate(
            plan.endpoint,
            app=self.config.ari.app,
            app_args=f"{LEG_KIND},{call_id}",
            caller_id=plan.caller_id,
            timeout=int(self.ring_timeout) + ORIGINATE_BACKSTOP,
            variables=variables or None,
            channel_id=leg_id,
        )

    async def _leg_answered(self, call: CallInfo) -> None:
        call_id = call.args[1].strip() if len(call.args) > 1 else ""
        c = self._calls.get(call_id)
        if c is None or call.channel_id not in c.state.legs:
            log.warning("outbound: leg %s answered for an unknown call; hanging up", call.channel_id)
            await self._hangup_quietly(call.channel_id, "normal")
            return
        async with c.lock:
            await self._apply(c, c.state.leg_answered(call.channel_id, self.clock()))

    async def _channel_gone(self, c: _Call, channel_id: str, cause: int | None) -> None:
        async with c.lock:
            now = self.clock()
            if channel_id == c.state.caller_channel:
                cmds = c.state.caller_left(now)
            else:
                cmds = c.state.leg_gone(channel_id, cause, now)
            await self._apply(c, cmds)

    async def _supervise(self, c: _Call) -> None:
        """Ring timeout, then wait for the end and for every channel to go; then the record, always."""
        try:
            try:
                await asyncio.wait_for(c.settled.wait(), self.ring_timeout)
            except TimeoutError:
                async with c.lock:
                    await self._apply(c, c.state.timed_out(self.clock()))
            await c.ended.wait()  # a bridged call lasts as long as it lasts; hangups end it
            try:
                await asyncio.wait_for(c.done.wait(), LINGER)
            except TimeoutError:
                left = [cid for cid in c.state.channels() if not self._is_gone(c, cid)]
                log.warning("outbound %s: %d channel(s) not gone after %.0fs; hanging up", c.state.call_id,
                            len(left), LINGER)  # fmt: skip
                for cid in left:
                    await self._hangup_quietly(cid, "normal")
        finally:
            await self._finish(c)

    # -- carrying out ------------------------------------------------------------------------------------------
    async def _apply(self, c: _Call, cmds: list[Command]) -> None:
        """Run the commands (the caller holds c.lock), then update the call's flags."""
        for cmd in cmds:
            if isinstance(cmd, Hangup):
                await self._hangup_quietly(cmd.channel_id, cmd.reason)
            else:
                try:
                    await self._bridge(c, cmd.leg_id)
                except Exception as exc:  # noqa: BLE001 - caller gone mid-way, ARI error: tear down
                    log.warning("outbound %s: bridging failed (%s)", c.state.call_id, type(exc).__name__)
                    await self._apply(c, c.state.abort(self.clock()))
        st = c.state
        if st.phase is not Phase.DIALING:
            c.settled.set()
        if st.phase is Phase.ENDED:
            c.ended.set()
        if st.finished:
            c.done.set()

    async def _bridge(self, c: _Call, leg_id: str) -> None:
        st = c.state
        await self.channels.answer(st.caller_channel)
        c.bridge_id = await self.channels.create_bridge("mixing", name=f"securelink-{st.call_id}"[:64])
        # inhibit: neither side's identity is pushed to the other, so the key never reaches the caller
        await self.channels.add_channel_to_bridge(
            c.bridge_id, [st.caller_channel, leg_id], inhibit_connected_line_updates=True
        )
        log.info("outbound %s: bridged with %s leg", st.call_id, st.legs[leg_id].role)
        if st.device_id is not None:
            await self._hook("on_bridged", self.hooks.on_bridged(
                st.call_id, st.device_id, st.caller_channel, leg_id, st.legs[leg_id].endpoint
            ))  # fmt: skip

    async def _finish(self, c: _Call) -> None:
        st = c.state
        if c.bridge_id is not None:
            try:
                await self.channels.destroy_bridge(c.bridge_id)
            except Exception as exc:  # noqa: BLE001
                log.warning("outbound %s: could not destroy bridge (%s)", st.call_id, type(exc).__name__)
        for cid in st.channels():
            if self._by_channel.get(cid) == st.call_id:
                del self._by_channel[cid]
        self._calls.pop(st.call_id, None)
        if st.ended_at is None:
            st.ended_at = self.clock()
        log.info("outbound %s ended: %s (answered by %s)", st.call_id, st.cause,
                 st.legs[st.winner].role if st.winner else "nobody")  # fmt: skip
        await self._hook("on_finished", self.hooks.on_finished(st.record()))

    def _track(self, state: CallState) -> _Call:
        """Register a call (and its channels) and start its supervisor: the ring timer and the final record."""
        c = _Call(state)
        self._calls[state.call_id] = c
        for cid in state.channels():
            self._by_channel[cid] = state.call_id
        c.task = asyncio.create_task(self._supervise(c), name=f"outbound-{state.call_id}")
        self._background.add(c.task)
        c.task.add_done_callback(self._background.discard)
        return c

    @staticmethod
    def _is_gone(c: _Call, channel_id: str) -> bool:
        if channel_id == c.state.caller_channel:
            return c.state.caller_gone
        leg = c.state.legs.get(channel_id)
        return leg is None or leg.gone

    async def _hook(self, name: str, coro: Awaitable[None]) -> None:
        try:
            await asyncio.wait_for(coro, HOOK_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a hook must not break call handling
            log.error("outbound hook %s failed (%s)", name, type(exc).__name__)

    async def _set_vars(
        self, channel_id: str, verdict: Verdict, device_id: int | None, call_key_id: str | None = None
    ) -> None:
        values = {RESULT_VAR: verdict.value, DEVICE_VAR: "" if device_id is None else str(device_id)}
        if call_key_id:
            values[CALL_KEY_VAR] = call_key_id
        for name, value in values.items():
            try:
                await self.channels.set_channel_var(channel_id, name, value)
            except Exception as exc:  # noqa: BLE001 - the caller may have gone
                log.warning("outbound %s: could not set %s (%s)", channel_id, name, type(exc).__name__)

    async def _hangup_quietly(self, channel_id: str, reason: str) -> None:
        try:
            await self.channels.hangup(channel_id, reason)
        except Exception as exc:  # noqa: BLE001 - already gone, ARI hiccup
            log.warning("outbound: could not hang up %s (%s)", channel_id, type(exc).__name__)

    async def _record_verdict(
        self, call: CallInfo, kind: str, verdict: Verdict, device_id: int | None, drift: int | None
    ) -> None:
        """Audit (never the key: only the epoch drift) and an AMI SecureLinkVerdict event."""
        if self.audit is not None:
            event = audit_fields(
                "outbound",
                verdict.value,
                "asterisk",
                device_id=device_id,
                direction=Direction.OUTBOUND.value,
                mode=kind,
                call_id=call.channel_id,
                channel=call.name[:128] if call.name else None,
                detail={"drift": drift} if drift is not None else None,
            )
            try:
                await asyncio.wait_for(self.audit(event), DECIDE_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - the audit layer buffers; never block a call on it
                log.warning("outbound audit failed (%s)", type(exc).__name__)
        if self.publisher is not None:
            task = asyncio.create_task(
                self.publisher.publish_verdict(
                    verdict.value, "" if device_id is None else str(device_id), "outbound", kind, call.name,
                    call.channel_id,
                )
            )  # fmt: skip
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def close(self, grace: float = 3.0) -> None:
        """Stop supervising (channels stay with Asterisk; a restarted app hangs up legs it does not know)."""
        tasks = list(self._background)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
