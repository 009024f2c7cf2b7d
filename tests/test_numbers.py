from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterisk_securelink.core.numbers import MAX_RAW_LENGTH, Kind, classify, key_digits, normalize, safe_display


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("6141638475", "6141638475"),
        ("+12677638475", "12677638475"),
        ("+1 (267) 763-8475", "12677638475"),
        (" 555.163.8475 ", "5551638475"),
        ("123", "123"),
        ("1" * 20, "1" * 20),
        ("267/763-8475", "2677638475"),
        ("(267) 763-8475", "2677638475"),
        ("\t+1\t267\t763 8475 \t", "12677638475"),
        ("+ 1 267", "1267"),  # separators go before the one leading '+'
    ],
)
def test_digits(raw: str, digits: str) -> None:
    assert classify(raw).kind is Kind.DIGITS
    assert normalize(raw) == digits


@pytest.mark.parametrize(
    "raw", [None, "", "  ", "anonymous", "Anonymous", "UNKNOWN", "restricted", "private", "PrIvAtE", " anonymous\t"]
)
def test_anonymous(raw: str | None) -> None:
    assert classify(raw).kind is Kind.ANONYMOUS


@pytest.mark.parametrize("raw", ["unavailable", "withheld", "anonymous2", "un\u212anown", "\u00a0anonymous"])
def test_only_the_spec_values_are_anonymous(raw: str) -> None:
    # SLK1 1.1 names exactly empty, anonymous, unknown, restricted, private (any ASCII case); anything else is
    # letters, so malformed (the Kelvin sign lowercases to 'k' but is not ASCII; NBSP is not trimmed)
    assert classify(raw).kind is Kind.MALFORMED


@pytest.mark.parametrize(
    "raw",
    ["12", "1" * 21, "1" * 64, "abc", "123abc", "++123456", "1234\x00567", "1234\r\n5678", "١٢٣٤٥٦٧",
     "'; DROP TABLE devices; --", "sip:123@host", "%31%32%33", "12 34 +56", b"1234567", 1234567,
     "\uff11\uff12\uff13\uff14", "123_456", "+", "1" * 300, "\u00a01234567"],
)  # fmt: skip
def test_malformed(raw: object) -> None:
    assert classify(raw).kind is Kind.MALFORMED
    assert normalize(raw) is None


def test_key_digits_strips_plus_only() -> None:
    assert key_digits("+12677638475") == "12677638475"
    assert key_digits("6141638475") == "6141638475"


def test_safe_display_bounds_and_strips_control_characters() -> None:
    shown = safe_display("12\x00\r\n" + "9" * 100)
    assert "\x00" not in shown and "\r" not in shown and "\n" not in shown
    assert len(shown) <= 35


@given(st.one_of(st.text(), st.binary(), st.none(), st.integers()))
def test_classify_never_raises_and_digits_are_ascii(raw: object) -> None:
    p = classify(raw)
    if p.kind is Kind.DIGITS:
        assert p.digits.isascii() and p.digits.isdigit()
        assert 3 <= len(p.digits) <= 20
    else:
        assert p.digits == ""


@given(st.text(alphabet="0123456789", min_size=3, max_size=20), st.sampled_from(["", "+"]))
def test_punctuation_does_not_change_digits(digits: str, prefix: str) -> None:
    dashed = prefix + "-".join(digits[i : i + 3] for i in range(0, len(digits), 3))
    assert normalize(dashed) == digits


# -- rule 1, SLK1.md 1.1 revision 2 ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    ["\n622", "622\n", "\r\n6141638475", "6141638475\r", "\v6141638475", "6141638475\f", "\n", "\r\n", "\f",
     "\nanonymous", "anonymous\r\n", " \t\n\t "],
)  # fmt: skip
def test_only_spaces_and_tabs_are_trimmed(raw: str) -> None:
    """Revision 2: CR, LF, VT and FF are not trimmed, so `\n622` is malformed (revision 1 code: `digits`) and `\n`
    is malformed (revision 1 code: `anonymous`)."""
    assert classify(raw).kind is Kind.MALFORMED


@pytest.mark.parametrize("raw", [" \t", "\t\t", " Anonymous ", "\tPRIVATE\t", "  restricted", "unknown \t"])
def test_trimming_comes_before_the_anonymous_check(raw: str) -> None:
    assert classify(raw).kind is Kind.ANONYMOUS


@pytest.mark.parametrize("raw", ["\u017fecret", "unknown\u0131", "pr\u0131vate", "UN\u212aNOWN", "\u0130PRIVATE"])
def test_the_anonymous_values_compare_ascii_case_only(raw: str) -> None:
    assert classify(raw).kind is Kind.MALFORMED  # dotless i is no i, the Kelvin sign is no k


def test_the_256_character_limit() -> None:
    assert classify(" " * (MAX_RAW_LENGTH - 10) + "6141638475").digits == "6141638475"  # 256 characters: read
    assert classify(" " * (MAX_RAW_LENGTH - 9) + "6141638475").kind is Kind.MALFORMED  # 257: malformed at once
    assert classify(" " * (MAX_RAW_LENGTH + 1)).kind is Kind.MALFORMED  # not anonymous: too long comes first
    assert MAX_RAW_LENGTH == 256


def _rule_1(raw: str) -> Kind:
    """Rule 1 written again from the spec's words, step by step, for the property test below."""
    if len(raw) > 256:
        return Kind.MALFORMED
    text = raw.strip(" \t")
    if text.lower() in ("", "anonymous", "unknown", "restricted", "private") and text.isascii():
        return Kind.ANONYMOUS
    for sep in " \t-.()/":
        text = text.replace(sep, "")
    text = text.removeprefix("+")
    ok = 3 <= len(text) <= 20 and all(c in "0123456789" for c in text)
    return Kind.DIGITS if ok else Kind.MALFORMED


_NUMBERISH = st.text(
    alphabet=st.sampled_from(list("0123456789+-.()/ \t\r\n\v\fanoymusAKNOWPRIV\u017f\u0131\u212a\u00a0\u0661"))
)


@given(st.one_of(_NUMBERISH, st.text(max_size=300)))
def test_rule_1_is_the_spec_s_steps(raw: str) -> None:
    assert classify(raw).kind is _rule_1(raw)


@given(st.text(alphabet="0123456789", min_size=3, max_size=20), st.sampled_from(["\r", "\n", "\v", "\f", "\r\n"]))
def test_a_control_character_at_either_end_is_malformed(digits: str, control: str) -> None:
    assert classify(control + digits).kind is Kind.MALFORMED
    assert classify(digits + control).kind is Kind.MALFORMED
    assert classify(" \t" + digits + "\t ").digits == digits
