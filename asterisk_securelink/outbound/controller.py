"""Outbound keyed calls: the PBX calls an enrolled mobile with the device's current `outbound` key as caller ID.

Entry points (dialplan/securelink.conf, [securelink-mobile] and [securelink-fork]):

* `Stasis(securelink,mobile,DEVICE)` - ring the device's mobile through `[outbound] endpoint`, presenting the key of
  the epoch claimed by `next_outbound_epoch` (SLK1.md, "Outbound presentation").
* `Stasis(securelink,fork,DEVICE)` - ring the desk endpoint and the mobile together; the first to answer wins.

Legs are originated into our own Stasis app with `appArgs="leg,<call id>"`, so their events come back through the
runner; a leg enters Stasis (StasisStart) when it answers. The caller is answered only then, and the two are joined in a
mixing bridge with connected-line updates inhibited, so the key never reaches the caller.

Split: `outbound.state.CallState` is the pure state machine (every decision: the fork winner, which cause the caller
gets, which legs to cancel), unit-tested without Asterisk; `Outbound` here is the thin async controller that feeds it
events and carries out the `Command`s it returns, one call at a time under a per-call lock. The per-call key and call
record hooks it calls live in `outbound.hooks`; its verdicts go out through the `notifier.Notifier`.

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
from typing import Any, Protocol

from asterisk_securelink.asterisk.ari.events import ChannelDestroyed, Event, StasisEnd
from asterisk_securelink.config import Config
from asterisk_securelink.core.slk1 import Direction
from asterisk_securelink.core.verdicts import Verdict
from asterisk_securelink.dialplan import CALL_KEY_VAR, DEVICE_VAR, RESULT_VAR
from asterisk_securelink.lifecycle import outbound_verdict
from asterisk_securelink.notifier import Notifier, VerdictNote
from asterisk_securelink.outbound.state import CallState, Command, Hangup, LegExtras, LegPlan, Phase, plan_legs
from asterisk_securelink.stasis import CallInfo, hangup_quietly
from asterisk_securelink.store.models import utcnow
from asterisk_securelink.store.store import DeviceRow, audit_fields
from asterisk_securelink.tasks import BackgroundTasks

log = logging.getLogger(__name__)

CALL_KINDS = frozenset({"mobile", "fork"})
LEG_KIND = "leg"
DECIDE_TIMEOUT = 5.0  # seconds for the device lookup + epoch claim; past it the verdict is `error`
HOOK_TIMEOUT = 5.0  # seconds a hook may take
LINGER = 15.0  # seconds to wait for every channel of an ended call to be destroyed before giving up on them
ORIGINATE_BACKSTOP = 5  # Asterisk's own ring timeout is ring_timeout + this; our timer fires first
MAX_CALLS = 5000  # outbound calls tracked at once; past it new calls get congestion


# ----------------------------------------------------------------------------------------------- collaborators
class OutboundHooks(Protocol):
    """Injected by the composition root (the per-call key, call records: `outbound.hooks.CallHooks`). Each is awaited,
    bounded by HOOK_TIMEOUT; an exception is logged and the call goes on (without a per-call key if `before_legs`
    failed)."""

    async def before_legs(
        self, call_id: str, device_id: int, endpoints: Sequence[str], presented: str | None = None
    ) -> LegExtras: ...

    async def on_finished(self, record: dict[str, Any]) -> None: ...


class NoHooks:
    async def before_legs(
        self, call_id: str, device_id: int, endpoints: Sequence[str], presented: str | None = None
    ) -> LegExtras:
        return LegExtras()

    async def on_finished(self, record: dict[str, Any]) -> None:
        return None


class DeviceSource(Protocol):
    """What we need from the store (implemented by `store.store.Store`)."""

    async def get_device(self, ref: str | int) -> DeviceRow | None: ...

    async def next_outbound_epoch(self, device_id: int, current: int, call_id: str | None) -> int | None: ...


class OutboundChannels(Protocol):
    """What we need from ARI (implemented by `asterisk.ari.client.AriClient`)."""

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
        notifier: Notifier,
        hooks: OutboundHooks | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.devices = devices
        self.channels = channels
        self.keyer = keyer
        self.epoch_now = epoch_now
        self.hooks: OutboundHooks = hooks or NoHooks()
        self.notifier = notifier
        self.clock = clock
        self.ring_timeout = float(config.outbound.ring_timeout)
        self._calls: dict[str, _Call] = {}  # call id -> call
        self._by_channel: dict[str, str] = {}  # caller and leg channel ids -> call id
        self._background = BackgroundTasks()  # the calls' supervisors

    @staticmethod
    def handles(call: CallInfo) -> bool:
        kind = call.kind or ""
        return kind in CALL_KINDS or kind == LEG_KIND

    @property
    def active(self) -> int:
        return len(self._calls)

    # -- events ------------------------------------------------------------------------------------------------
    async def stasis_start(self, call: CallInfo) -> None:
        kind = call.kind or ""
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
                await hangup_quietly(self.channels, call.channel_id, "congestion")
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
        ref = (call.arg(1) or "").strip()
        if len(self._calls) >= MAX_CALLS:
            log.error("outbound: %d calls in progress; refusing %s", len(self._calls), call_id)
            await hangup_quietly(self.channels, call_id, "congestion")
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
        self._record_verdict(call, kind, verdict, device_id, None if epoch is None else epoch - (current or 0))

        if verdict is not Verdict.ADMITTED or device is None or epoch is None:
            state, cmds = CallState.rejected(call_id, call_id, device_id, kind, verdict, now)
            c = self._track(state)
            await self._set_vars(call_id, verdict, device_id)
            async with c.lock:
                await self._apply(c, cmds)
            return

        key = self.keyer(device.key_id, epoch)
        out = self.config.outbound
        shown = out.present_number if out.present == "number" else key  # number: the phone verifies by claiming
        plans = plan_legs(kind, device, out.endpoint, shown, call.caller)
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
                    await hangup_quietly(self.channels, leg_id, "normal")  # in case it exists after all
                    await self._apply(c, state.leg_gone(leg_id, None, self.clock()))

    async def _before_legs(self, call_id: str, device_id: int, plans: Sequence[LegPlan]) -> LegExtras:
        try:
            coro = self.hooks.before_legs(call_id, device_id, [p.endpoint for p in plans], plans[0].caller_id)
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
        call_id = (call.arg(1) or "").strip()
        c = self._calls.get(call_id)
        if c is None or call.channel_id not in c.state.legs:
            log.warning("outbound: leg %s answered for an unknown call; hanging up", call.channel_id)
            await hangup_quietly(self.channels, call.channel_id, "normal")
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
                    await hangup_quietly(self.channels, cid, "normal")
        finally:
            await self._finish(c)

    # -- carrying out ------------------------------------------------------------------------------------------
    async def _apply(self, c: _Call, cmds: list[Command]) -> None:
        """Run the commands (the caller holds c.lock), then update the call's flags."""
        for cmd in cmds:
            if isinstance(cmd, Hangup):
                await hangup_quietly(self.channels, cmd.channel_id, cmd.reason)
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
        c.task = self._background.spawn(self._supervise(c), name=f"outbound-{state.call_id}")
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

    def _record_verdict(
        self, call: CallInfo, kind: str, verdict: Verdict, device_id: int | None, drift: int | None
    ) -> None:
        """The audit event (never the key: only the epoch drift), the verdict in /metrics and on AMI, all through the
        notifier. Runs before the legs ring; neither waits for the database nor for AMI."""
        self.notifier.record(
            audit_fields(
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
        )
        self.notifier.verdict(VerdictNote(verdict.value, "outbound", kind, device_id, call.name, call.channel_id))

    async def close(self, grace: float = 3.0) -> None:
        """Stop supervising. Channels stay with Asterisk; a leg that later answers into an app that does not know its
        call is hung up (see `_leg_answered`)."""
        await self._background.drain(grace)
