"""The pure state of one outbound keyed call: no I/O, no asyncio, unit-tested without Asterisk.

`CallState` takes every decision (the fork winner, which cause the caller gets, which legs to cancel): each event
method updates the state and returns the `Command`s to carry out. The async controller (`outbound.controller.Outbound`)
feeds it events and carries out those commands. `LegExtras` is the data the per-call key hook hands the controller
before the legs ring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from asterisk_securelink.core.slk1 import Direction
from asterisk_securelink.core.verdicts import Verdict
from asterisk_securelink.store.store import DeviceRow

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
        """The call record handed to `on_finished`: the call_records columns (`legs` still a list), plus `kind`."""
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


@dataclass(frozen=True)
class LegExtras:
    """What the `before_legs` hook adds to a keyed call before its legs ring: the per-call key id (set on every
    channel as SECURELINK_CALL_KEY_ID) and extra channel variables per leg endpoint (e.g. a PJSIP header on a TLS
    leg)."""

    call_key_id: str | None = None
    variables: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def __repr__(self) -> str:  # the variables may carry the per-call key
        return f"LegExtras(call_key_id={self.call_key_id!r}, legs={sorted(self.variables)!r})"
