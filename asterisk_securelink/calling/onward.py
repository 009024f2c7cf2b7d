"""An admitted call, from its verdict to `[securelink-admitted]`, then followed to its end (CALLING.md, "Where an
admitted call goes", "Call records").

`Onward.go` is what every inbound path (ANI, DNIS, DTMF, intent, and the first call that registers a device) does
with an admitted call instead of continuing it straight into the dialplan:

1. the device's routing identity (`calling.identity`); none: verdict `no_route`, hung up (cause 21);
2. the destination the call brought (DTMF, intent), or the device's home: `disa` runs the app's own dial tone
   (never for an intent: "no dial tone by intent"), `extension:<exten>` goes there, `hangup` ends the call;
3. the guard (`calling.guard`): the destination rules, then a lease in the shared store; refused: verdict `denied`
   or `rate_limited`, hung up (cause 21);
4. the dialplan contract's variables, the CDR fields `securelink_device` / `securelink_method` and
   `TIMEOUT(absolute)` set through ARI, our app subscribed to the channel, and `continue` into the admitted context;
5. when the channel is destroyed: the lease released, the call record written (both directions' records share one
   shape, `store.ends.record_values`), the per-call key's voucher ended, in one write (`store.ends`).

Every failure is fail closed: the call is hung up. Destination digits are not secret, but key digits never reach
here (a DTMF key field ends before the destination starts).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from asterisk_securelink.asterisk.ari.errors import AriError
from asterisk_securelink.asterisk.ari.events import (
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelStateChange,
    Event,
    StasisEnd,
)
from asterisk_securelink.calling.contract import Devices, admitted_handoff, home_of
from asterisk_securelink.calling.dialtone import DialTone
from asterisk_securelink.calling.guard import RouteGuard
from asterisk_securelink.calling.identity import Identity, Routable, RoutingIdentity
from asterisk_securelink.config import Config
from asterisk_securelink.core.numbers import Kind, classify
from asterisk_securelink.core.slk1 import now_ms
from asterisk_securelink.core.tollguard import Home, HomeKind
from asterisk_securelink.core.verdicts import Method, Verdict
from asterisk_securelink.dialplan import CALL_KEY_VAR
from asterisk_securelink.notifier import Notifier, VerdictNote
from asterisk_securelink.stasis import (
    CallInfo,
    ChannelControl,
    hand_off,
    hangup_quietly,
    next_digit,
    stop_playback_quietly,
)
from asterisk_securelink.store.models import utcnow
from asterisk_securelink.store.store import audit_fields
from asterisk_securelink.tasks import BackgroundTasks

log = logging.getLogger(__name__)

WITHHELD = "withheld"  # a call record's caller number when the network withheld it (never shown onward)
DIAL_TONE = "tone:dial"


class OnwardChannels(ChannelControl, Protocol):
    async def answer(self, channel_id: str) -> None: ...

    async def play(self, channel_id: str, media: str, playback_id: str) -> None: ...

    async def stop_playback(self, playback_id: str) -> bool: ...

    async def subscribe_channel(self, channel_id: str) -> None: ...


class Ends(Protocol):
    """A call's end in the shared store (`store.ends.CallEndWriter`): its lease released, its record written, its
    per-call key's vouchers ended, in one write shared with the calls that end at the same moment."""

    async def end(self, call_id: str, record: dict[str, Any] | None, *, release: bool) -> None: ...


@dataclass(frozen=True)
class Admitted:
    """What admission hands on: the device, how it was admitted, what it asked for, and what the caller sent."""

    device_id: int
    method: Method
    destination: str | None = None
    caller: str | None = None  # the caller number as delivered; None when it was the key itself (ANI)
    answered: bool = False  # the app answered it already (DTMF)
    variables: Mapping[str, str] = field(default_factory=dict)  # set with the others (e.g. the per-call key id)
    pending: VerdictNote | None = None  # the admission's verdict, published by the dialplan at the hand-off
    device: Routable | None = None  # its routing fields as admission read them (else read here)


