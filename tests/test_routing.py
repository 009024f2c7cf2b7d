"""Inbound routing (pure): where a verdict sends the call, the Stasis mode argument, and the request a call makes."""

from __future__ import annotations

import pytest

from asterisk_securelink.config import InboundConfig
from asterisk_securelink.core.verdicts import Mode, Verdict
from asterisk_securelink.dialplan import DEVICE_VAR, MODE_VAR, RESULT_VAR
from asterisk_securelink.inbound.routing import (
    Action,
    Route,
    channel_vars,
    parse_mode,
    request_for,
    route_for,
    source_of,
)

FAILURES = [v for v in Verdict if v not in (Verdict.ADMITTED, Verdict.UNREGISTERED)]


def test_admitted_and_unregistered_go_to_their_contexts() -> None:
    cfg = InboundConfig(admitted_context="in-ok", registration_context="in-reg")
    assert route_for(Verdict.ADMITTED, cfg) == Route(Action.ADMIT, "in-ok")
    assert route_for(Verdict.UNREGISTERED, cfg) == Route(Action.REGISTER, "in-reg")


@pytest.mark.parametrize("verdict", FAILURES)
def test_every_failure_is_rejected_by_default(verdict: Verdict) -> None:
    assert route_for(verdict, InboundConfig()) == Route(Action.REJECT)


@pytest.mark.parametrize("verdict", FAILURES)
def test_on_failure_continue_never_continues_an_error(verdict: Verdict) -> None:
    route = route_for(verdict, InboundConfig(on_failure="continue"))
    if verdict is Verdict.ERROR:
        assert route.action is Action.REJECT  # a decision that could not be made fails closed
    else:
        assert route == Route(Action.CONTINUE)


def test_anonymous_continue_applies_to_anonymous_only() -> None:
    cfg = InboundConfig(anonymous="continue")
    assert route_for(Verdict.ANONYMOUS, cfg) == Route(Action.CONTINUE)
    assert route_for(Verdict.MISMATCH, cfg).action is Action.REJECT


def test_parse_mode() -> None:
    assert parse_mode(None, "dnis") is Mode.DNIS
    assert parse_mode(" ANI ", "dnis") is Mode.ANI
    assert parse_mode("either", "ani") is Mode.EITHER
    with pytest.raises(ValueError, match="unknown mode"):
        parse_mode("x" * 100, "ani")


def test_request_for_ani_and_dnis() -> None:
    ani = request_for(Mode.ANI, "6141638475", "4930123456", "1700000000.1", "PJSIP/carrier-0000002a")
    assert (ani.presented, ani.caller, ani.dialed) == ("6141638475", "6141638475", "4930123456")
    assert ani.source == "PJSIP/carrier" and ani.call_id == "1700000000.1"
    dnis = request_for(Mode.DNIS, "15550001111", "6141638475", None, None)
    assert (dnis.presented, dnis.caller, dnis.source) == ("6141638475", "15550001111", None)


def test_source_of_strips_the_channel_suffix_only() -> None:
    assert source_of("PJSIP/carrier-0000002a") == "PJSIP/carrier"
    assert source_of("Local/100@ctx-0000002a;1") == "Local/100@ctx"
    assert source_of("PJSIP/my-trunk") == "PJSIP/my-trunk"
    assert source_of("") is None and source_of(None) is None
    assert len(source_of("PJSIP/" + "a" * 500) or "") == 128


def test_channel_vars() -> None:
    assert channel_vars(Verdict.ADMITTED, 7, Mode.DNIS) == {RESULT_VAR: "admitted", DEVICE_VAR: "7", MODE_VAR: "dnis"}
    assert channel_vars(Verdict.MISMATCH, None, Mode.ANI)[DEVICE_VAR] == ""
