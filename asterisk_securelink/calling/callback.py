"""Callback (CALLING.md, "Callback"): the PBX calls the phone back, waits for it to confirm, then connects it.

`CallbackCalls.request` (the device API's `Callbacks` port, `POST /v1/calls/callback`) decides when the request
arrives: the device, its routing identity (none: `no_route`), busy (a live callback lease of the device), the guard
(`denied`, `rate_limited`; it reserves the lease and the day's spend). Then it originates
`Local/<device>@securelink-mobile` into our Stasis app (`appArgs callback,<call_id>`), with `otherChannelId=<call_id>`:
the `;2` half runs `[securelink-mobile]`, whose outbound controller rings the mobile with the keyed caller ID and
keeps the call's voucher under `<call_id>`; the `;1` half enters our app when the phone answers.

Then, in the call's own task (so its DTMF and hang-up events reach `on_event` meanwhile):
1. confirmation within 8 s: the voucher of `<call_id>` released (the phone claimed `{"call_id"}`; polled in the
   shared store, the claim may reach another node) or DTMF `1` after a beep; otherwise verdict `unconfirmed`;
2. `Local/<destination>@<context>` with the device's caller ID, into our app (`callback-dest,<call_id>`), the phone
   hearing `tone:ring` meanwhile; when it answers, one mixing bridge and `TIMEOUT(absolute)` on both sides;
3. when either side hangs up: the other is hung up, the bridge destroyed, the lease released, the call record written.
Fail closed: anything unexpected hangs everything up; the lease is always released.

The record is written under the `;1` half's id, `m-<call_id>`: the outbound controller writes `<call_id>`'s own record
(the mobile leg) and call ids are unique in `call_records`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from asterisk_securelink.asterisk.ari.events import ChannelDestroyed, ChannelDtmfReceived, Event, StasisEnd
from asterisk_securelink.calling.callback_ports import (
    DEFAULT_TIMING,
    CallbackChannels,
    Confirmations,
    Guard,
    Leases,
    Records,
    Resolve,
    Timing,
)
from asterisk_securelink.calling.contract import Devices
from asterisk_securelink.calling.guard import Kind
from asterisk_securelink.core.slk1 import Direction, now_ms
from asterisk_securelink.core.verdicts import Method, Verdict
from asterisk_securelink.deviceapi.ports import CallbackOutcome, CallbackResult
from asterisk_securelink.dialplan import CDR_DEVICE, CDR_METHOD, TIMEOUT_VAR
from asterisk_securelink.lifecycle import SPENDABLE
from asterisk_securelink.notifier import Notifier, VerdictNote
from asterisk_securelink.stasis import CallInfo, hangup_quietly, next_digit
from asterisk_securelink.store.models import utcnow
from asterisk_securelink.store.store import audit_fields
from asterisk_securelink.tasks import BackgroundTasks

log = logging.getLogger(__name__)

KIND: Final = "callback"  # Stasis args of the phone's side: callback,<call_id>
DEST_KIND: Final = "callback-dest"  # and of the destination's: callback-dest,<call_id>
LEASE_KIND: Final[Kind] = "callback"
MOBILE_CONTEXT: Final = "securelink-mobile"
CONFIRM_DIGIT: Final = "1"
PROMPT: Final = "sound:beep"  # before the 8 s in which the person may press 1
RINGBACK: Final = "tone:ring"  # what the phone hears while the destination rings
MAX_CALLBACKS: Final = 1000  # callbacks tracked at once by this node; past it: 503
_HANGUP_REASONS: Final = {"no_answer": "no_answer"}  # our cause -> the ARI hangup reason (else normal)


# -- one callback -------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Callback:
    call_id: str
    device_id: int
    destination: str
    context: str
    callerid: str
    started_at: datetime
    mobile: str = ""  # the ;1 half of Local/<device>@securelink-mobile: in our app once the phone answered
    dest: str = ""  # the ;1 half of Local/<destination>@<context>
    name: str = ""  # the phone side's channel name (for AMI)
    digits: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    mobile_up: asyncio.Event = field(default_factory=asyncio.Event)
    dest_up: asyncio.Event = field(default_factory=asyncio.Event)
    over: asyncio.Event = field(default_factory=asyncio.Event)  # one of our channels is gone
    gone: set[str] = field(default_factory=set)
    dialed: bool = False
    bridge_id: str | None = None
    answered_at: datetime | None = None
    verdict: Verdict | None = None
    cause: str = ""

    def __post_init__(self) -> None:
        # never `<call_id>` + a suffix: Asterisk 22.10 refuses an originate whose otherChannelId is a prefix of
        # its channelId ("Channel with given unique ID already exists")
        self.mobile = self.mobile or f"m-{self.call_id}"
        self.dest = self.dest or f"d-{self.call_id}"

    def record(self, ended_at: datetime) -> dict[str, Any]:
        def leg(endpoint: str, channel: str, role: str, up: asyncio.Event, tried: bool) -> dict[str, str]:
            outcome = "answered" if up.is_set() else "unanswered" if tried else "not_dialed"
            return {"endpoint": endpoint, "channel": channel, "role": role, "outcome": outcome}

        dest_endpoint = f"Local/{self.destination}@{self.context}"
        return {
            "call_id": self.mobile, "device_id": self.device_id, "direction": Direction.OUTBOUND.value,
            "kind": KIND, "method": Method.CALLBACK.value, "caller": None, "destination": self.destination,
            "verdict": (self.verdict or Verdict.ERROR).value,
            "legs": [leg(f"Local/{self.device_id}@{MOBILE_CONTEXT}", self.mobile, "mobile", self.mobile_up, True),
                     leg(dest_endpoint, self.dest, "destination", self.dest_up, self.dialed)],
            "answered_by": dest_endpoint if self.answered_at else None, "started_at": self.started_at,
            "answered_at": self.answered_at, "ended_at": ended_at, "hangup_cause": self.cause or "normal",
        }  # fmt: skip


class CallbackCalls:
    """The `Callbacks` port of the device API, and the Stasis handler of `callback,*` and `callback-dest,*`.
    `clock_ms`: unix ms (the guard's leases); `clock`: the records' times."""

    def __init__(
        self,
        app: str,
        devices: Devices,
        channels: CallbackChannels,
        resolve: Resolve,
        guard: Guard,
        leases: Leases,
        confirmations: Confirmations,
        notifier: Notifier,
        *,
        records: Records | None = None,
        max_call_seconds: int = 3600,
        timing: Timing = DEFAULT_TIMING,
        clock_ms: Callable[[], int] = now_ms,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.app = app
        self.devices = devices
        self.channels = channels
        self.resolve = resolve
        self.guard = guard
        self.leases = leases
        self.confirmations = confirmations
        self.notifier = notifier
        self.records = records
        self.max_call_seconds = max_call_seconds
        self.timing = timing
        self.clock_ms = clock_ms
        self.clock = clock
        self._calls: dict[str, _Callback] = {}  # call id -> callback
        self._by_channel: dict[str, str] = {}  # our ;1 channel ids -> call id
        self._tasks = BackgroundTasks()

    @staticmethod
    def handles(call: CallInfo) -> bool:
        return call.kind in (KIND, DEST_KIND)

    @property
    def active(self) -> int:
        return len(self._calls)

    # -- the device API's request ---------------------------------------------------------------------------------
    async def request(self, device_id: int, destination: str, now_ms: int) -> CallbackResult:
        if len(self._calls) >= MAX_CALLBACKS:
            return CallbackResult(CallbackOutcome.UNAVAILABLE, reason="too_many_callbacks")
        device = await self.devices.get_device(device_id)
        if device is None or device.status not in SPENDABLE:
            return CallbackResult(CallbackOutcome.UNAVAILABLE, reason="no_device")
        call_id = f"slk-cb-{uuid.uuid4().hex[:16]}"
        identity = await self.resolve(device)
        if identity is None:
            return self._refused(device_id, call_id, Verdict.NO_ROUTE, CallbackOutcome.NO_ROUTE, "no_route")
        if await self.leases.live(device_id, LEASE_KIND, now_ms) > 0:
            return CallbackResult(CallbackOutcome.BUSY, reason="busy")
        decision = await self.guard.admit(device_id, call_id, destination, LEASE_KIND, now_ms)
        reason = str(decision.detail.get("reason", "")) or (decision.verdict or "")
        if decision.verdict is Verdict.RATE_LIMITED:
            return self._refused(device_id, call_id, Verdict.RATE_LIMITED, CallbackOutcome.RATE_LIMITED, reason,
                                 max(1, decision.retry_after_s))  # fmt: skip
        if decision.verdict is Verdict.ERROR:  # the counts could not be read: refused, as unavailable
            return CallbackResult(CallbackOutcome.UNAVAILABLE, call_id, reason=reason)
        if decision.verdict is not None:
            return self._refused(device_id, call_id, Verdict.DENIED, CallbackOutcome.DENIED, reason)
        cb = _Callback(call_id, device_id, destination, identity.context, identity.callerid, self.clock())
        self._track(cb)
        try:
            await self.channels.originate(
                f"Local/{device_id}@{MOBILE_CONTEXT}", app=self.app, app_args=f"{KIND},{call_id}",
                timeout=self.timing.mobile_ring_s, channel_id=cb.mobile, other_channel_id=call_id,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - ARI refused or is down: no call, lease back
            log.warning("callback %s of device %s: originate failed (%s)", call_id, device_id, type(exc).__name__)
            self._forget(cb)
            await hangup_quietly(self.channels, cb.mobile, "normal")  # in case it exists after all
            await self._release(cb)
            return CallbackResult(CallbackOutcome.UNAVAILABLE, call_id, reason="originate_failed")
        log.info("callback %s: calling device %s back for %s", call_id, device_id, destination)
        self._tasks.spawn(self._run(cb), name=f"callback-{call_id}")
        return CallbackResult(CallbackOutcome.PLACED, call_id)

    def _refused(self, device_id: int, call_id: str, verdict: Verdict, outcome: CallbackOutcome, reason: str,
                 retry_after_s: int = 0) -> CallbackResult:  # fmt: skip
        self._tell(verdict, device_id, "", call_id)
        return CallbackResult(outcome, call_id, retry_after_s, reason)

    # -- events ---------------------------------------------------------------------------------------------------
    async def stasis_start(self, call: CallInfo) -> None:
        """`callback,<id>`: the phone answered; `callback-dest,<id>`: the destination answered."""
        cb = self._calls.get((call.arg(1) or "").strip())
        up = None if cb is None else cb.mobile_up if call.kind == KIND else cb.dest_up
        expected = None if cb is None else cb.mobile if call.kind == KIND else cb.dest
        if cb is None or up is None or call.channel_id != expected or cb.over.is_set():
            log.warning("callback: channel %s entered for an unknown or ended callback; hanging up", call.channel_id)
            await hangup_quietly(self.channels, call.channel_id, "normal")
            return
        if call.kind == KIND:
            cb.name = call.name
        up.set()

    async def on_event(self, event: Event) -> bool:
        """An event of one of our channels (its digits, its end); False when it is not ours."""
        cb = self._calls.get(self._by_channel.get(event.channel_id or "", ""))
        if cb is None:
            return False
        if isinstance(event, ChannelDtmfReceived):
            cb.digits.put_nowait(event.digit)
        elif isinstance(event, StasisEnd | ChannelDestroyed):
            cb.gone.add(event.channel.id)
            cb.over.set()
        return True

    async def reconcile(self, live: set[str]) -> None:
        """After an ARI reconnect: a channel of ours that vanished meanwhile is gone."""
        for cb in list(self._calls.values()):
            for cid in (cb.mobile, cb.dest):
                if cid not in live and (cid == cb.mobile or cb.dialed):
                    cb.gone.add(cid)
                    cb.over.set()

    async def close(self, grace: float = 3.0) -> None:
        await self._tasks.drain(grace)

    # -- the call -------------------------------------------------------------------------------------------------
    async def _run(self, cb: _Callback) -> None:
        try:
            await self._connect(cb)
        except Exception as exc:  # noqa: BLE001 - fail closed
            log.error("callback %s failed (%s); hanging up", cb.call_id, type(exc).__name__)
            cb.cause = cb.cause or "error"
        finally:
            await self._finish(cb)

    async def _connect(self, cb: _Callback) -> None:
        t = self.timing
        if not await self._until(cb, cb.mobile_up, t.mobile_ring_s + t.backstop_s):
            cb.cause = "hung_up" if cb.mobile_up.is_set() else "no_answer"
            return
        if not await self._confirmed(cb):
            if not cb.over.is_set():
                cb.verdict, cb.cause = Verdict.UNCONFIRMED, "unconfirmed"
                self._tell(Verdict.UNCONFIRMED, cb.device_id, cb.name, cb.call_id)
            else:
                cb.cause = "hung_up"
            return
        cb.verdict = Verdict.ADMITTED
        self._tell(Verdict.ADMITTED, cb.device_id, cb.name, cb.call_id)
        ring = await self._play(cb.mobile, RINGBACK)
        cb.dialed = True
        await self.channels.originate(
            f"Local/{cb.destination}@{cb.context}", app=self.app, app_args=f"{DEST_KIND},{cb.call_id}",
            caller_id=cb.callerid, timeout=t.dest_ring_s, channel_id=cb.dest,
        )  # fmt: skip
        answered = await self._until(cb, cb.dest_up, t.dest_ring_s + t.backstop_s)
        if ring is not None:
            await _quietly(self.channels.stop_playback(ring))
        if not answered:
            cb.cause = "hung_up" if cb.mobile in cb.gone else "destination_unanswered"
            return
        cb.answered_at = self.clock()
        for cid in (cb.mobile, cb.dest):
            await self.channels.set_channel_var(cid, TIMEOUT_VAR, str(self.max_call_seconds))
            await _quietly(self.channels.set_channel_var(cid, CDR_DEVICE, str(cb.device_id)))
            await _quietly(self.channels.set_channel_var(cid, CDR_METHOD, Method.CALLBACK.value))
        cb.bridge_id = await self.channels.create_bridge("mixing", name=f"securelink-{cb.call_id}"[:64])
        await self.channels.add_channel_to_bridge(cb.bridge_id, [cb.mobile, cb.dest])
        log.info("callback %s: connected to %s", cb.call_id, cb.destination)
        await cb.over.wait()  # the call lasts as long as it lasts (TIMEOUT(absolute) bounds it)
        cb.cause = "normal"

    async def _confirmed(self, cb: _Callback) -> bool:
        """The voucher released (the phone claimed it, on any node) or `1` pressed, within `confirm_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timing.confirm_s
        prompt = await self._play(cb.mobile, PROMPT)
        try:
            while not cb.over.is_set():
                if await self.confirmations.released(cb.call_id):
                    return True
                left = deadline - loop.time()
                if left <= 0:
                    return False
                digit = await next_digit(cb.digits, cb.over, min(self.timing.poll_s, left))
                if digit == CONFIRM_DIGIT:
                    return True
            return False
        finally:
            if prompt is not None:
                await _quietly(self.channels.stop_playback(prompt))

    async def _until(self, cb: _Callback, up: asyncio.Event, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait for `up`, or one of our channels gone, or the timeout; True only for `up` with nothing gone."""
        waits = [asyncio.ensure_future(up.wait()), asyncio.ensure_future(cb.over.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return up.is_set() and not cb.over.is_set()

    async def _play(self, channel_id: str, media: str) -> str | None:
        playback_id = f"slk-{uuid.uuid4().hex}"
        try:
            await self.channels.play(channel_id, media, playback_id)
        except Exception as exc:  # noqa: BLE001 - no prompt or ringback is not a reason to fail the call
            log.warning("callback: cannot play %s on %s (%s)", media, channel_id, type(exc).__name__)
            return None
        return playback_id

    async def _finish(self, cb: _Callback) -> None:
        """Hang up what is left, destroy the bridge, release the lease, write the record. Never raises."""
        reason = _HANGUP_REASONS.get(cb.cause, "normal")
        for cid in (cb.mobile, cb.dest):
            if cid not in cb.gone and (cid == cb.mobile or cb.dialed):
                await hangup_quietly(self.channels, cid, reason)
        if cb.bridge_id is not None:
            await _quietly(self.channels.destroy_bridge(cb.bridge_id))
        self._forget(cb)
        await self._release(cb)
        log.info("callback %s ended: %s", cb.call_id, cb.cause)
        if self.records is not None:
            await _quietly(self.records.record(cb.record(self.clock())))

    async def _release(self, cb: _Callback) -> None:
        try:
            await self.guard.release(cb.call_id)
        except Exception as exc:  # noqa: BLE001 - a stale lease stops counting after 90 s
            log.error("callback %s: lease not released (%s)", cb.call_id, type(exc).__name__)

    # -- helpers --------------------------------------------------------------------------------------------------
    def _track(self, cb: _Callback) -> None:
        self._calls[cb.call_id] = cb
        self._by_channel[cb.mobile] = self._by_channel[cb.dest] = cb.call_id

    def _forget(self, cb: _Callback) -> None:
        self._calls.pop(cb.call_id, None)
        for cid in (cb.mobile, cb.dest):
            self._by_channel.pop(cid, None)

    def _tell(self, verdict: Verdict, device_id: int, channel: str, call_id: str) -> None:
        """The audit row, the verdict in /metrics and on AMI (method callback)."""
        self.notifier.record(audit_fields(KIND, verdict.value, "asterisk", device_id=device_id, call_id=call_id,
                                          direction=Direction.OUTBOUND.value, mode=Method.CALLBACK.value,
                                          channel=channel[:128] or None))  # fmt: skip
        self.notifier.verdict(VerdictNote(verdict.value, "outbound", Method.CALLBACK.value, device_id, channel,
                                          call_id))  # fmt: skip


async def _quietly(coro: Awaitable[Any]) -> None:
    """An ARI or store call whose failure changes nothing for the call (logged)."""
    try:
        await coro
    except Exception as exc:  # noqa: BLE001
        log.warning("callback: %s", type(exc).__name__)
