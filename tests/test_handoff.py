"""The verdict handed to the dialplan in one request (core/handoff.py): what the extension carries, and the AMI end
event it asks for (asterisk/ami_ends.py). The dialplan side is proved on the real Asterisk (tests/e2e)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterisk_securelink.asterisk.ami_ends import end_of
from asterisk_securelink.core.handoff import MAX_EXTENSION, SEP, Handoff, decode, fits, percent_decode, percent_encode

plain = st.text(alphabet="ABCxyz019_.+*#-", max_size=12)
printable = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@given(
    kind=st.sampled_from("acru"), verdict=plain, device=st.none() | st.integers(0, 10**9), mode=plain,
    destination=plain, home=plain, timeout=st.none() | st.integers(0, 86400), context=plain, callerid=printable,
    key=plain, nxt=plain, emit=st.booleans(), end=st.booleans(),
)  # fmt: skip
def test_a_hand_off_reads_back_as_written_and_only_its_separators_split_it(
    kind: str, verdict: str, device: int | None, mode: str, destination: str, home: str, timeout: int | None,
    context: str, callerid: str, key: str, nxt: str, emit: bool, end: bool,
) -> None:  # fmt: skip
    h = Handoff(kind, verdict, device, mode, destination, home, timeout, context, callerid, key, nxt, emit, end)
    payload = h.encode()
    assert payload.count(SEP) == 11  # a caller ID holding `~` cannot add a field
    assert decode(payload) == h
    assert set(payload.split(SEP)[8]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789%")


def test_a_field_the_dialplan_could_misread_is_refused() -> None:
    for bad in ("a~b", "ctx,1", "x y", "${EXTEN}", "ñ"):
        with pytest.raises(ValueError, match="hand-off field"):
            Handoff("a", "admitted", 1, "ani", context=bad).encode()
    with pytest.raises(ValueError, match="kind"):
        Handoff("x", "admitted").encode()


def test_what_the_dialplan_sets_and_what_fits_an_extension() -> None:
    h = Handoff("a", "admitted", 12, "dtmf", "2001", "", 3600, "from-desk", '"Alice" <1001>', "7", "", True, True)
    payload = h.encode()
    assert payload == "a~admitted~12~dtmf~2001~~3600~from-desk~%22Alice%22%20%3C1001%3E~7~~eh" and fits(payload)
    assert h.variables() == {
        "SECURELINK_RESULT": "admitted", "SECURELINK_DEVICE": "12", "SECURELINK_MODE": "dtmf",
        "SECURELINK_METHOD": "dtmf", "SECURELINK_DESTINATION": "2001", "SECURELINK_HOME": "",
        "TIMEOUT(absolute)": "3600", "SECURELINK_CONTEXT": "from-desk", "SECURELINK_CALLERID": '"Alice" <1001>',
        "SECURELINK_CALL_KEY_ID": "7", "CDR(securelink_device)": "12", "CDR(securelink_method)": "dtmf",
    }  # fmt: skip
    refused = Handoff("r", "mismatch", None, "ani", emit_verdict=True)
    assert refused.encode() == "r~mismatch~~ani~~~~~~~~e"
    assert refused.variables() == {"SECURELINK_RESULT": "mismatch", "SECURELINK_DEVICE": "", "SECURELINK_MODE": "ani"}
    assert not fits("a" * (MAX_EXTENSION + 1)) and fits("a" * MAX_EXTENSION)
    assert percent_decode(percent_encode("Zoë <1>")) == "Zoë <1>" and percent_encode(",") == "%2C"


def test_the_end_event_of_a_handed_over_call() -> None:
    event = {"Event": "UserEvent", "UserEvent": "SecureLinkCallEnd", "Uniqueid": "1790.7", "Cause": "16",
             "Answered": "1796544000.250000"}  # fmt: skip
    assert end_of(event) == ("1790.7", "Normal Clearing", datetime.fromtimestamp(1796544000.25, UTC))
    assert end_of({**event, "Answered": "0.000000", "Cause": "127"}) == ("1790.7", "127", None)  # never answered
    assert end_of({**event, "Answered": ""}) == ("1790.7", "Normal Clearing", None)  # CDRs off
    assert end_of({**event, "UserEvent": "SecureLinkVerdict"}) is None
    assert end_of({**event, "Uniqueid": ""}) is None


def test_only_a_number_is_handed_on() -> None:
    """The entry patterns let anything follow the first character; `(`, `,` or `:` in the number the dialplan goes on
    with would choose the priority or the context of its Goto (found in review)."""
    from asterisk_securelink.core.handoff import check_dialled

    for good in ("2001", "+12155550400", "*97", "#1"):
        assert check_dialled(good) == good
    for bad in ("2001(x,5", "1(:ctx,123", "1:a~admitted", "20 01", "", None, "1" * 80, "2001\n"):
        with pytest.raises(ValueError, match="not handed on"):
            check_dialled(bad)
