"""The access number: `Stasis(securelink,inbound,access)` (CALLING.md, "The access number", "DTMF", "Intent").

A call to an access number is admitted at once when it matches a live intent of the device whose registered number
called (before answer, method `intent`); any other call is answered and asked for its key by DTMF (method `dtmf`).

The decisions live elsewhere: the digits' rules in the pure `inbound.dtmf.DtmfCollector`, the key check and spend in
`VerificationService.verify_dtmf`, the intent's single use in the shared store (`Intents`). This handler only reads
the channel, answers, plays, feeds the collector with `ChannelDtmfReceived` and the clock, applies the verdict, and
fails closed: anything unexpected hangs the call up with cause 21.

A DTMF collection runs in its own task: `stasis_start` returns at once, so the channel's later events (its digits,
its playbacks, its hang-up) reach `on_event` on the same ARI lane. Key digits are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from asterisk_securelink.asterisk.ari.events import (
    ChannelDestroyed,
    ChannelDtmfReceived,
    Event,
    PlaybackFinished,
    StasisEnd,
)
from asterisk_securelink.calling.onward import Admitted, Onward
from asterisk_securelink.callkeys.service import CallKeys
from asterisk_securelink.config import Config
from asterisk_securelink.core.ascii import ascii_lower
from asterisk_securelink.core.compare import same_registered_number
from asterisk_securelink.core.numbers import Kind, classify, normalize
from asterisk_securelink.core.slk1 import now_ms
from asterisk_securelink.core.verdicts import Method, Mode, Verdict
from asterisk_securelink.dialplan import CALL_KEY_VAR, DESTINATION_VAR, METHOD_VAR
from asterisk_securelink.inbound.dtmf import DtmfCollector, DtmfOutcome, Finished, KeyReady, Timing
from asterisk_securelink.inbound.routing import Action, channel_vars, route_for
from asterisk_securelink.inbound.service import Outcome, VerificationService, VerifyRequest
from asterisk_securelink.notifier import Notifier, VerdictNote
from asterisk_securelink.stasis import CallInfo, ChannelControl, hangup_quietly, next_digit, stop_playback_quietly
from asterisk_securelink.store.intents import AdmitResult, Conflict, Intent
from asterisk_securelink.store.store import audit_fields
from asterisk_securelink.tasks import BackgroundTasks

log = logging.getLogger(__name__)

ACCESS_ARG = "access"
FAILURE_SOUND = "auth-incorrect"  # every failure after the key sounds alike (CALLING.md)
FAILURE_SOUND_MAX = 6.0  # seconds the failure sound may play before the call is hung up anyway
DEFAULT_TIMING = Timing()
DTMF_SOURCE = "dtmf"  # the guess budget's source of key-alone DTMF (withheld caller numbers)


class AccessChannels(ChannelControl, Protocol):
    """What the access number needs from ARI besides `ChannelControl` (implemented by `AriClient`)."""

    async def answer(self, channel_id: str) -> None: ...

    async def play(self, channel_id: str, media: str, playback_id: str) -> None: ...

    async def stop_playback(self, playback_id: str) -> bool: ...

    async def get_channel_var(self, channel_id: str, name: str) -> str: ...


class Intents(Protocol):
    """The intents' single use in the shared store (`store.intents.IntentStore`)."""

    async def admit(self, device_ids: Sequence[int], access_number: str, channel: str, now_ms: int) -> AdmitResult: ...

    async def clear_noise(self, device_id: int, channel: str) -> int: ...


@dataclass(eq=False)
class _Session:
    call: CallInfo
    digits: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    playing: dict[str, asyncio.Event] = field(default_factory=dict)  # playback id -> finished
    gone: asyncio.Event = field(default_factory=asyncio.Event)


