"""A device's life: its statuses, the allowed changes between them, and what each status may do. Pure.

    provisioned --register--> registered --suspend--> suspended --resume--> registered
         |                        |                       |
         +------------------------+-----------------------+--revoke--> revoked (final)

A provisioned device has limited ability: its keys are verified (so its first call can register it) but it is never
admitted, and the PBX does not call it. Suspended and revoked devices' keys count for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
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


TRANSITIONS: Final = {
    t.command: t
    for t in (
        Transition("register", (DeviceStatus.PROVISIONED,), DeviceStatus.REGISTERED),
        Transition("suspend", (DeviceStatus.PROVISIONED, DeviceStatus.REGISTERED), DeviceStatus.SUSPENDED),
        Transition("resume", (DeviceStatus.SUSPENDED,), DeviceStatus.REGISTERED),
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
    """A verdict that stops inbound verification because of the device's status, or None to go on (its keys count)."""
    if status in (DeviceStatus.REVOKED, DeviceStatus.SUSPENDED):
        return Verdict.REVOKED
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