def recorded_caller(caller: str | None, method: Method) -> str | None:
    """A call record's caller number: never the key (ANI), `withheld` when the network withheld it."""
    if method is Method.ANI:
        return None
    kind = classify(caller).kind
    if kind is Kind.ANONYMOUS:
        return WITHHELD
    return (caller or "")[:32] or None


@dataclass(eq=False)
class _Followed:
    call: CallInfo
    admitted: Admitted
    destination: str | None
    started_at: datetime
    answered_at: datetime | None
    leased: bool
    continued: bool = False  # sent on into the dialplan (after which StasisEnd is expected, not a hang-up)
    verdict: Verdict = Verdict.ADMITTED
    digits: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    cause: str | None = None
    pending_published: bool = False


class Onward:
    def __init__(
        self,
        cfg: Config,
        devices: Devices,
        identity: RoutingIdentity,
        guard: RouteGuard,
        channels: OnwardChannels,
        notifier: Notifier,
        ends: Ends,
        *,
        node: str = "",
        clock_ms: Callable[[], int] = now_ms,
        monotonic_ms: Callable[[], int] = lambda: time.monotonic_ns() // 1_000_000,
    ) -> None:
        self.cfg = cfg
        self.devices = devices
        self.identity = identity
        self.guard = guard
        self.channels = channels
        self.notifier = notifier
        self.ends = ends
        self.node = node
        self.clock_ms = clock_ms
        self.monotonic_ms = monotonic_ms
        self.ends_by_ami: Callable[[], bool] = lambda: False  # the dialplan reports ends (`asterisk.ami_ends`)
        self._calls: dict[str, _Followed] = {}  # channel id -> a call in dial tone or followed to its end
        self._tasks = BackgroundTasks()

    @property
    def followed(self) -> int:
        return len(self._calls)

    # -- the way on ----------------------------------------------------------------------------------------------
    async def go(self, call: CallInfo, admitted: Admitted) -> None:
        """Route an admitted call (module doc); hangs it up on any failure."""
        f = _Followed(call, admitted, admitted.destination, utcnow(), utcnow() if admitted.answered else None, False)
        self._calls[call.channel_id] = f
        # in a task of its own: the dial tone waits for this channel's digits, which arrive on the same ARI lane
        self._tasks.spawn(self._run(f), name=f"onward-{call.channel_id}")

    async def _run(self, f: _Followed) -> None:
        call = f.call
        try:
            await self._go(f)
        except Exception as exc:  # noqa: BLE001 - fail closed
            if f.gone.is_set() or (isinstance(exc, AriError) and exc.status == 404):
                # it hung up (or was hung up: an intent's racing spoofer) while being routed: no verdict to add
                log.info("admitted call %s was gone before it was routed", call.channel_id)
                self._publish_pending(f)  # it was admitted; the dialplan will not say so now
                f.cause = f.cause or "hung up"
                await self._finish(f)
                return
            log.error("admitted call %s could not be routed (%s); hanging up", call.channel_id, type(exc).__name__)
            await self._refuse(f, Verdict.ERROR, {"reason": "routing failed"})

    async def _go(self, f: _Followed) -> None:
        a, cid = f.admitted, f.call.channel_id
        device = a.device if a.device is not None else await self.devices.get_device(a.device_id)
        who = await self.identity.resolve(device) if device is not None else None
        if who is None or device is None:
            await self._refuse(f, Verdict.NO_ROUTE, {"reason": "no context or caller ID"})
            return
        home = home_of(device, self.cfg)
        if f.destination is None and home.kind is not HomeKind.EXTENSION:
            if home.kind is HomeKind.HANGUP:
                await self._end_here(f, "home hangup")
                return
            if a.method is Method.INTENT:  # CALLING.md: no dial tone by intent
                await self._refuse(f, Verdict.DENIED, {"reason": "no dial tone by intent"})
                return
            self._publish_pending(f)  # the dial tone takes a while: say it is admitted now
            dialled = await self._dial_tone(f)
            if dialled is None:
                return  # hung up, or refused (too long), or nothing dialled: already ended
            f.destination = dialled
        decision = await self.guard.admit(a.device_id, cid, f.destination, "through", self.clock_ms())
        if not decision.ok:
            await self._refuse(f, decision.verdict or Verdict.ERROR, decision.detail)
            return
        f.leased = True
        await self._continue(f, who, home)

    async def _continue(self, f: _Followed, who: Identity, home: Home) -> None:
        """The hand-off (core/handoff.py): one ARI request when the dialplan reports the call's end over AMI
        (`ends_by_ami`), else our app subscribed to the channel first."""
        a, cid = f.admitted, f.call.channel_id
        extra = {n: v for n, v in a.variables.items() if n != CALL_KEY_VAR}
        if extra:  # nothing sets others today; if something does, they go the long way
            await asyncio.gather(*(self.channels.set_channel_var(cid, n, v) for n, v in extra.items()))
        by_ami = self.ends_by_ami()
        if not by_ami:
            await self.channels.subscribe_channel(cid)  # its hang-up reaches us after it leaves Stasis
        emit = a.pending is not None and not f.pending_published  # else the app published it (dial tone)
        handoff = admitted_handoff(self.cfg, a.device_id, a.method, who, f.destination, home,
                                   a.variables.get(CALL_KEY_VAR, ""), emit_verdict=emit, report_end=by_ami)  # fmt: skip
        f.continued = True
        log.info("admitted %s: device=%s method=%s to %s in %s; its end by %s", cid, a.device_id, a.method.value,
                 f.destination or f"home {home}", who.context, "AMI" if by_ami else "ARI")  # fmt: skip
        await hand_off(self.channels, f.call, handoff)

    def _publish_pending(self, f: _Followed) -> None:
        """The admission's verdict, once, when the call will not reach the hand-off that publishes it."""
        note, published, f.pending_published = f.admitted.pending, f.pending_published, True
        if note is not None and not published:
            self.notifier.publish_only(note)

    async def ended(self, channel_id: str, cause: str, answered_at: datetime | None) -> bool:
        """`SecureLinkCallEnd` from `[securelink-end]` (AMI): a handed-over call ended."""
        f = self._calls.get(channel_id)
        if f is None:
            return False
        f.cause = cause or f.cause
        f.answered_at = f.answered_at or answered_at
        f.gone.set()
        if f.leased:
            await self._finish(f)
        return True

    # -- dial tone -------------------------------------------------------------------------------------------
    async def _dial_tone(self, f: _Followed) -> str | None:
        cid = f.call.channel_id
        if f.answered_at is None:
            await self.channels.answer(cid)
            f.answered_at = utcnow()
        playback = f"slk-{uuid.uuid4().hex}"
        try:
            await self.channels.play(cid, DIAL_TONE, playback)
        except Exception as exc:  # noqa: BLE001 - no tone is not a reason to refuse: the digits still count
            log.warning("admitted %s: no dial tone (%s)", cid, type(exc).__name__)
            playback = ""
        tone = DialTone(self.monotonic_ms())
        while not tone.done:
            wait = max(0.0, (tone.deadline_ms() - self.monotonic_ms()) / 1000)
            digit = await next_digit(f.digits, f.gone, wait)
            if f.gone.is_set():
                await self._finish(f)
                return None
            if digit is None:
                tone.expire(self.monotonic_ms())
                continue
            if playback:
                await stop_playback_quietly(self.channels, playback)
                playback = ""
            tone.digit(digit, self.monotonic_ms())
        if tone.too_long:
            await self._refuse(f, Verdict.DENIED, {"reason": "malformed"})
            return None
        if tone.number is None:
            await self._end_here(f, "nothing dialled")
            return None
        return tone.number

    # -- events ----------------------------------------------------------------------------------------------
    async def on_event(self, event: Event) -> bool:
        f = self._calls.get(event.channel_id or "")
        if f is None:
            return False
        if isinstance(event, ChannelDtmfReceived):
            f.digits.put_nowait(event.digit)
        elif isinstance(event, ChannelStateChange):
            if event.channel.state == "Up" and f.answered_at is None:
                f.answered_at = utcnow()
        elif isinstance(event, ChannelDestroyed):
            f.cause = event.cause_txt or str(event.cause)
            f.gone.set()
            if f.leased:  # followed to its end in the dialplan (no dial tone task is waiting for it)
                await self._finish(f)
        elif isinstance(event, StasisEnd) and not f.continued:
            # it left Stasis before we sent it on: it hung up (in the dial tone, or while being routed). Its
            # ChannelDestroyed may never reach us (the app unsubscribes from a channel leaving Stasis).
            f.cause = f.cause or "hung up"
            f.gone.set()
            if f.leased:
                await self._finish(f)
        return True

    def leased(self) -> set[str]:
        return {c for c, f in self._calls.items() if f.leased}

    async def reconcile(self, live: set[str], among: set[str] | None = None) -> None:
        """Calls whose channel is gone ended while we could not see it (after a reconnect; or an end event lost).
        `among`: only these (the calls leased before `live` was asked for: a call leased meanwhile is not in it)."""
        for cid in [c for c in self.leased() if c not in live and (among is None or c in among)]:
            f = self._calls.get(cid)
            if f is not None:
                await self._finish(f)

    async def close(self, grace: float = 3.0) -> None:
        await self._tasks.drain(grace)

    # -- ends ------------------------------------------------------------------------------------------------
    async def _refuse(self, f: _Followed, verdict: Verdict, detail: dict[str, Any]) -> None:
        """A verdict after admission (`no_route`, `denied`, `rate_limited`, `error`): audited, counted, published,
        and the call hung up with cause 21."""
        f.verdict = verdict
        self._publish_pending(f)
        a, call = f.admitted, f.call
        log.warning("admitted %s of device %s not routed: %s (%s)", call.channel_id, a.device_id, verdict.value,
                    detail.get("reason", ""))  # fmt: skip
        self.notifier.record(audit_fields("route", verdict.value, "asterisk", device_id=a.device_id,
                                          direction="inbound", mode=a.method.value, call_id=call.channel_id,
                                          channel=call.name[:128], detail=detail))  # fmt: skip
        self.notifier.verdict(VerdictNote(verdict.value, "inbound", a.method.value, a.device_id, call.name,
                                          call.channel_id))  # fmt: skip
        await hangup_quietly(self.channels, call.channel_id, "rejected")
        f.cause = f.cause or verdict.value
        await self._finish(f)

    async def _end_here(self, f: _Followed, why: str) -> None:
        self._publish_pending(f)
        log.info("admitted %s: %s; hanging up", f.call.channel_id, why)
        await hangup_quietly(self.channels, f.call.channel_id, "normal")
        f.cause = f.cause or why
        await self._finish(f)

    async def _finish(self, f: _Followed) -> None:
        """Once per call: the lease released, the record written, the vouchers ended (one write, `Ends`)."""
        if self._calls.pop(f.call.channel_id, None) is None:
            return
        try:
            await self.ends.end(f.call.channel_id, self._record(f), release=f.leased)
        except Exception as exc:  # noqa: BLE001 - logged; a lease not released goes stale by itself (store.routes)
            log.error("end of call %s not written (%s)", f.call.channel_id, type(exc).__name__)

    def _record(self, f: _Followed) -> dict[str, Any]:
        a = f.admitted
        return {
            "call_id": f.call.channel_id, "device_id": a.device_id, "direction": "inbound", "kind": a.method.value,
            "method": a.method.value, "verdict": f.verdict.value, "caller": recorded_caller(f.call.caller, a.method),
            "destination": f.destination, "node": self.node or None,
            "legs": [{"channel": f.call.name, "role": "caller"}], "answered_by": None,
            "started_at": f.started_at, "answered_at": f.answered_at, "ended_at": utcnow(), "hangup_cause": f.cause,
        }  # fmt: skip
