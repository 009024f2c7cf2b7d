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


@pytest.mark.parametrize(
    ("names", "source"),
    [
        (["PJSIP/carrier-0000002a", "PJSIP/carrier-0000002b;1", "PJSIP/carrier-ffffffff"], "PJSIP/carrier"),
        (["SIP/carrier-0000002a", "SIP/carrier-0001abcd"], "SIP/carrier"),
        (["IAX2/carrier-1", "IAX2/carrier-16383"], "IAX2/carrier"),  # the call number is a counter
        (["IAX2/192.0.2.7:4569-12", "IAX2/192.0.2.7:40000-13"], "IAX2/192.0.2.7"),  # nor is the port a trunk
        (["DAHDI/i1/5551234567-1", "DAHDI/i1/5559876543-2a"], "DAHDI/i1"),  # ISDN: the caller number is no trunk
        (["DAHDI/1-1", "DAHDI/24-3"], "DAHDI"),  # analog / CAS lines: one budget for all of them
        (["Local/5551234567@from-trunk-0000002a;2", "Local/5559876543@from-trunk-0000002b;1"], "Local/@from-trunk"),
        (["PJSIP/no-suffix", "PJSIP/a/b-0000002a"], "PJSIP"),  # not the technology's shape: the technology alone
        (["WebSocket/abc-1", "WebSocket/def-2"], None),  # an unknown technology: the technology alone
    ],
)
def test_the_source_is_the_trunk_never_a_number_or_a_counter(names: list[str], source: str | None) -> None:
    """H1 (issue 22): DAHDI, IAX2 and Local channel names carry the caller number, the dialed number or a counter;
    stripping an 8-hex suffix left them in the source, so 300 guesses were 300 sources."""
    found = {source_of(n) for n in names}
    assert found == {source or names[0].split("/")[0]}
    assert not any(d in (s or "") for s in found for d in ("5551234567", "5559876543"))  # never the key


def test_a_source_the_dialplan_names_wins_when_it_is_a_plain_name() -> None:
    assert source_of("IAX2/192.0.2.7:4569-12", "carrier-a") == "carrier-a"
    assert source_of("Local/5551234567@x-0000002a;2", " carrier-a ") == "carrier-a"
    for bad in ("", "  ", "two words", "a\r\nb", "*", "#12", "x" * 65):  # never TOTAL or a device's subject
        assert source_of("PJSIP/carrier-0000002a", bad) == "PJSIP/carrier"
    assert source_of("", None) is None and source_of(None) is None
    assert len(source_of("PJSIP/" + "a" * 500 + "-0000002a") or "") == 128
    req = request_for(Mode.ANI, "6141638475", None, "1.1", "DAHDI/i2/6141638475-1", "")
    assert req.source == "DAHDI/i2"
    assert request_for(Mode.ANI, "6141638475", None, "1.1", "DAHDI/i2/6141638475-1", "pri-a").source == "pri-a"


def test_channel_vars() -> None:
    assert channel_vars(Verdict.ADMITTED, 7, Mode.DNIS) == {RESULT_VAR: "admitted", DEVICE_VAR: "7", MODE_VAR: "dnis"}
    assert channel_vars(Verdict.MISMATCH, None, Mode.ANI)[DEVICE_VAR] == ""
