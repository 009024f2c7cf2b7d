"""`core.b64`: unpadded base64url, written once for secrets and call keys in URIs and JSON."""

from __future__ import annotations

import base64

import pytest

from asterisk_securelink.core import b64


@pytest.mark.parametrize("size", [0, 1, 2, 3, 16, 32, 33])
def test_encode_is_urlsafe_base64_without_padding(size: int) -> None:
    data = bytes(range(250, 256)) * 6
    data = data[:size]
    text = b64.encode(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert text == base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
    if size:
        assert b64.decode(text) == data


def test_decode_reads_the_urlsafe_alphabet() -> None:
    assert b64.decode("-_8") == b"\xfb\xff"


@pytest.mark.parametrize("text", ["", "A", "AAAAA", "AB+/", "AB CD", "AA==", "AA=", "é", "AA\n"])
def test_decode_refuses_what_is_not_unpadded_base64url(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        b64.decode(text)
    assert str(caught.value) == "not unpadded base64url"  # the text may be a secret: never quoted


def test_decode_refuses_a_value_that_is_not_text() -> None:
    with pytest.raises(ValueError, match="not unpadded base64url"):
        b64.decode(b"AAAA")  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "data"), [("AA==", b"\x00"), ("AAA=", b"\x00\x00"), ("AAAA", b"\x00\x00\x00")])
def test_padding_is_taken_only_when_asked_for(text: str, data: bytes) -> None:
    assert b64.decode(text, padding=True) == data


@pytest.mark.parametrize("text", ["AAAAA=", "AA===", "=", "A=A"])
def test_padding_does_not_rescue_a_bad_length_or_a_misplaced_equals_sign(text: str) -> None:
    with pytest.raises(ValueError, match="not unpadded base64url"):
        b64.decode(text, padding=True)
