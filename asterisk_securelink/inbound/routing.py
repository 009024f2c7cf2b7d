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
from asterisk_securelink.core.ascii import ascii_lower, ascii_upper
from asterisk_securelink.core.verdicts import Method, Mode, Verdict
from asterisk_securelink.dialplan import DEVICE_VAR, MODE_VAR, RESULT_VAR
from asterisk_securelink.inbound.service import VerifyRequest

_HEX_SUFFIX = re.compile(r"^(?P<peer>[^/]+)-[0-9a-fA-F]{8}(;[12])?$")  # PJSIP/SIP: <endpoint>-<8 hex>
_IAX2 = re.compile(r"^(?P<peer>[^/]+?)(:[0-9]+)?-[0-9]+$")  # IAX2/<peer or host[:port]>-<call number>
_DAHDI_ISDN = re.compile(r"^(?P<span>i[0-9]+)/")  # DAHDI/i<span>/<caller number>-<seq>
_LOCAL = re.compile(r"^[^@]*@(?P<context>[^/]+?)-[0-9a-fA-F]{8}(;[12])?$")  # Local/<exten>@<context>-<8 hex>;<n>
_NAMED = re.compile(r"^[A-Za-z0-9_.:@+/-]{1,64}$")  # a source the dialplan names (`SECURELINK_SOURCE`)
_PRINTABLE = re.compile(r"[^A-Za-z0-9_.:@+/-]")


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
    text = ascii_lower((value or default).strip())
    try:
        return Mode(text)
    except ValueError:
        raise ValueError(f"unknown mode {text[:16]!r}: use ani, dnis or either") from None


def source_of(channel_name: str | None, named: str | None = None) -> str | None:
    """The trunk / peer a call came in on, whose guess budget its key-alone guesses spend: never a number the caller
    chooses nor a counter (docs/security.md, "H1").

    `named`: `SECURELINK_SOURCE` as the administrator sets it in the trunk's context (passed by the entry context),
    used when it is a plain name. Else from the channel name, per technology:
    `PJSIP/carrier-0000002a` and `SIP/carrier-0000002a` -> the endpoint / peer (`PJSIP/carrier`);
    `IAX2/carrier-1234` and `IAX2/192.0.2.1:4569-1234` -> the peer or host, without port and call number;
    `DAHDI/i1/5551234-5` -> the ISDN span (`DAHDI/i1`), any other DAHDI channel -> `DAHDI` (every line together);
    `Local/5551234@from-trunk-0000002a;2` -> its context (`Local/@from-trunk`: the extension may be the key);
    anything else, or a name not of the technology's shape -> the technology alone (one budget for all of it).
    """
    if named and _NAMED.match(named.strip()):
        return named.strip()
    if not channel_name:
        return None
    tech, _, rest = channel_name.partition("/")
    tech = _PRINTABLE.sub("", tech)[:32] or "unknown"
    upper = ascii_upper(tech)
    found: re.Match[str] | None = None
    if upper in ("PJSIP", "SIP"):
        found = _HEX_SUFFIX.match(rest)
        peer = found and found["peer"]
    elif upper == "IAX2":
        found = _IAX2.match(rest)
        peer = found and found["peer"]
    elif upper == "DAHDI":
        found = _DAHDI_ISDN.match(rest)
        peer = found and found["span"]
    elif upper == "LOCAL":
        found = _LOCAL.match(rest)
        peer = found and "@" + found["context"]
    else:
        peer = None
    peer = _PRINTABLE.sub("", peer or "")
    return f"{tech}/{peer}"[:128] if peer else tech


def request_for(
    mode: Mode,
    caller: str | None,
    exten: str | None,
    call_id: str | None,
    channel: str | None,
    named_source: str | None = None,
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
        source=source_of(channel, named_source),
        channel=channel,
    )


def channel_vars(verdict: Verdict, device_id: int | None, mode: Mode | Method) -> dict[str, str]:
    return {RESULT_VAR: verdict.value, DEVICE_VAR: "" if device_id is None else str(device_id), MODE_VAR: mode.value}
