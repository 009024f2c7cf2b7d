"""Where an admitted call may go: the destination rules of the guard against toll fraud, and a device's `home`
(CALLING.md, "Where an admitted call goes"). Pure: the counting half of the guard (concurrent calls, calls a day)
lives in the shared store (`store.routes`) and is put together with this in `calling.guard`.

A destination is refused, in this order, when it is not 1-20 digits, is an emergency number alone or behind one
outside-line digit (whatever `allowed` says: the phone calls those itself, never with the desk's identity), matches
`denied`, or matches none of `allowed`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from asterisk_securelink.core.dialpatterns import any_matches

DESTINATION: Final = re.compile(r"[0-9]{1,20}")
HOME_EXTENSION: Final = re.compile(r"[0-9A-Za-z*#+][0-9A-Za-z*#+_-]{0,39}")


class Policy(Protocol):
    """The destination rules (`config.routing.RoutingConfig` is one)."""

    @property
    def allowed(self) -> tuple[str, ...]: ...

    @property
    def denied(self) -> tuple[str, ...]: ...

    @property
    def emergency(self) -> tuple[str, ...]: ...

    @property
    def outside_line(self) -> tuple[str, ...]: ...


class Reason(StrEnum):
    """Why a destination was refused (audited; never the digits of a key)."""

    MALFORMED = "malformed"  # not 1-20 digits
    EMERGENCY = "emergency"  # an emergency number, alone or behind an outside-line digit
    DENIED = "denied_pattern"  # matches [routing] denied
    NOT_ALLOWED = "not_allowed"  # matches nothing in [routing] allowed


@dataclass(frozen=True)
class Refusal:
    reason: Reason
    pattern: str | None = None  # the `denied` pattern it matched

    def detail(self) -> dict[str, str]:
        out = {"reason": self.reason.value}
        if self.pattern:
            out["pattern"] = self.pattern
        return out


def is_emergency(dest: str, policy: Policy) -> bool:
    if dest in policy.emergency:
        return True
    return any(dest[: len(o)] == o and dest[len(o) :] in policy.emergency for o in policy.outside_line)


def check_destination(dest: str, policy: Policy) -> Refusal | None:
    """None when the guard's rules let `dest` be dialled; else why not."""
    if not DESTINATION.fullmatch(dest):
        return Refusal(Reason.MALFORMED)
    if is_emergency(dest, policy):
        return Refusal(Reason.EMERGENCY)
    hit = any_matches(policy.denied, dest)
    if hit is not None:
        return Refusal(Reason.DENIED, hit)
    if any_matches(policy.allowed, dest) is None:
        return Refusal(Reason.NOT_ALLOWED)
    return None


# -- home: where an admitted call without a destination goes -------------------------------------------------------
class HomeKind(StrEnum):
    DISA = "disa"  # dial tone inside the Stasis app: digits, then the guard
    EXTENSION = "extension"  # an extension of the device's context (e.g. voicemail), not subject to `allowed`
    HANGUP = "hangup"


@dataclass(frozen=True)
class Home:
    kind: HomeKind
    exten: str = ""

    def __str__(self) -> str:
        return f"extension:{self.exten}" if self.kind is HomeKind.EXTENSION else self.kind.value


def parse_home(text: str) -> Home:
    """`disa`, `hangup` or `extension:<exten>`; ValueError saying what is accepted."""
    value = text.strip()
    if value in (HomeKind.DISA.value, HomeKind.HANGUP.value):
        return Home(HomeKind(value))
    kind, sep, exten = value.partition(":")
    if kind == HomeKind.EXTENSION.value and sep:
        if not HOME_EXTENSION.fullmatch(exten):
            raise ValueError(
                f"home extension {exten[:40]!r}: 1-40 characters of 0-9 A-Z a-z * # + _ -, not starting with _ "
                "(a literal extension, not a pattern)"
            )
        return Home(HomeKind.EXTENSION, exten)
    raise ValueError(f"home {value[:40]!r}: use disa, hangup or extension:<exten> (e.g. extension:*97)")
