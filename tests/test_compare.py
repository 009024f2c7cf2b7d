"""The 1.1 comparison (SLK1.md, "Comparing a presented number with a key"): every row of the spec's table, the
registered-number rule, the E.164 helpers. The table (support/vectors.py) is shared with test_keyindex,
test_device and test_service_slk11."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.vectors import COMPARISON, ROW_IDS, SPEC_SECRET

from asterisk_securelink.core.compare import (
    COUNTRY_CODES,
    check_trunk_prefixes,
    country_code_of,
    matches,
    prefix_ok,
    same_registered_number,
    to_e164,
)
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.numbers import Kind, classify
from asterisk_securelink.core.slk1 import Direction, derive_key


def spec_match(fmt: NumberFormat, key: str, presented: str, trunk: tuple[str, ...]) -> bool:
    p = classify(presented)
    assert p.kind is Kind.DIGITS
    return matches(p.digits, fmt.significant(key), fmt.literal_prefix, trunk)


@pytest.mark.parametrize(("pattern", "key", "presented", "trunk", "expected"), COMPARISON, ids=ROW_IDS)
def test_every_comparison_vector(
    pattern: str, key: str, presented: str, trunk: tuple[str, ...], expected: bool
) -> None:
    fmt = NumberFormat(pattern)
    assert derive_key(SPEC_SECRET, Direction.INBOUND, 0, fmt) == key  # the table's key is the inbound key of epoch 0
    assert spec_match(fmt, key, presented, trunk) is expected


def first_match_only(prefix: str, literal: str, trunk: tuple[str, ...]) -> bool:
    """The bug the spec warns about: only the first trunk prefix that `prefix` starts with is tried."""
    t = next((t for t in trunk if prefix.startswith(t)), "")
    return literal.endswith(prefix[len(t) :])


def test_every_trunk_prefix_is_tried_not_only_the_first() -> None:
    assert first_match_only("011" + "1", "1", ("0", "011")) is False  # what the naive implementation says
    assert prefix_ok("011" + "1", "1", ("0", "011")) is True
    assert prefix_ok("0111", "1", ("011", "0")) is True  # order does not matter
    assert prefix_ok("0044" + "20", "4420", ("0", "00")) is True  # T=00, L=4420
    assert prefix_ok("0044", "4420", ("0", "00")) is False  # L=44 is not a suffix of 4420
    assert prefix_ok("", "1", ()) is True  # nothing in front: the national form
    assert prefix_ok("1", "", ("1",)) is True


@pytest.mark.parametrize(
    ("prefix", "literal", "trunk", "ok"),
    [("", "4420", (), True), ("0", "4420", (), True), ("20", "4420", (), True), ("420", "4420", (), True),
     ("4420", "4420", (), True), ("44", "4420", (), False), ("24420", "4420", (), False),
     ("0020", "4420", ("00",), True), ("000", "4420", ("00",), True), ("0000", "4420", ("00",), False),
     ("0", "", (), False)],
)  # fmt: skip
def test_prefix_rule(prefix: str, literal: str, trunk: tuple[str, ...], ok: bool) -> None:
    # '0' is a suffix of '4420' (its last digit), which is why '0041638475' matches with trunk 0 or 00 in the table
    assert prefix_ok(prefix, literal, trunk) is ok


def test_digits_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert matches("12677638475", "2677638475", "1", ())
    assert not matches("677638475", "2677638475", "1", ())  # too short: compared all the same
    assert not matches("992677638475", "2677638475", "1", ())  # bad prefix: compared all the same
    assert len(calls) == 3


def test_an_empty_significant_part_never_matches() -> None:
    assert not matches("123", "", "", ())


@given(st.text(alphabet="0123456789", min_size=3, max_size=20), st.text(alphabet="0123456789", max_size=4))
def test_the_rendered_key_and_its_national_form_always_match(sig: str, literal: str) -> None:
    assert matches(literal + sig, sig, literal, ())
    assert matches(sig, sig, literal, ())
    assert matches("011" + literal + sig, sig, literal, ("0", "011"))


# -- trunk prefixes --------------------------------------------------------------------------------------------
def test_trunk_prefixes_are_digit_strings() -> None:
    assert check_trunk_prefixes(["0", "00", "011", "1"]) == ("0", "00", "011", "1")
    assert check_trunk_prefixes([]) == ()
    for bad in ([""], ["+1"], ["0 1"], ["abc"], ["\u0661"], ["1" * 9], ["0"] * 17):
        with pytest.raises(ValueError):
            check_trunk_prefixes(bad)


# -- registered numbers ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("delivered", "trunk", "same"),
    [("5550002222", (), True), ("15550002222", (), True), ("+1 555 000 2222", (), True), ("+15550002222", (), True),
     ("0115550002222", ("011",), True), ("0115550002222", (), False), ("5550002223", (), False),
     ("25550002222", (), False), ("550002222", (), False), ("(555) 000-2222", (), True)],
)  # fmt: skip
def test_the_registered_number_rule(delivered: str, trunk: tuple[str, ...], same: bool) -> None:
    digits = classify(delivered).digits
    assert same_registered_number(digits, "+15550002222", trunk) is same


def test_registered_numbers_of_other_countries() -> None:
    assert same_registered_number("02041638475", "+442041638475", ("0",))
    assert same_registered_number("00442041638475", "+442041638475", ("00",))
    assert not same_registered_number("02041638475", "+442041638475", ())
    assert same_registered_number("358401234567", "+358401234567", ())  # a three-digit country code
    assert same_registered_number("401234567", "+358401234567", ())
    assert not same_registered_number("0401234567", "+358401234567", ())  # a trunk '0' only when configured
    assert same_registered_number("0401234567", "+358401234567", ("0",))


def test_a_partial_country_code_is_a_suffix_of_it() -> None:
    # rule 3 takes any suffix of the literal prefix: for +358 a delivered '58' + national number matches too
    assert same_registered_number("58401234567", "+358401234567", ())


def test_country_codes() -> None:
    assert country_code_of("15550002222") == "1"
    assert country_code_of("+442041638475") == "44"
    assert country_code_of("358401234567") == "358"
    assert country_code_of("79161234567") == "7"
    assert country_code_of("8613800000000") == "86"
    assert country_code_of("2101234567") is None  # 210 is spare
    assert country_code_of("0123") is None
    assert country_code_of("44") is None  # a country code alone is no number


def test_the_country_code_table_is_prefix_free() -> None:
    for code in COUNTRY_CODES:
        assert code.isdigit() and 1 <= len(code) <= 3 and not code.startswith("0")
        assert not any(other != code and other.startswith(code) for other in COUNTRY_CODES), code


# -- the registered number as typed (SLK1.md 1.1 revision 2, "The registered number") ------------------------------
@pytest.mark.parametrize(
    ("raw", "default", "e164"),
    [("+1 555 000 2222", None, "+15550002222"), ("+15550002222", "44", "+15550002222"),
     ("5550002222", "1", "+15550002222"), ("(555) 000-2222", "1", "+15550002222"),
     ("20 4163 8475", "44", "+442041638475"), ("+44 20 4163 8475", None, "+442041638475"),
     # revision 2: one national trunk prefix is removed (0; 1 where C is 1) -- refused by the revision 1 code
     ("02079460000", "44", "+442079460000"), ("020 7946 0000", "44", "+442079460000"),
     ("15550002222", "1", "+15550002222"), ("1 (555) 000-2222", "1", "+15550002222"),
     ("15491979", "1", "+15491979"),  # revision 1 code: +115491979 (the 1 was kept)
     ("+12345678", None, "+12345678"), ("+123456789012345", None, "+123456789012345"),  # 8 and 15 digits
     ("\t+1-555-000-2222 ", None, "+15550002222"), ("0 20 7946 0000", "44", "+442079460000")],
)  # fmt: skip
def test_to_e164(raw: str, default: str | None, e164: str) -> None:
    assert to_e164(raw, default) == e164


@pytest.mark.parametrize(
    ("raw", "default", "message"),
    [("5550002222", None, "default country code"), ("abc", "1", "not a phone number"),
     ("+2101234567", None, "country code"), ("5550002222", "999", "not an E.164 country code"),
     ("+1555000222233334", None, "8-15 digits"),
     # revision 2 -- each accepted by the revision 1 code
     ("+526", None, "8-15 digits"),  # revision 1: +526
     ("9295", "7", "8-15 digits"),  # revision 1: +79295
     ("+1234567", None, "8-15 digits"),  # 7 digits
     ("0555 010 0003", "1", "starts with 0"),  # with C = 1 the trunk prefix is 1, not 0
     ("0044 20 7946 0000", "44", "starts with 0"), ("011 44 20 7946 0000", "1", "starts with 0"),  # not guessed
     ("00 20 7946 0000", "44", "starts with 0"),  # one trunk prefix only
     ("+0123456789", None, "not starting with 0"), ("++15550002222", None, "not a phone number"),
     ("+1 555 000 2222\n", None, "not a phone number"), ("\n15550002222", "1", "not a phone number"),
     ("+\u0661\u0665\u0665\u0665\u0660\u0660\u0660\u0662\u0662\u0662\u0662", None, "not a phone number"),
     ("1" * 300, "1", "not a phone number"), ("1" * 16, "1", "8-15 digits")],
)  # fmt: skip
def test_to_e164_refuses_asking_for_the_plus_form(raw: str, default: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        to_e164(raw, default)
    assert "international form with +" in str(refused.value) or "country code" in str(refused.value)


def _typed(raw: str, c: str | None) -> str | None:
    """The spec's rule written again from its words, for the property test below (None: refused)."""
    text = "".join(ch for ch in raw if ch not in " \t-.()/")
    if text.startswith("+"):
        result = text
        if not (text[1:].isascii() and text[1:].isdigit() and 8 <= len(text) - 1 <= 15):
            return None
    else:
        if not c or not (text.isascii() and text.isdigit()):
            return None
        trunk = "1" if c == "1" else "0"
        text = text[1:] if text.startswith(trunk) else text
        if text.startswith("0"):
            return None
        result = "+" + c + text
    digits = result[1:]
    ok = 8 <= len(digits) <= 15 and digits[0] != "0" and any(digits.startswith(cc) for cc in COUNTRY_CODES)
    return result if ok else None


@given(
    st.text(alphabet=st.sampled_from(list("0123456789+ -()\t\n")), max_size=24),
    st.sampled_from([None, "1", "7", "44", "358", "86"]),
)
def test_the_typed_registered_number_is_the_spec_s_rule(raw: str, c: str | None) -> None:
    want = _typed(raw, c)
    try:
        got: str | None = to_e164(raw, c)
    except ValueError:
        got = None
    assert got == want


@given(st.sampled_from(sorted(COUNTRY_CODES)), st.text(alphabet="0123456789", min_size=0, max_size=16))
def test_a_typed_number_is_stored_only_as_plus_and_8_to_15_digits(cc: str, national: str) -> None:
    try:
        e164 = to_e164("+" + cc + national, None)
    except ValueError:
        assert not 8 <= len(cc + national) <= 15
        return
    assert e164 == "+" + cc + national and 8 <= len(e164) - 1 <= 15 and country_code_of(e164) == cc
    assert to_e164(e164, "44") == e164  # stored as is, whatever the default country code
