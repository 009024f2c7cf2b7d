"""The verdict set. Its spelling is an interface: it becomes the channel variable SECURELINK_RESULT."""

from __future__ import annotations

from enum import StrEnum


class Verdict(StrEnum):
    ADMITTED = "admitted"
    MISMATCH = "mismatch"
    REPLAYED = "replayed"
    REVOKED = "revoked"
    UNREGISTERED = "unregistered"
    ANONYMOUS = "anonymous"
    MALFORMED = "malformed"
    AMBIGUOUS = "ambiguous"
    LOCKED_OUT = "locked_out"
    ERROR = "error"
    RATE_LIMITED = "rate_limited"  # outbound presentation (SLK1.md); a routing guard's limit (CALLING.md)
    # CALLING.md, "Verdicts added"
    NO_KEY = "no_key"  # DTMF: no usable key in time (no digits, a letter, a key cut short); nothing was checked
    DENIED = "denied"  # the guard refused the destination (or a DTMF destination too long or cut by the 30 s limit)
    NO_ROUTE = "no_route"  # no routing identity (context, caller ID) for the device
    UNCONFIRMED = "unconfirmed"  # a callback the phone did not confirm


class Mode(StrEnum):
    """Where the key is carried on an inbound call."""

    ANI = "ani"  # the caller number is the key
    DNIS = "dnis"  # the dialed number is the key
    EITHER = "either"  # try the dialed number, then the caller number


class Method(StrEnum):
    """How a call was admitted (CALLING.md: `SECURELINK_METHOD`, the CDR field `securelink_method`; on an inbound
    call also the audit row's and `/metrics`' `mode`, where outbound calls write `mobile` / `fork`). Wider than
    `Mode`, which stays what `Stasis(securelink,inbound,MODE)` and `inbound.mode` accept: DTMF and intent enter
    through `Stasis(securelink,inbound,access)`, callback is placed by the PBX. `ANI` and `DNIS` are spelled as in
    `Mode`, so `Method(mode.value)` names a resolved mode's method."""

    ANI = "ani"
    DNIS = "dnis"
    DTMF = "dtmf"  # the key sent as DTMF after answer, on an access number
    INTENT = "intent"  # a live intent from the device API matched the call to an access number
    CALLBACK = "callback"  # the PBX called the phone back


# Verdicts that count toward a lockout: a wrong or reused key. A valid key of a revoked device or an
# anonymous call is not a guess; neither are no_key (nothing was checked), denied, no_route and unconfirmed.
FAILURES = frozenset({Verdict.MISMATCH, Verdict.REPLAYED, Verdict.MALFORMED, Verdict.AMBIGUOUS})