class AccessHandler:
    """Calls to `[calling] access_numbers`. `clock_ms`: unix ms (the key's windows); `monotonic_ms`: the timers."""

    def __init__(
        self,
        config: Config,
        service: VerificationService,
        channels: AccessChannels,
        notifier: Notifier,
        *,
        intents: Intents | None = None,
        callkeys: CallKeys | None = None,
        registrable: Callable[[str, Admitted], None] | None = None,
        onward: Onward | None = None,
        timing: Timing = DEFAULT_TIMING,
        clock_ms: Callable[[], int] = now_ms,
        monotonic_ms: Callable[[], int] = lambda: time.monotonic_ns() // 1_000_000,
    ) -> None:
        self.config = config
        self.calling = config.calling
        self.service = service
        self.channels = channels
        self.notifier = notifier
        self.intents = intents
        self.callkeys = callkeys
        self.registrable = registrable  # inbound handlers: this channel may register its (unregistered) device
        self.onward = onward  # where an admitted call goes (None: straight into the admitted context)
        self.timing = timing  # the DTMF timers (CALLING.md: 10 s / 4 s / 30 s)
        self.clock_ms = clock_ms
        self.monotonic_ms = monotonic_ms
        self._sessions: dict[str, _Session] = {}  # channel id -> its DTMF collection
        self._callers: set[str] = set()  # caller numbers with a collection running (one at a time each)
        self._tasks = BackgroundTasks()

    @staticmethod
    def handles(call: CallInfo) -> bool:
        return call.kind == "inbound" and ascii_lower((call.arg(1) or "").strip()) == ACCESS_ARG

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    # -- events ------------------------------------------------------------------------------------------------
    async def stasis_start(self, call: CallInfo) -> None:
        """Before answer: anonymous callers, an intent, the session limits; then the DTMF collection, in the
        background."""
        try:
            if await self._before_answer(call):
                return
        except Exception as exc:  # noqa: BLE001 - fail closed on anything unexpected
            log.error("access call %s failed before answer (%s); rejecting", call.channel_id, type(exc).__name__)
            await hangup_quietly(self.channels, call.channel_id, "rejected")

    async def on_event(self, event: Event) -> bool:
        """An event of a channel in a DTMF collection; False when it is not one of ours."""
        session = self._sessions.get(event.channel_id or "")
        if session is None:
            return False
        if isinstance(event, ChannelDtmfReceived):
            session.digits.put_nowait(event.digit)
        elif isinstance(event, PlaybackFinished):
            done = session.playing.get(event.playback_id)
            if done is not None:
                done.set()
        elif isinstance(event, (StasisEnd, ChannelDestroyed)):
            session.gone.set()
        return True

    async def close(self, grace: float = 3.0) -> None:
        await self._tasks.drain(grace)

    # -- before answer -----------------------------------------------------------------------------------------
    async def _before_answer(self, call: CallInfo) -> bool:
        """True when the call was decided here (admitted by intent, or refused); False: it goes to DTMF."""
        req = self._request(call, Method.DTMF)
        caller = classify(call.caller)
        if caller.kind in (Kind.ANONYMOUS, Kind.MALFORMED) and not self.calling.dtmf_key_alone:
            verdict = Verdict.ANONYMOUS if caller.kind is Kind.ANONYMOUS else Verdict.MALFORMED
            await self._refuse(call, self.service.refused(req, verdict, Method.DTMF), answered=False)
            return True
        access = self.access_number(call.exten)
        if access is None:
            log.warning("access call %s: the dialed number is not in calling.access_numbers", call.channel_id)
            outcome = self.service.refused(req, Verdict.ERROR, Method.DTMF, reason="not an access number")
            await self._refuse(call, outcome, answered=False)
            return True
        if self.intents is not None and self.calling.intents_on and caller.kind is Kind.DIGITS:
            named = await self.service.named_devices(call.caller)
            if named and not await self._attested(call):
                self.notifier.record(audit_fields("intent.attestation", "refused", "asterisk", channel=call.name[:128],
                                                  call_id=call.channel_id, detail={"need": "A"}))  # fmt: skip
                named = ()  # the intent is not spent: the call goes to DTMF
            if named:
                found = await self.intents.admit(named, access, call.channel_id, self.clock_ms())
                if found.intent is not None:
                    await self._admit_by_intent(call, found.intent)
                    return True
                for conflict in found.conflicts:  # CALLING.md, "cancel on conflict": this call gets `replayed`
                    intent_req = self._request(call, Method.INTENT)
                    refused = self.service.refused(intent_req, Verdict.REPLAYED, Method.INTENT,
                                                   intent=conflict.intent_id)  # fmt: skip
                    self._tell(call, refused)
                    if conflict.raced:  # spent by another call from this number: a spoofer raced the phone
                        await self._raced(call, conflict)
        key = normalize(call.caller) or ""  # "": a withheld number (dtmf_key_alone), bounded by the total only
        if len(self._sessions) >= self.calling.max_dtmf_sessions or (key and key in self._callers):
            outcome = self.service.refused(req, Verdict.ERROR, Method.DTMF, reason="dtmf sessions")
            self._tell(call, outcome)
            await self.channels.hangup(call.channel_id, "congestion")  # cause 34
            return True
        session = _Session(call)
        self._sessions[call.channel_id] = session
        if key:
            self._callers.add(key)
        self._tasks.spawn(self._collect(session, key), name=f"dtmf-{call.channel_id}")
        return False

    async def _attested(self, call: CallInfo) -> bool:
        """`[calling] intent_attestation = A`: Asterisk verified the call's identity with STIR/SHAKEN and the carrier
        attested it `A` (`STIR_SHAKEN(count)` >= 1, entry 0 `verify_result` success, `attestation` A). Anything else,
        an error reading it included, is not attested (fail closed: DTMF)."""
        need = self.calling.intent_attestation
        if not need:
            return True
        cid = call.channel_id
        try:
            count = int(await self.channels.get_channel_var(cid, "STIR_SHAKEN(count)") or "0")
            if count < 1:
                return False
            verified = await self.channels.get_channel_var(cid, "STIR_SHAKEN(0,verify_result)")
            attestation = await self.channels.get_channel_var(cid, "STIR_SHAKEN(0,attestation)")
        except Exception as exc:  # noqa: BLE001 - cannot tell: not attested
            log.warning("access call %s: STIR/SHAKEN not readable (%s)", cid, type(exc).__name__)
            return False
        return ascii_lower(verified.strip()) == "success" and attestation.strip() == need

    async def _admit_by_intent(self, call: CallInfo, intent: Intent) -> None:
        req = self._request(call, Method.INTENT)
        outcome = await self.service.admitted_by_intent(req, intent.device_id, intent.intent_id)
        self._tell(call, outcome)
        await self._route(call, outcome, intent.destination)

    async def _raced(self, call: CallInfo, conflict: Conflict) -> None:
        """CALLING.md, "cancel on conflict": the call the intent admitted is hung up (cause 21), and both channels
        are named on AMI (`SecureLinkIntentRaced`) and in the audit. This call goes on to DTMF."""
        spent = conflict.spent_channel or ""
        log.warning("intent %s of device %s raced: call %s admitted by it is hung up; call %s goes to DTMF",
                    conflict.intent_id, conflict.device_id, spent, call.channel_id)  # fmt: skip
        if spent:
            await hangup_quietly(self.channels, spent, "rejected")
        self.notifier.intent_raced(conflict.device_id, conflict.intent_id, spent, call.channel_id)

    # -- DTMF --------------------------------------------------------------------------------------------------
    async def _collect(self, session: _Session, caller_key: str) -> None:
        call = session.call
        try:
            await self._dtmf(session)
        except Exception as exc:  # noqa: BLE001 - fail closed on anything unexpected
            log.error("access call %s: DTMF failed (%s); rejecting", call.channel_id, type(exc).__name__)
            await hangup_quietly(self.channels, call.channel_id, "rejected")
        finally:
            self._sessions.pop(call.channel_id, None)
            self._callers.discard(caller_key)

    async def _dtmf(self, session: _Session) -> None:
        call, cid = session.call, session.call.channel_id
        await self.channels.answer(cid)
        answered_at = self.clock_ms()  # the key's windows are judged around the answer
        collector = DtmfCollector(self.service.keys.index.fmt.significant_length, self.monotonic_ms(), self.timing)
        prompt = await self._play(session, self.calling.dtmf_prompt)
        outcome: Outcome | None = None
        while not collector.finished:
            deadline = collector.deadline_ms()
            wait = max(0.0, ((deadline or 0) - self.monotonic_ms()) / 1000)
            digit = await next_digit(session.digits, session.gone, wait)
            if session.gone.is_set():
                log.info("access call %s hung up during DTMF", cid)
                if outcome is None:
                    self._tell(call, self.service.refused(self._request(call, Method.DTMF), Verdict.NO_KEY,
                                                          Method.DTMF, reason="hung up"))  # fmt: skip
                return
            if digit is None:
                steps = collector.expire(self.monotonic_ms())
            else:
                if prompt is not None:
                    await stop_playback_quietly(self.channels, prompt)
                    prompt = None
                steps = collector.digit(digit, self.monotonic_ms())
            for step in steps:
                if isinstance(step, KeyReady):
                    req = self._request(call, Method.DTMF, presented=step.key, at_ms=answered_at)
                    outcome = await self.service.verify_dtmf(req)
                    self._tell(call, outcome)
                    if outcome.verdict not in (Verdict.ADMITTED, Verdict.UNREGISTERED):
                        await self._refuse(call, outcome, answered=True, session=session)
                        return
                elif isinstance(step, Finished):
                    result = step.result
                    if outcome is None or result.outcome is not DtmfOutcome.OK:
                        verdict = result.verdict or Verdict.NO_KEY
                        refused = self.service.refused(
                            self._request(call, Method.DTMF), verdict, Method.DTMF, reason=result.reason.value
                        )
                        self._tell(call, refused)
                        await self._refuse(call, refused, answered=True, session=session)
                        return
                    if self.intents is not None and outcome.device_id is not None:
                        await self.intents.clear_noise(outcome.device_id, cid)  # this call was no spoofer
                    await self._route(call, outcome, result.destination, delivered=req.presented, answered=True)
                    return

    async def _play(self, session: _Session, sound: str) -> str | None:
        playback_id = f"slk-{uuid.uuid4().hex}"
        session.playing[playback_id] = asyncio.Event()
        try:
            await self.channels.play(session.call.channel_id, f"sound:{sound}", playback_id)
        except Exception as exc:  # noqa: BLE001 - no prompt is not a reason to refuse the caller
            log.warning("access call %s: cannot play %s (%s)", session.call.channel_id, sound, type(exc).__name__)
            return None
        return playback_id

    # -- outcomes ----------------------------------------------------------------------------------------------
    async def _route(
        self,
        call: CallInfo,
        outcome: Outcome,
        destination: str | None,
        delivered: str | None = None,
        answered: bool = False,
    ) -> None:
        route = route_for(outcome.verdict, self.config.inbound)
        if route.action is Action.REJECT:
            await self.channels.hangup(call.channel_id, "rejected")
            return
        method = outcome.mode
        key_var = await self._call_key(call, outcome, delivered)
        admitted = None
        if outcome.device_id is not None:
            admitted = Admitted(outcome.device_id, Method(method.value), destination, call.caller, answered, key_var,
                                device=outcome.device)  # fmt: skip
        if route.action is Action.ADMIT and self.onward is not None and admitted is not None:
            log.info("access %s: admitted device=%s method=%s", call.channel_id, outcome.device_id, method)
            await self.onward.go(call, admitted)
            return
        variables = {
            **channel_vars(outcome.verdict, outcome.device_id, method),
            METHOD_VAR: method.value,
            DESTINATION_VAR: destination or "",
            **key_var,
        }
        await asyncio.gather(*(self.channels.set_channel_var(call.channel_id, n, v) for n, v in variables.items()))
        if route.action is Action.REGISTER and admitted is not None and self.registrable is not None:
            self.registrable(call.channel_id, admitted)
        log.info("access %s: %s device=%s method=%s", call.channel_id, outcome.verdict, outcome.device_id, method)
        await self.channels.continue_in_dialplan(call.channel_id, route.context, call.exten, 1)

    async def _call_key(self, call: CallInfo, outcome: Outcome, delivered: str | None) -> dict[str, str]:
        """A DTMF-admitted call's per-call key (device API on), claimed with the key it sent; intents get none."""
        if self.callkeys is None or delivered is None or outcome.device_id is None:
            return {}
        try:
            key_id = await self.callkeys.inbound(call.channel_id, outcome.device_id, delivered)
        except Exception as exc:  # noqa: BLE001 - admitted all the same, without a per-call key
            log.error("access call %s: no per-call key (%s)", call.channel_id, type(exc).__name__)
            return {}
        return {} if key_id is None else {CALL_KEY_VAR: key_id}

    async def _refuse(
        self, call: CallInfo, outcome: Outcome, *, answered: bool, session: _Session | None = None
    ) -> None:
        """Before answer: cause 21 at once. After: `auth-incorrect`, whatever failed, then cause 21."""
        if not answered:
            self._tell(call, outcome)
        if answered and session is not None:
            playback = await self._play(session, FAILURE_SOUND)
            if playback is not None:
                waits = [asyncio.ensure_future(session.playing[playback].wait()),
                         asyncio.ensure_future(session.gone.wait())]  # fmt: skip
                try:
                    await asyncio.wait(waits, timeout=FAILURE_SOUND_MAX, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
        await hangup_quietly(self.channels, call.channel_id, "rejected")

    def _tell(self, call: CallInfo, outcome: Outcome) -> None:
        note = VerdictNote(outcome.verdict.value, "inbound", outcome.mode.value, outcome.device_id, call.name,
                           call.channel_id)  # fmt: skip
        self.notifier.verdict(note)

    # -- helpers -----------------------------------------------------------------------------------------------
    def access_number(self, exten: str | None) -> str | None:
        """The configured access number the dialed number is (compared like a registered number)."""
        digits = normalize(exten)
        if digits is None:
            return None
        trunks = self.config.keys.trunk_prefixes
        for number in self.calling.access_numbers:
            if same_registered_number(digits, number, trunks):
                return number
        return None

    def _request(
        self, call: CallInfo, method: Method, *, presented: str | None = None, at_ms: int | None = None
    ) -> VerifyRequest:
        source = DTMF_SOURCE if method is Method.DTMF and classify(call.caller).kind is not Kind.DIGITS else None
        return VerifyRequest(presented=presented, mode=Mode.DNIS, caller=call.caller, dialed=call.exten,
                             call_id=call.channel_id, source=source, channel=call.name, at_ms=at_ms)  # fmt: skip
