"""Device statuses: the allowed changes and what each status may do."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from asterisk_securelink.core.verdicts import Verdict
from asterisk_securelink.lifecycle import (
    SPENDABLE,
    STATUSES,
    TRANSITIONS,
    DeviceStatus,
    after_spend,
    can_register,
    can_rotate,
    inbound_verdict,
    outbound_verdict,
)


def test_inbound_status_rules() -> None:
    # no oracle: a suspended or revoked device's key gets what a wrong key gets (docs/decisions.md)
    assert inbound_verdict("revoked") is Verdict.MISMATCH
    assert inbound_verdict("suspended") is Verdict.MISMATCH
    assert inbound_verdict("provisioned") is None
    assert inbound_verdict("registered") is None
    assert inbound_verdict("garbage") is Verdict.ERROR  # fail closed
    assert after_spend("registered", True) is Verdict.ADMITTED
    assert after_spend("provisioned", True) is Verdict.UNREGISTERED
    assert after_spend("registered", False) is Verdict.REPLAYED


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        ("registered", None),
        ("provisioned", Verdict.UNREGISTERED),
        ("revoked", Verdict.REVOKED),
        ("suspended", Verdict.REVOKED),
        ("weird", Verdict.ERROR),
        (None, Verdict.ERROR),  # no such device
    ],
)
def test_outbound_status_rules(status: str | None, verdict: Verdict | None) -> None:
    assert outbound_verdict(status) == verdict


def test_spendable_statuses_are_exactly_those_inbound_verification_goes_on_for() -> None:
    assert set(STATUSES) == {s.value for s in DeviceStatus}
    assert {s for s in STATUSES if inbound_verdict(s) is None} == set(SPENDABLE)


def test_transitions() -> None:
    assert {c: (t.allowed_from, t.to) for c, t in TRANSITIONS.items()} == {
        "register": ((DeviceStatus.PROVISIONED,), DeviceStatus.REGISTERED),
        "suspend": ((DeviceStatus.PROVISIONED, DeviceStatus.REGISTERED), DeviceStatus.SUSPENDED),
        "resume": ((DeviceStatus.SUSPENDED,), DeviceStatus.REGISTERED),
        "revoke": ((DeviceStatus.PROVISIONED, DeviceStatus.REGISTERED, DeviceStatus.SUSPENDED), DeviceStatus.REVOKED),
    }
    assert all(DeviceStatus.REVOKED not in t.allowed_from for t in TRANSITIONS.values())  # revoked is final
    assert can_register("provisioned") and not can_register("registered") and not can_register("suspended")
    assert can_rotate("registered") and can_rotate("suspended") and not can_rotate("revoked")


def test_resume_goes_back_to_what_the_device_was() -> None:
    resume = TRANSITIONS["resume"]
    assert resume.target(datetime(2026, 1, 1, tzinfo=UTC)) is DeviceStatus.REGISTERED
    assert resume.target(None) is DeviceStatus.PROVISIONED  # suspended before it ever registered
    assert TRANSITIONS["register"].target(None) is DeviceStatus.REGISTERED
    assert all(TRANSITIONS[c].target(None) is TRANSITIONS[c].to for c in ("register", "suspend", "revoke"))
