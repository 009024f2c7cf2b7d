"""The guard's destination rules, a device's home, Asterisk patterns and caller IDs (pure)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from asterisk_securelink.config import RoutingConfig
from asterisk_securelink.core.callerid import check_context, parse_callerid
from asterisk_securelink.core.dialpatterns import PatternError, matches
from asterisk_securelink.core.tollguard import HomeKind, Reason, check_destination, is_emergency, parse_home

DEFAULT = RoutingConfig()
OPEN = replace(DEFAULT, allowed=("_X.",))


@pytest.mark.parametrize(
    ("pattern", "number", "expected"),
    [
        ("_XXXX", "2001", True),
        ("_XXXX", "200", False),
        ("_XXXX", "20011", False),
        ("_NXX", "211", True),
        ("_NXX", "111", False),
        ("_ZX", "10", True),
        ("_ZX", "01", False),
        ("_[1-3]X", "35", True),
        ("_[1-3]X", "45", False),
        ("_[0379]", "7", True),
        ("_X.", "1", False),  # `.` is one or more
        ("_X.", "12", True),
        ("_X!", "1", True),
        ("_9011XXXXX.", "901144207946", True),
        ("_00XXXXX.", "2001", False),
        ("_1-555-XXXX", "15551234", True),
        ("2001", "2001", True),
        ("2001", "20011", False),
    ],
)
def test_patterns(pattern: str, number: str, expected: bool) -> None:
    assert matches(pattern, number) is expected


@pytest.mark.parametrize("bad", ["", "_", "_X.X", "_[1-", "_[]", "_[a]", "_XY", "20a1", "_[5-1]"])
def test_bad_patterns_are_refused(bad: str) -> None:
    with pytest.raises(PatternError):
        matches(bad, "1")


def test_internal_extension_is_allowed_by_default() -> None:
    assert check_destination("2001", DEFAULT) is None


@pytest.mark.parametrize("dest", ["12125551234", "200", "20011"])
def test_only_internal_extensions_by_default(dest: str) -> None:
    refusal = check_destination(dest, DEFAULT)
    assert refusal is not None and refusal.reason is Reason.NOT_ALLOWED


@pytest.mark.parametrize("dest", ["112", "911", "9112", "0911", "999", "9999", "000", "0000", "110", "119"])
def test_emergency_numbers_are_refused_whatever_allowed_says(dest: str) -> None:
    refusal = check_destination(dest, OPEN)
    assert refusal is not None and refusal.reason is Reason.EMERGENCY


def test_emergency_needs_the_whole_number() -> None:
    assert not is_emergency("9111", OPEN)
    assert not is_emergency("99112", OPEN)  # two outside-line digits: not the rule (and long: allowed by _X.)
    assert check_destination("9111", OPEN) is None


@pytest.mark.parametrize("dest", ["0044207946000", "011442079460", "90011442079460", "9011442079460", "00061212345"])
def test_international_is_denied_even_when_allowed(dest: str) -> None:
    refusal = check_destination(dest, OPEN)
    assert refusal is not None and refusal.reason is Reason.DENIED
    assert refusal.pattern is not None and matches(refusal.pattern, dest)


@pytest.mark.parametrize("dest", ["", "12a", "1" * 21, " 2001", "\uff12\uff10\uff10\uff11"])
def test_malformed_destinations(dest: str) -> None:
    refusal = check_destination(dest, OPEN)
    assert refusal is not None and refusal.reason is Reason.MALFORMED


def test_refusal_detail_names_the_pattern_never_the_number() -> None:
    refusal = check_destination("0044207946000", OPEN)
    assert refusal is not None
    assert refusal.detail() == {"reason": "denied_pattern", "pattern": "_00XXXXX."}


@pytest.mark.parametrize(
    ("text", "kind", "exten"),
    [("disa", HomeKind.DISA, ""), ("hangup", HomeKind.HANGUP, ""), ("extension:*97", HomeKind.EXTENSION, "*97"),
     (" extension:8000 ", HomeKind.EXTENSION, "8000")],
)  # fmt: skip
def test_home(text: str, kind: HomeKind, exten: str) -> None:
    home = parse_home(text)
    assert (home.kind, home.exten) == (kind, exten)
    assert parse_home(str(home)) == home


@pytest.mark.parametrize("bad", ["", "DISA", "voicemail", "extension:", "extension:_X.", "extension:a b", "ext:1"])
def test_bad_home(bad: str) -> None:
    with pytest.raises(ValueError, match=r"disa|extension"):
        parse_home(bad)


@pytest.mark.parametrize(
    ("text", "name", "number"),
    [('"Alice" <1001>', "Alice", "1001"), ("Alice Smith <1001>", "Alice Smith", "1001"), ("<+4420794>", "", "+4420794"),
     ("1001", "", "1001"), ('"" <1001>', "", "1001")],
)  # fmt: skip
def test_callerid(text: str, name: str, number: str) -> None:
    cid = parse_callerid(text)
    assert (cid.name, cid.number) == (name, number)
    assert parse_callerid(str(cid)) == cid


@pytest.mark.parametrize(
    "bad", ["", "Alice", '"Alice" <>', '"Al\nice" <1001>', '"A" <1001> x', "<10a1>", "<" + "1" * 21 + ">"]
)
def test_bad_callerid(bad: str) -> None:
    with pytest.raises(ValueError, match="caller ID"):
        parse_callerid(bad)


def test_context_names() -> None:
    assert check_context("from-desk") == "from-desk"
    for bad in ("", "from desk", "a,b", "x" * 80, "ctx;1"):
        with pytest.raises(ValueError, match="context"):
            check_context(bad)


def test_routing_section_reports_its_problems() -> None:
    bad = replace(DEFAULT, home="voicemail", allowed=("_XY",), emergency=("11a",), default_callerid="Alice",
                  default_context="a b")  # fmt: skip
    problems = " ".join(bad.problems())
    for name in ("routing.home", "routing.allowed", "routing.emergency", "routing.default_callerid",
                 "routing.default_context"):  # fmt: skip
        assert name in problems
    assert DEFAULT.problems() == []
