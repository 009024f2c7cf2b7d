"""Activation codes (80 bits, base32, grouped, only hashed) and the enrollment URI."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterisk_securelink.deviceapi.codes import (
    CodeError,
    check_public_host,
    code_hash,
    enrollment_uri,
    format_code,
    new_code,
    normalize_code,
    parse_enrollment_uri,
    server_url,
)

CODE = "ABCDEFGHIJKLMNOP"


def test_new_codes_are_80_random_bits_of_base32() -> None:
    code = new_code(lambda n: bytes(range(n)))
    assert code == base64.b32encode(bytes(range(10))).decode() == "AAAQEAYEAUDAOCAJ"
    assert len({new_code() for _ in range(200)}) == 200
    for c in (new_code() for _ in range(50)):
        assert len(c) == 16 and set(c) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        assert base64.b32decode(c) and len(base64.b32decode(c)) == 10


def test_display_and_input_forms() -> None:
    assert format_code(CODE) == "ABCD-EFGH-IJKL-MNOP"
    for typed in ("ABCD-EFGH-IJKL-MNOP", "abcd-efgh-ijkl-mnop", "abcdefghijklmnop", " AbCd-EfGhIjKl-MNOP ",
                  "A-B-C-D-EFGHIJKLMNOP", "ABCD EFGH IJKL MNOP", "abcd efgh ijkl mnop",
                  "  a b-c d--EFGH IJKLMNOP-"):  # fmt: skip
        assert normalize_code(typed) == CODE
        assert code_hash(typed) == hashlib.sha256(CODE.encode()).hexdigest()


def test_spaces_anywhere_are_removed() -> None:
    """Revision 2 ("Enrollment codes"): before, a space inside a code made it malformed."""
    assert normalize_code("abcd efgh 2345 6777") == "ABCDEFGH23456777"


@pytest.mark.parametrize(
    "typed",
    [
        "", "ABCDEFGHIJKLMNO", "ABCDEFGHIJKLMNOPQ", "ABCDEFGHIJKLMNO1", "ABCDEFGHIJKLMNO=", "\u00c0BCDEFGHIJKLMNOP",
        "fak5bft4\u017ffr4hxhy",  # a long s: str.upper() made it FAK5BFT4SFR4HXHY
        "\u0131jklmnopabcdefgh",  # a dotless i: str.upper() made it I
        "ABCD\tEFGH-IJKL-MNOP",  # a tab: only spaces and dashes are removed
        "\tABCDEFGHIJKLMNOP", "ABCDEFGHIJKLMNOP\n",  # not even around it (strip() removed them)
        "ABCD\u00a0EFGH IJKL MNOP",  # a no-break space
        "ABCD\u2013EFGH-IJKL-MNOP",  # an en dash
        "\uff21BCDEFGHIJKLMNOP",  # a fullwidth A
        "ABCD_EFGH_IJKL_MNOP",
    ],
)  # fmt: skip
def test_bad_codes(typed: str) -> None:
    with pytest.raises(CodeError) as info:
        code_hash(typed)
    assert typed.strip() not in str(info.value) or not typed.strip()


# -- properties of the input rule (revision 2) --------------------------------------------------------------------
BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
CODES = st.text(alphabet=st.sampled_from(BASE32), min_size=16, max_size=16)


@given(CODES, st.data())
def test_any_ascii_case_and_any_spaces_and_dashes_give_the_code(code: str, data: st.DataObject) -> None:
    typed = ""
    for c in code:
        typed += data.draw(st.text(alphabet=st.sampled_from(" -"), max_size=3))
        typed += c.lower() if data.draw(st.booleans()) else c
    typed += data.draw(st.text(alphabet=st.sampled_from(" -"), max_size=3))
    assert normalize_code(typed) == code


OTHER = st.sampled_from("\u017f\u0131\u212a\uff21\t\n\r\u00a0\u2013\u2010_=01") | st.characters(
    exclude_characters=BASE32 + BASE32.lower() + " -"
)


@given(CODES, st.integers(0, 16), OTHER)
def test_any_other_character_anywhere_makes_the_code_unknown(code: str, at: int, other: str) -> None:
    """A tab, a Unicode space or dash, a letter that Unicode folds to base32 (the long s, the dotless i, the Kelvin
    sign, fullwidth forms): none is ignored, none is read as a base32 character."""
    with pytest.raises(CodeError):
        normalize_code(code[:at] + other + code[at:])
    with pytest.raises(CodeError):
        normalize_code(code[:at] + other + code[at + 1 :])


@given(st.text())
def test_a_normalized_code_is_exactly_the_ascii_letters_and_digits_typed(text: str) -> None:
    try:
        code = normalize_code(text)
    except CodeError:
        return
    assert text.isascii()
    assert code == "".join(c for c in text if c not in " -").upper()


def test_enrollment_uri_raw_characters_are_refused_not_deleted() -> None:
    """Revision 2: `urlsplit` deleted a raw tab, CR or LF, and `strip()` the whitespace around the URI, so a code
    with a tab in it was read as a valid code."""
    good = "securelink://enroll?server=https%3A%2F%2Fpbx&code=ABCD-EFGH-IJKL-MNOP"
    assert parse_enrollment_uri(good) == ("https://pbx", CODE)
    assert parse_enrollment_uri(good.replace("-", "%20"))[1] == CODE  # spaces, percent-encoded
    assert parse_enrollment_uri(good.replace("enroll", "ENROLL").replace("securelink", "SecureLink"))[1] == CODE
    for bad in (good.replace("EFGH", "EF\tGH"), good.replace("EFGH", "EF\nGH"), good + "\n", " " + good,
                good.replace("-", " "), good.replace("-", "%09"), good.replace("EFGH", "EFG%C5%BF"),
                good.replace("enroll", "enro\u212al"), good.replace("EFGH", "EFG\u017f")):  # fmt: skip
        with pytest.raises(CodeError):
            parse_enrollment_uri(bad)


def test_enrollment_uri_round_trip() -> None:
    uri = enrollment_uri("https://pbx.example.com:8443", CODE)
    assert uri == "securelink://enroll?server=https%3A%2F%2Fpbx.example.com%3A8443&code=ABCD-EFGH-IJKL-MNOP"
    assert parse_enrollment_uri(uri) == ("https://pbx.example.com:8443", CODE)
    assert parse_enrollment_uri(uri + "&future=1") == ("https://pbx.example.com:8443", CODE)  # unknown: ignored
    assert parse_enrollment_uri("securelink://enroll?code=abcdefghijklmnop&server=https://[::1]:8443/")[1] == CODE


@given(st.binary(min_size=10, max_size=10), st.sampled_from(["pbx.example.com", "10.0.0.1:443", "[2001:db8::1]:8443"]))
def test_round_trip_any_code(raw: bytes, host: str) -> None:
    code = new_code(lambda _n: raw)
    assert parse_enrollment_uri(enrollment_uri(server_url(host), code)) == (f"https://{host}", code)


@pytest.mark.parametrize(
    "uri",
    [
        "securelink://provision?server=https%3A%2F%2Fpbx&code=ABCDEFGHIJKLMNOP",
        "https://enroll?server=https%3A%2F%2Fpbx&code=ABCDEFGHIJKLMNOP",
        "securelink://enroll?server=http%3A%2F%2Fpbx&code=ABCDEFGHIJKLMNOP",  # not https
        "securelink://enroll?server=https%3A%2F%2Fpbx%2Fapi&code=ABCDEFGHIJKLMNOP",  # a path
        "securelink://enroll?server=https%3A%2F%2Fu%40pbx&code=ABCDEFGHIJKLMNOP",  # userinfo
        "securelink://enroll?server=https%3A%2F%2Fpbx",
        "securelink://enroll?code=ABCDEFGHIJKLMNOP",
        "securelink://enroll?server=https%3A%2F%2Fpbx&code=ABCDEFGHIJKLMNOP&code=ABCDEFGHIJKLMNOP",
        "securelink://enroll?server=https%3A%2F%2Fpbx&code=ABCDEFGHIJKLMNO",
        "securelink://enroll?server=https%3A%2F%2Fpbx&code=%ZZ",
        "securelink://enroll?server=https%3A%2F%2Fpbx&code",
        "securelink://enroll?server=https%3A%2F%2Fpbx&code=ABCDEFGHIJKLMNOP#x",
    ],
)
def test_bad_uris(uri: str) -> None:
    with pytest.raises(CodeError):
        parse_enrollment_uri(uri)


@pytest.mark.parametrize("host", ["pbx.example.com", "pbx.example.com:8443", "10.1.2.3:443", "[::1]:8443", "localhost"])
def test_public_hosts(host: str) -> None:
    assert check_public_host(host) == host
    assert server_url(host) == f"https://{host}"


@pytest.mark.parametrize("host", ["", "https://pbx", "pbx/x", "pbx:0", "pbx:70000", "pbx:", "-pbx", "::1", "pbx .com"])
def test_bad_public_hosts(host: str) -> None:
    with pytest.raises(CodeError):
        check_public_host(host)
