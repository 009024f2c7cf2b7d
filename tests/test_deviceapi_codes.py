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
                  "A-B-C-D-EFGHIJKLMNOP"):  # fmt: skip
        assert normalize_code(typed) == CODE
        assert code_hash(typed) == hashlib.sha256(CODE.encode()).hexdigest()


@pytest.mark.parametrize("typed", ["", "ABCDEFGHIJKLMNO", "ABCDEFGHIJKLMNOPQ", "ABCDEFGHIJKLMNO1", "ABCDEFGH IJKLMNOP",
                                   "ABCDEFGHIJKLMNO=", "ÀBCDEFGHIJKLMNOP"])  # fmt: skip
def test_bad_codes(typed: str) -> None:
    with pytest.raises(CodeError) as info:
        code_hash(typed)
    assert typed.strip() not in str(info.value) or not typed.strip()


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
