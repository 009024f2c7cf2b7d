"""Inbound admission decisions that do not need I/O: Stasis arguments, the request, and where the call goes.

The Stasis handler and the FastAGI handler (`Handlers.stasis_start` and `Handlers.agi_verify` in `stasis.py`)
both use these, so both
dialplan styles behave the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from asterisk_securelink.config import InboundConfig
from asterisk_securelink.core.verdicts import Method, Mode, Verdict
from asterisk_securelink.dialplan import DEVICE_VAR, MODE_VAR, RESULT_VAR
from asterisk_securelink.inbound.service import VerifyRequest

_CHANNEL_SUFFIX = re.compile(r"-[0-9a-f]{8}(;[12])?$")


class Action(StrEnum):
    ADMIT = "admit"  # continue into the admitted context
    REGISTER = "register"  # continue into the registration context (limited ability)
    CONTINUE = "continue"  # continue where the dialplan was, with SECURELINK_RESULT set (policy allows it)
    REJECT = "reject"  # hang up with cause 21 (call rejected: SIP 403)


@dataclass(frozen=True)
class Route:
    action: Action
    context: str | None = None  # None: stay in the current context


def route_for(verdict: Verdict, cfg: InboundConfig) -> Route:
    if verdict is Verdict.ADMITTED:
        return Route(Action.ADMIT, cfg.admitted_context)
    if verdict is Verdict.UNREGISTERED:
        return Route(Action.REGISTER, cfg.registration_context)
    if verdict is Verdict.ANONYMOUS and cfg.anonymous == "continue":
        return Route(Action.CONTINUE)
    if cfg.on_failure == "continue" and verdict is not Verdict.ERROR:
        return Route(Action.CONTINUE)
    return Route(Action.REJECT)  # including `error`: a decision that could not be made fails closed


def parse_mode(value: str | None, default: str) -> Mode:
    """The mode argument of `Stasis(securelink,inbound,MODE)` / `AGI(.../verify,MODE)`."""
    text = (value or default).strip().lower()
    try:
        return Mode(text)
    except ValueError:
        raise ValueError(f"unknown mode {text[:16]!r}: use ani, dnis or either") from None


def source_of(channel_name: str | None) -> str | None:
    """The trunk / endpoint a channel came in on: `PJSIP/carrier-0000002a` -> `PJSIP/carrier`."""
    if not channel_name:
        return None
    return _CHANNEL_SUFFIX.sub("", channel_name)[:128]


def request_for(
    mode: Mode, caller: str | None, exten: str | None, call_id: str | None, channel: str | None
) -> VerifyRequest:
    """ANI: the caller number is the key. DNIS: the dialed extension is, and the caller number is a hint.

    `call_id` is the channel's Asterisk uniqueid: the ARI channel id (Asterisk uses the uniqueid as the id of every
    channel it creates) or FastAGI's `agi_uniqueid`. With the node identity (`VerificationService.same_call`) it is
    "the same call" of SLK1.md: never the SIP Call-ID, nor anything else the caller chooses.
    """
    presented = exten if mode is Mode.DNIS else caller
    return VerifyRequest(
        presented=presented,
        mode=mode,
        caller=caller,
        dialed=exten,
        call_id=call_id,
        source=source_of(channel),
        channel=channel,
    )


def channel_vars(verdict: Verdict, device_id: int | None, mode: Mode | Method) -> dict[str, str]:
    return {RESULT_VAR: verdict.value, DEVICE_VAR: "" if device_id is None else str(device_id), MODE_VAR: mode.value}
