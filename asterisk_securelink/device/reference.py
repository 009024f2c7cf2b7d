"""The device side of SLK1, as a mobile app computes it: a reference to port to Kotlin or Swift.

Pure (no I/O, no clock: every function takes the time `at` as unix seconds). It reuses the platform's own code for
everything the spec defines, so it cannot drift from it: `provisioning.parse` for the enrollment URI, `slk1` for the
epoch and the key, `formats` for rendering and `numbers` for normalizing a received caller number. See
`docs/device-integration.md` for the walk-through and `docs/SLK1.md` for the normative text.

What a device does with it:

* `inbound_key(prov, at)` - the key to present when the device calls the PBX (SLK1.md, direction `inbound`): as its
  caller number, or as the number it dials when the PBX runs in DNIS mode. The PBX accepts each key once, so a second
  call within the same window has to wait `seconds_left` for the next key.
* `check(prov, number, at)` - whether a received caller number is the PBX's `outbound` key. The PBX presents the key
  of epoch `max(current, last_presented + 1)`, never later than `current + 1` (SLK1.md, "Outbound presentation"); the
  device accepts epochs `e-1`, `e`, `e+1` of its own clock, each at most once. `check` never raises on the number:
  anything that is not a phone number is the result `malformed`.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.numbers import Kind, classify, key_digits
from asterisk_securelink.core.provisioning import Provisioning, parse
from asterisk_securelink.core.slk1 import Direction, derive_key, epoch_at, outbound_window

__all__ = [
    "CheckResult",
    "CheckStatus",
    "InboundKey",
    "check",
    "inbound_key",
    "load",
    "outbound_epochs",
]


def load(uri: str) -> Provisioning:
    """Parse a `securelink://provision?...` URI (surrounding whitespace ignored). Raises `ProvisioningError`."""
    return parse(uri.strip())


# -- inbound: device -> PBX -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class InboundKey:
    """The key a device presents (or dials) when it calls the PBX at one instant."""

    key: str  # rendered in the inbound format, e.g. '+13582874290': what the device puts in its caller ID / dials
    digits: str  # the same without a leading '+': what the PBX compares after normalizing the number it received
    epoch: int
    valid_from: float  # unix time the window began
    valid_until: float  # unix time the window ends (the next key starts)
    seconds_left: float  # valid_until - at


def inbound_key(prov: Provisioning, at: float) -> InboundKey:
    """The current inbound key at unix time `at`. Raises `SLK1Error` when `at` is not finite or before `t0`."""
    epoch = epoch_at(at, prov.period, prov.t0)
    key = derive_key(prov.secret, Direction.INBOUND, epoch, NumberFormat(prov.inbound_format))
    start = prov.t0 + epoch * prov.period
    end = start + prov.period
    return InboundKey(key, key_digits(key), epoch, float(start), float(end), end - at)


# -- outbound: PBX -> device ----------------------------------------------------------------------------------
class CheckStatus(StrEnum):
    GENUINE = "genuine"  # the PBX's outbound key of an accepted epoch, not accepted before
    NOT_GENUINE = "not_genuine"  # a phone number, but no accepted epoch's key: treat the call as spoofed
    REPLAYED = "replayed"  # the key of an accepted epoch that this device already accepted once
    ANONYMOUS = "anonymous"  # no caller number (withheld, anonymous, ...): not from the PBX's keyed calls
    MALFORMED = "malformed"  # not a phone number at all (letters, control characters, too short or long)


@dataclass(frozen=True)
class CheckResult:
    status: CheckStatus
    epoch: int | None = None  # the matching epoch (GENUINE and REPLAYED only): remember it to refuse a reuse
    offset: int | None = None  # epoch minus the device's current epoch: -1, 0 or +1

    @property
    def genuine(self) -> bool:
        return self.status is CheckStatus.GENUINE

    @property
    def window(self) -> str | None:
        """'previous', 'current' or 'next' for a matching key, else None."""
        return None if self.offset is None else {-1: "previous", 0: "current", 1: "next"}[self.offset]


def outbound_epochs(prov: Provisioning, at: float) -> list[int]:
    """The epochs whose outbound key the device accepts at `at`, in the order `check` tries them (SLK1.md,
    "Outbound presentation": `e`, `e+1`, `e-1`; see `slk1.outbound_window`)."""
    return outbound_window(epoch_at(at, prov.period, prov.t0))


def check(prov: Provisioning, number: str | None, at: float, accepted: Collection[int] = ()) -> CheckResult:
    """Is `number` (a caller number as the phone received it) the PBX's outbound key for this device at `at`?

    `accepted` holds the epochs whose key this device has already accepted (SLK1.md: each at most once); a match on
    one of them is `REPLAYED`. The number is normalized as the PBX normalizes numbers (separators and one leading
    '+' removed, 3..20 ASCII digits) and compared with every accepted epoch's key in constant time.
    Raises only for a bad `at` (not finite, or before `t0`), never for a bad `number`.
    """
    presented = classify(number)
    if presented.kind is Kind.ANONYMOUS:
        return CheckResult(CheckStatus.ANONYMOUS)
    if presented.kind is Kind.MALFORMED:
        return CheckResult(CheckStatus.MALFORMED)
    current = epoch_at(at, prov.period, prov.t0)
    fmt = NumberFormat(prov.outbound_format)
    received = presented.digits.encode("ascii")
    matches: list[int] = []
    for epoch in outbound_epochs(prov, at):  # every epoch is compared: the time taken does not tell which matched
        expected = key_digits(derive_key(prov.secret, Direction.OUTBOUND, epoch, fmt)).encode("ascii")
        if hmac.compare_digest(expected, received):
            matches.append(epoch)
    fresh = [e for e in matches if e not in accepted]
    if fresh:
        return CheckResult(CheckStatus.GENUINE, fresh[0], fresh[0] - current)
    if matches:
        return CheckResult(CheckStatus.REPLAYED, matches[0], matches[0] - current)
    return CheckResult(CheckStatus.NOT_GENUINE)
