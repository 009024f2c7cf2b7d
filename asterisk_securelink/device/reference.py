"""The device side of SLK1 1.1, as a mobile app computes it: a reference to port to Kotlin or Swift.

Pure (no I/O, no clock: every function takes the time `now_ms` as integer unix milliseconds). It reuses the platform's
own code for everything the spec defines, so it cannot drift from it: `provisioning.parse` for the enrollment URI,
`slk1` for the epoch and the key, `formats` for rendering, `numbers` for normalizing a received caller number and
`compare` for comparing it. See `docs/device-integration.md` for the walk-through and `docs/SLK1.md` for the
normative text.

What a device keeps (`DeviceState`, two integers per enrollment, across restarts): the last inbound epoch it presented,
`L`, and the highest outbound epoch it accepted (its high-water mark).

* `present_inbound(prov, state, now_ms)` - the key to present when the device calls the PBX (SLK1.md 1.1 revision 2,
  "Inbound presentation"): first the clock correction (`L > current + look_ahead`: `L = current - 1`, kept even when
  no key follows), then the key of epoch `p = max(current, L + 1)`, only while `p <= epoch(now_ms - 2000) +
  look_ahead`; otherwise `BurstUsedUp` says how long to wait. So a redial right after a call is admitted, and at
  most `look_ahead + 1` keyed calls fit in one period. `inbound_key` is the same without the state.
* `check(prov, number, now_ms, high_water)` - whether a received caller number is the PBX's `outbound` key: epochs
  `e-1`, `e`, `e+1` of the device's clock, compared by the 1.1 rules with the provisioning's trunk prefixes, above the
  high-water mark; `accept` spends it. `check` never raises on the number: anything that is not a phone number is the
  result `malformed`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

from asterisk_securelink.core.compare import matches
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.numbers import Kind, classify, key_digits
from asterisk_securelink.core.provisioning import Provisioning, parse
from asterisk_securelink.core.slk1 import Direction, derive_key, epoch_at_ms, epoch_start_ms, outbound_window
from asterisk_securelink.errors import InputError, SecureLinkError

__all__ = [
    "MARGIN_MS",
    "BurstUsedUp",
    "CheckResult",
    "CheckStatus",
    "DeviceState",
    "InboundKey",
    "StateError",
    "accept",
    "check",
    "corrected_last",
    "inbound_epoch",
    "inbound_key",
    "load",
    "outbound_epochs",
    "present_inbound",
    "state_for",
    "state_from_data",
    "state_from_json",
    "state_to_json",
]

MARGIN_MS: Final = 2000  # SLK1.md: a platform clock this much behind still accepts a key presented ahead
STATE_FORMAT: Final = "slk1-device-state/1"


def load(uri: str) -> Provisioning:
    """Parse a `securelink://provision?...` URI. Raises `ProvisioningError`, also for whitespace around it: SLK1.md
    revision 2 refuses a raw space, tab, CR or LF anywhere in the URI rather than delete it (a caller reading the URI
    from a file removes the file's own line end first)."""
    return parse(uri)


# -- what the device keeps -------------------------------------------------------------------------------------
class StateError(InputError, ValueError):
    """A state file that cannot be used (unreadable, or another enrollment's with other key settings)."""


@dataclass(frozen=True)
class DeviceState:
    """What a device remembers for one enrollment (one key_id: `period` and `t0` never change for it)."""

    key_id: str
    period: int
    t0: int
    last_inbound: int | None = None  # L: the last inbound epoch presented
    outbound_high_water: int | None = None  # the highest outbound epoch accepted; it and every earlier one are spent


def state_for(prov: Provisioning, state: DeviceState | None) -> DeviceState:
    """`state` if it is this enrollment's, a fresh one for a new key_id (a rotation starts new high-water marks).

    Raises StateError for the same key_id with another period or t0: that cannot come from one platform."""
    if state is None or state.key_id != prov.key_id:
        return DeviceState(prov.key_id, prov.period, prov.t0)
    if (state.period, state.t0) != (prov.period, prov.t0):
        raise StateError("the state was kept for the same key_id with another period or t0")
    return state


def state_to_json(state: DeviceState) -> str:
    return json.dumps(
        {
            "format": STATE_FORMAT,
            "key_id": state.key_id,
            "period": state.period,
            "t0": state.t0,
            "last_inbound_epoch": state.last_inbound,
            "outbound_high_water": state.outbound_high_water,
        }
    )


def state_from_json(text: str) -> DeviceState:
    try:
        data = json.loads(text)
    except ValueError:
        raise StateError("not a device state (JSON expected)") from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise StateError(f"not a device state (format {STATE_FORMAT!r} expected)")
    return state_from_data(data)


def state_from_data(data: Mapping[str, Any]) -> DeviceState:
    """The state's fields of a decoded state document (its `format` checked by the caller). Raises StateError."""
    ints = {name: data.get(name) for name in ("period", "t0", "last_inbound_epoch", "outbound_high_water")}
    for name, value in ints.items():
        optional = name in ("last_inbound_epoch", "outbound_high_water")
        if (value is None and not optional) or (
            value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0)
        ):
            raise StateError(f"device state: {name} must be a non-negative integer")
    key_id = data.get("key_id")
    if not isinstance(key_id, str):
        raise StateError("device state: key_id must be a string")
    return DeviceState(key_id, data["period"], data["t0"], data["last_inbound_epoch"], data["outbound_high_water"])


