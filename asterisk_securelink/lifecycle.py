"""A device's life: its statuses, the allowed changes between them, and what each status may do. Pure.

    provisioned --register--> registered --suspend--> suspended --resume--> registered
         |                        |                       |
         +------------------------+-----------------------+--revoke--> revoked (final)

    provisioned --suspend--> suspended --resume--> provisioned    (resume: back to what it was; registered_at tells)

A provisioned device has limited ability: its keys are verified (so its first call can register it) but it is never
admitted, and the PBX does not call it. Suspended and revoked devices' keys count for nothing: they are not in the
live key index, and a key of one that still is (suspended on another node moments ago) gets `mismatch`, what any wrong
key gets, so a verdict never tells a caller that a key was genuine (docs/decisions.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from asterisk_securelink.core.verdicts import Verdict


class DeviceStatus(StrEnum):
    PROVISIONED = "provisioned"  # enrolled, limited ability until registered
    REGISTERED = "registered"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


STATUSES: Final = tuple(s.value for s in DeviceStatus)  # the database's CHECK constraint lists these
SPENDABLE: Final = (DeviceStatus.PROVISIONED.value, DeviceStatus.REGISTERED.value)  # whose inbound keys count


@dataclass(frozen=True)
class Transition:
    command: str  # the CLI command and the audit action `device.<command>`
    allowed_from: tuple[DeviceStatus, ...]
    to: DeviceStatus
    to_if_never_registered: DeviceStatus | None = None  # `resume`: back to what it was before `suspend`

    def target(self, registered_at: datetime | None) -> DeviceStatus:
        """Where this transition takes a device; `registered_at` (None: it never registered) tells `resume` whether
        the device was registered or still provisioned when it was suspended."""
        if registered_at is None and self.to_if_never_registered is not None:
            return self.to_if_never_registered
        return self.to


TRANSITIONS: Final = {
    t.command: t
    for t in (
        Transition("register", (DeviceStatus.PROVISIONED,), DeviceStatus.REGISTERED),
        Transition("suspend", (DeviceStatus.PROVISIONED, DeviceStatus.REGISTERED), DeviceStatus.SUSPENDED),
        Transition("resume", (DeviceStatus.SUSPENDED,), DeviceStatus.REGISTERED, DeviceStatus.PROVISIONED),
        Transition(
            "revoke", (DeviceStatus.PROVISIONED, DeviceStatus.REGISTERED, DeviceStatus.SUSPENDED), DeviceStatus.REVOKED
        ),
    )
}


def can_rotate(status: str) -> bool:
    """A revoked device is gone for good: enroll a new one instead."""
    return status != DeviceStatus.REVOKED


def can_register(status: str) -> bool:
    """Only a provisioned device becomes registered by its first verified call."""
    return status == DeviceStatus.PROVISIONED


def inbound_verdict(status: str) -> Verdict | None:
    """A verdict that stops inbound verification because of the device's status, or None to go on (its keys count).

    A suspended or revoked device's key is a `mismatch`, as it is once the device has left the key index: the same
    verdict whether or not this node has synced the change yet, and no oracle telling a caller the key was genuine.
    """
    if status in (DeviceStatus.REVOKED, DeviceStatus.SUSPENDED):
        return Verdict.MISMATCH
    if status in SPENDABLE:
        return None
    return Verdict.ERROR  # unknown status: fail closed


def after_spend(status: str, spent: bool) -> Verdict:
    """The verdict of a matched key once the single-use spend has answered."""
    if not spent:
        return Verdict.REPLAYED
    return Verdict.ADMITTED if status == DeviceStatus.REGISTERED else Verdict.UNREGISTERED


def outbound_verdict(status: str | None) -> Verdict | None:
    """Why the PBX gives a device no keyed leg, or None when it may be called (`None` status: no such device)."""
    if status is None:
        return Verdict.ERROR  # the dialplan named a device that does not exist
    if status == DeviceStatus.REGISTERED:
        return None
    if status == DeviceStatus.PROVISIONED:
        return Verdict.UNREGISTERED
    if status in (DeviceStatus.REVOKED, DeviceStatus.SUSPENDED):
        return Verdict.REVOKED
    return Verdict.ERROR  # unknown status: fail closed
