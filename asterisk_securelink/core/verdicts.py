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
    RATE_LIMITED = "rate_limited"  # outbound presentation only (SLK1.md, "Outbound presentation")


class Mode(StrEnum):
    """Where the key is carried on an inbound call."""

    ANI = "ani"  # the caller number is the key
    DNIS = "dnis"  # the dialed number is the key
    EITHER = "either"  # try the dialed number, then the caller number


# Verdicts that count toward a lockout: a wrong or reused key. A valid key of a revoked device or an
# anonymous call is not a guess.
FAILURES = frozenset({Verdict.MISMATCH, Verdict.REPLAYED, Verdict.MALFORMED, Verdict.AMBIGUOUS})