# -- inbound: device -> PBX -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class InboundKey:
    """The key a device presents (or dials) when it calls the PBX at one instant."""

    key: str  # rendered in the inbound format, e.g. '+13582874290'
    digits: str  # the same without a leading '+'
    epoch: int
    valid_from: float  # unix seconds the key's window begins (display; the exact values are the _ms fields)
    valid_until: float  # unix seconds the key's window ends (the next key starts)
    seconds_left: float  # valid_until - now
    at_ms: int
    valid_from_ms: int
    valid_until_ms: int
    burst: int  # which keyed call of this period: epoch - current + 1
    burst_size: int  # how many keyed calls one period allows: look_ahead + 1
    present: str  # ani: the caller number to present; dnis: the number to dial (access prefix + significant part)


class BurstUsedUp(SecureLinkError):
    """No keyed call now: the calls this period allows are used (or, with look_ahead 0, the period began less than the
    margin ago). `wait_ms` says when the next one is possible. `state`, when set, is the state to keep all the same:
    the clock correction, stored before the test (SLK1.md 1.1 revision 2)."""

    def __init__(self, wait_ms: int, burst_size: int, last: int | None, state: DeviceState | None = None) -> None:
        self.wait_ms = wait_ms
        self.burst_size = burst_size
        self.last = last
        self.state = state
        calls = "the keyed call" if burst_size == 1 else f"the {burst_size} keyed calls"
        super().__init__(f"{calls} this period allows are used; the next is possible in {wait_ms / 1000:.1f} s")


def corrected_last(prov: Provisioning, now_ms: int, last: int | None) -> int | None:
    """`L` after the correction: `current - 1` when `L > current + look_ahead` (the device's clock was ahead and has
    been corrected), else `L` (None: nothing presented yet). Stored before the margin test (SLK1.md revision 2)."""
    current = epoch_at_ms(now_ms, prov.period, prov.t0)
    return current - 1 if last is not None and last > current + prov.look_ahead else last


def inbound_epoch(prov: Provisioning, now_ms: int, last: int | None = None) -> int:
    """The epoch `p` to present at `now_ms` after presenting `last` (None: none yet), SLK1.md 1.1 revision 2,
    "Inbound presentation": after the correction (`corrected_last`), `p = max(current, L + 1)`, presented only if
    `p <= epoch(now_ms - MARGIN_MS) + look_ahead` -- the test is on the epoch presented, so with look_ahead 0 no key
    is presented in the first 2 s of a period either.

    Raises BurstUsedUp (with the corrected `L` as `last`) when the test fails; SLK1Error when `now_ms` is before t0.
    """
    current = epoch_at_ms(now_ms, prov.period, prov.t0)
    last = corrected_last(prov, now_ms, last)
    p = current if last is None else max(current, last + 1)
    floor_epoch = (now_ms - MARGIN_MS - prov.t0 * 1000) // (prov.period * 1000)  # may be -1 just after t0
    if p > floor_epoch + prov.look_ahead:
        ready_ms = epoch_start_ms(p - prov.look_ahead, prov.period, prov.t0) + MARGIN_MS
        raise BurstUsedUp(ready_ms - now_ms, prov.look_ahead + 1, last)
    return p


def inbound_key(prov: Provisioning, now_ms: int, last: int | None = None) -> InboundKey:
    """The inbound key to present at `now_ms` when the last one presented was of epoch `last` (None: none yet).

    Raises BurstUsedUp (with the wait) when no keyed call may be placed now; SLK1Error when `now_ms` is before t0.
    """
    epoch = inbound_epoch(prov, now_ms, last)
    current = epoch_at_ms(now_ms, prov.period, prov.t0)
    fmt = NumberFormat(prov.inbound_format)
    key = derive_key(prov.secret, Direction.INBOUND, epoch, fmt)
    start, end = epoch_start_ms(epoch, prov.period, prov.t0), epoch_start_ms(epoch + 1, prov.period, prov.t0)
    present = prov.dial + fmt.significant(key) if prov.mode == "dnis" and prov.dial else key
    return InboundKey(
        key=key,
        digits=key_digits(key),
        epoch=epoch,
        valid_from=float(start // 1000),
        valid_until=float(end // 1000),
        seconds_left=(end - now_ms) / 1000,  # display only
        at_ms=now_ms,
        valid_from_ms=start,
        valid_until_ms=end,
        burst=epoch - current + 1,
        burst_size=prov.look_ahead + 1,
        present=present,
    )


def present_inbound(prov: Provisioning, state: DeviceState, now_ms: int) -> tuple[InboundKey, DeviceState]:
    """The key to present now and the state to keep (record it before the call is placed). Raises BurstUsedUp; its
    `state` is then the state to keep when the clock correction changed `L` (stored whether or not a key follows)."""
    try:
        key = inbound_key(prov, now_ms, state.last_inbound)
    except BurstUsedUp as wait:
        if wait.last != state.last_inbound:
            wait.state = replace(state, last_inbound=wait.last)
        raise
    return key, replace(state, last_inbound=key.epoch)


# -- outbound: PBX -> device ----------------------------------------------------------------------------------
class CheckStatus(StrEnum):
    GENUINE = "genuine"  # the PBX's outbound key of an accepted epoch above the high-water mark
    NOT_GENUINE = "not_genuine"  # a phone number, but no accepted epoch's key: treat the call as spoofed
    REPLAYED = "replayed"  # the key of an epoch at or below the high-water mark: already spent
    ANONYMOUS = "anonymous"  # no caller number (empty, anonymous, ...): not from the PBX's keyed calls
    MALFORMED = "malformed"  # not a phone number at all (letters, control characters, too short or long)


@dataclass(frozen=True)
class CheckResult:
    status: CheckStatus
    epoch: int | None = None  # the matching epoch (GENUINE and REPLAYED only): `accept` spends it
    offset: int | None = None  # epoch minus the device's current epoch: -1, 0 or +1

    @property
    def genuine(self) -> bool:
        return self.status is CheckStatus.GENUINE

    @property
    def window(self) -> str | None:
        """'previous', 'current' or 'next' for a matching key, else None."""
        return None if self.offset is None else {-1: "previous", 0: "current", 1: "next"}[self.offset]


def outbound_epochs(prov: Provisioning, now_ms: int) -> list[int]:
    """The epochs whose outbound key the device accepts at `now_ms` (before the high-water mark), in the order
    `check` tries them (SLK1.md, "Outbound presentation": `e`, `e+1`, `e-1`; see `slk1.outbound_window`)."""
    return outbound_window(epoch_at_ms(now_ms, prov.period, prov.t0))


def check(prov: Provisioning, number: str | None, now_ms: int, high_water: int | None = None) -> CheckResult:
    """Is `number` (a caller number as the phone received it) the PBX's outbound key for this device at `now_ms`?

    The number is normalized and compared as SLK1.md 1.1 says (its last K digits with each accepted epoch's key, in
    constant time and for every epoch, then the trunk-prefix rule with the provisioning's `trunk` list). A match at
    or below `high_water` is REPLAYED. Raises only for a bad `now_ms` (before t0), never for a bad `number`.
    """
    presented = classify(number)
    if presented.kind is Kind.ANONYMOUS:
        return CheckResult(CheckStatus.ANONYMOUS)
    if presented.kind is Kind.MALFORMED:
        return CheckResult(CheckStatus.MALFORMED)
    current = epoch_at_ms(now_ms, prov.period, prov.t0)
    fmt = NumberFormat(prov.outbound_format)
    found: list[int] = []
    for epoch in outbound_epochs(prov, now_ms):  # every epoch is compared: the time taken does not tell which matched
        key = derive_key(prov.secret, Direction.OUTBOUND, epoch, fmt)
        if matches(presented.digits, fmt.significant(key), fmt.literal_prefix, prov.trunk):
            found.append(epoch)
    fresh = [e for e in found if high_water is None or e > high_water]
    if fresh:
        return CheckResult(CheckStatus.GENUINE, fresh[0], fresh[0] - current)
    if found:
        return CheckResult(CheckStatus.REPLAYED, found[0], found[0] - current)
    return CheckResult(CheckStatus.NOT_GENUINE)


def accept(state: DeviceState, result: CheckResult) -> DeviceState:
    """The state after acting on `result`: a genuine key's epoch, and every earlier one, are spent."""
    if not result.genuine or result.epoch is None:
        return state
    high = result.epoch if state.outbound_high_water is None else max(state.outbound_high_water, result.epoch)
    return replace(state, outbound_high_water=high)
