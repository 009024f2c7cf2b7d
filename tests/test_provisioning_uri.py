"""Reading the one-time URI exactly as SLK1.md 1.1 revision 2 says ("Provisioning parameters"): raw characters,
fragment, case of scheme and host, empty segments, unknown and repeated parameters, numbers without leading zeros,
limits, the canonical secret, `dial` only for `dnis`. Each example marked "revision 1" was read otherwise before."""

from __future__ import annotations

import string
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterisk_securelink import config
from asterisk_securelink.core import b64
from asterisk_securelink.core.provisioning import Provisioning, ProvisioningError, params_document, parse
from asterisk_securelink.provision import device_params

SECRET = bytes(range(32))
B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
P = Provisioning(30, 0, "+1NXXNXXXXXX", "XXXXXXXXXX", 1, 1, key_id="kabc", secret=SECRET)
DNIS = Provisioning(30, 0, "555XXXXXXX", "XXXXXXXXXX", 1, 1, ("0",), "dnis", "*9#", key_id="kabc", secret=SECRET)
URI = P.uri()


def refused(uri: str) -> None:
    with pytest.raises(ProvisioningError) as caught:
        parse(uri)
    assert B64 not in str(caught.value) and "kabc" not in str(caught.value)  # never echoes the URI


# -- raw characters and the fragment ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "uri",
    [
        URI.replace("period=30", "peri\tod=30"),  # revision 1: urlsplit deleted the tab, read as period=30
        URI.replace("in=%2B1NXXNXXXXXX", "in=%2B1NX\tXNXXXXXX"),  # revision 1: read as +1NXXNXXXXXX
        URI.replace("in=%2B1NXXNXXXXXX", "in=%2B1NXX\r\nNXXXXXX"),
        URI.replace("key_id=kabc", "key_\nid=kabc"),
        URI.replace("securelink://", "secure\nlink://"),
        URI.replace("provision?", "provi\rsion?"),
        URI + "\n",
        URI + "\r\n",
        "\t" + URI,
        " " + URI,
        URI + " ",
        URI.replace("&period", " &period"),
        URI + "&x-vendor=a b",  # a raw space in an unknown parameter too
        URI + "&x-vendor=\u00e9",  # raw non-ASCII (an IRI, not a URI)
        URI + "&x-vendor=[1]",  # '[' ']' only in an IP literal host
        URI + "&x-vendor=\x00",
        URI + "&x-vendor=\x7f",
        URI + "&x-vendor=<a>",
        URI + '&x-vendor="',
    ],
)
def test_a_character_rfc_3986_does_not_allow_raw_refuses_the_uri(uri: str) -> None:
    refused(uri)


@pytest.mark.parametrize("uri", [URI + "#", URI + "#frag", URI.replace("&t0=0", "#&t0=0"), URI + "&x=1#"])
def test_a_fragment_refuses_the_uri(uri: str) -> None:
    refused(uri)  # revision 1: urlsplit took the fragment off and read the rest


def test_an_escaped_hash_is_a_value_not_a_fragment() -> None:
    assert parse(DNIS.uri()).dial == "*9#" and "dial=%2A9%23" in DNIS.uri()


# -- scheme, host and case -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "head",
    ["SECURELINK://PROVISION?", "SecureLink://Provision?", "securelink://PROVISION?", "securelink://provision/?"],
)
def test_the_scheme_and_host_compare_ascii_case_insensitively(head: str) -> None:
    assert parse(head + URI.split("?", 1)[1]) == P  # revision 1: PROVISION was refused


@pytest.mark.parametrize(
    "head",
    ["\u017fecurelink://provision?", "securelin\u212a://provision?", "securelink://provi\u017fion?",
     "securelink://prov\u0131sion?", "securelink://provision.?", "securelink://user@provision?",
     "securelink://provision:1?", "securelink:/provision?", "securelink:provision?", "securelink://provision/x?",
     "securelink://pr%6Fvision?", "https://provision?"],
)  # fmt: skip
def test_no_unicode_folding_and_nothing_but_the_host(head: str) -> None:
    refused(head + URI.split("?", 1)[1])


@pytest.mark.parametrize(("old", "new"), [("mode=ani", "mode=ANI"), ("period=30", "PERIOD=30"), ("v=1.1", "V=1.1")])
def test_parameter_names_and_values_are_case_sensitive(old: str, new: str) -> None:
    refused(URI.replace(old, new))  # `PERIOD` is an unknown parameter: `period` is then missing


# -- segments and parameters -----------------------------------------------------------------------------------------
def test_empty_segments_are_ignored() -> None:
    assert parse(URI.replace("&", "&&") + "&") == P
    assert parse(URI.replace("?", "?&")) == P


def test_unknown_parameters_are_ignored_even_repeated_or_empty() -> None:
    assert parse(URI + "&x-vendor=1&x-vendor=2&later=") == P  # revision 1: a repeated unknown one refused the URI
    assert parse(URI + "&alg=HOTP&device=x&alg=1") == P  # 1.0's parameters mean nothing in a 1.1 URI
    old = f"securelink://provision?v=1&key_id=kabc&secret={B64}&period=30&in=XXXXXXXXXX&out=XXXXXXXXXX"
    assert parse(old + "&device=7&x=1&x=2").device_id == 7
    for bad in ("&device=7&device=8", "&device=07", "&alg=HOTP"):  # in a 1.0 URI they are 1.0's parameters
        refused(old + bad)


@pytest.mark.parametrize(
    "uri",
    [
        URI.replace("t0=0", "t0=00"),
        URI.replace("look_ahead=1", "look_ahead=01"),  # revision 1: accepted
        URI.replace("period=30", "period=030"),
        URI.replace("look_behind=1", "look_behind=001"),
        URI.replace("t0=0", "t0=01790000000"),
        URI.replace("t0=0", "t0=%2B0"),
        URI.replace("t0=0", "t0=0x1"),
        URI.replace("t0=0", "t0=18446744073709552"),  # t0 * 1000 at 2^64: no time has a key
        URI.replace("period=30", "period=4"),
        URI.replace("period=30", "period=61"),
        URI.replace("look_ahead=1", "look_ahead=11"),
        URI.replace("look_behind=1", "look_behind="),
        URI + "&behind=11",
        URI + "&ahead=x",
        URI + "&behind=01",  # named by the spec: checked though unused
        URI + "&access=12155550199",  # revision 1: ignored for ani
        URI + "&dial=9a",
        URI + "&dial=" + "9" * 17,
        URI.replace("trunk=", "trunk=" + "%2C".join(["0"] * 17)),
        URI.replace("trunk=", "trunk=123456789"),
        URI.replace("trunk=", "trunk=0%2C"),
        URI + "&mode=ani",  # a named parameter twice
        URI.replace("&t0=0", "&t0"),  # a named parameter without '='
    ],
)
def test_a_named_parameter_outside_its_rules_refuses_the_uri(uri: str) -> None:
    refused(uri)


def test_numbers_may_be_zero_and_look_up_to_10() -> None:
    p = replace(P, t0=0, look_behind=0, look_ahead=10, trunk=("0",) * 16)
    assert parse(p.uri()) == p and "t0=0&" in p.uri()
    big = replace(P, t0=1_790_000_000)
    assert parse(big.uri()).t0 == 1_790_000_000


# -- the secret ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "secret",
    [B64 + "=",  # padded (revision 1: accepted)
     B64[:-1] + "9",  # '9' sets an unused bit: the same bytes spelled otherwise (revision 1: accepted)
     b64.encode(bytes(65)),  # 65 bytes (revision 1: accepted)
     b64.encode(bytes(15)), B64 + "%3D", B64[:-1] + "%2F", B64[:-1] + "+", ""],
)  # fmt: skip
def test_the_secret_must_be_canonical_unpadded_base64url_of_16_to_64_bytes(secret: str) -> None:
    refused(URI.replace(f"secret={B64}", f"secret={secret}"))


@given(st.binary(min_size=16, max_size=64))
def test_a_canonical_secret_round_trips_and_no_other_spelling_is_read(secret: bytes) -> None:
    p = replace(P, secret=secret)
    text = b64.encode(secret)
    assert f"secret={text}&" in p.uri() and parse(p.uri()).secret == secret
    unused = (-len(secret) * 8) % 6  # bits of the last character that carry nothing
    if unused:
        alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
        other = alphabet[alphabet.index(text[-1]) | 1]  # the lowest unused bit set
        refused(p.uri().replace(f"secret={text}&", f"secret={text[:-1]}{other}&"))
    refused(p.uri().replace(f"secret={text}&", f"secret={text}%3D&"))


@pytest.mark.parametrize("size", [15, 65])
def test_a_provisioning_holds_a_secret_of_16_to_64_bytes(size: int) -> None:
    with pytest.raises(ProvisioningError, match=r"16\.\.64"):
        replace(P, secret=bytes(size))


# -- dial ------------------------------------------------------------------------------------------------------------
def test_uri_writes_no_dial_for_ani() -> None:
    p = replace(P, dial="9")  # a dial prefix configured with mode ani (revision 1: written as dial=9)
    assert p.dial == "" and "dial" not in p.uri() and parse(p.uri()) == p
    assert parse(URI + "&dial=9").dial == ""  # read from a URI: dial means nothing for ani


@pytest.mark.parametrize("dial", ["", "9", "*9#", "0" * 16, "#31#"])
def test_dial_is_0_to_16_of_digits_star_hash(dial: str) -> None:
    p = replace(DNIS, dial=dial)
    assert parse(p.uri()).dial == dial
    assert p.uri().endswith("&mode=dnis&dial=" + dial.replace("*", "%2A").replace("#", "%23"))


@pytest.mark.parametrize("dial", ["0" * 17, "+9", "9 ", "a", "\u0669"])
def test_a_bad_dial_is_refused(dial: str) -> None:
    with pytest.raises(ProvisioningError, match="dial"):
        replace(DNIS, dial=dial)


# -- properties ------------------------------------------------------------------------------------------------------
_CONTROL = st.sampled_from([chr(c) for c in range(0x20)] + ["\x7f", " ", "\u0085", "\u00a0", "\u2028", "\ufeff"])


@given(st.integers(min_value=0, max_value=len(URI)), _CONTROL)
def test_any_raw_control_character_anywhere_refuses_the_uri(at: int, control: str) -> None:
    refused(URI[:at] + control + URI[at:])


@given(st.integers(min_value=0, max_value=len(DNIS.uri())), _CONTROL)
def test_any_raw_control_character_refuses_a_dnis_uri_too(at: int, control: str) -> None:
    uri = DNIS.uri()
    refused(uri[:at] + control + uri[at:])


_FORMATS = st.sampled_from(["XXXXXXXXXX", "+1NXXNXXXXXX", "555XXXXXXX", "9ZXXXXXXXX", "+4420XXXXXXXX", "+" + "Z" * 20])
_KEY_ID = st.text(alphabet=string.ascii_letters + string.digits + "._~-", min_size=1, max_size=64)
_TRUNK = st.lists(st.text(alphabet=string.digits, min_size=1, max_size=8), max_size=16).map(tuple)
_ACCESS_NUMBER = st.text(alphabet=string.digits, min_size=8, max_size=15).map(lambda d: "+" + d)


@st.composite
def provisionings(draw: st.DrawFn) -> Provisioning:
    mode = draw(st.sampled_from(["ani", "dnis", "dtmf", "intent"]))
    return Provisioning(
        draw(st.integers(5, 60)),
        draw(st.integers(0, 2_000_000_000)),
        draw(_FORMATS),
        draw(_FORMATS),
        draw(st.integers(0, 10)),
        draw(st.integers(0, 10)),
        draw(_TRUNK),
        mode,
        draw(st.text(alphabet="0123456789*#", max_size=16)) if mode == "dnis" else "",
        draw(_ACCESS_NUMBER) if mode in ("dtmf", "intent") else "",
        key_id=draw(_KEY_ID),
        secret=draw(st.binary(min_size=16, max_size=64)),
    )


@given(provisionings())
def test_uri_then_parse_gives_the_same_provisioning(p: Provisioning) -> None:
    uri = p.uri()
    assert parse(uri) == p
    assert all(c in string.ascii_letters + string.digits + "-._~%&=:/?_" for c in uri)  # only what is safe raw
    assert ("&dial=" in uri) is (p.mode == "dnis") and ("&access=" in uri) is (p.mode in ("dtmf", "intent"))


@given(provisionings(), st.lists(st.booleans(), min_size=len("securelink://provision"), max_size=30))
def test_any_ascii_case_of_scheme_and_host_reads_the_same(p: Provisioning, upper: list[bool]) -> None:
    head, rest = p.uri().split("?", 1)
    mixed = "".join(c.upper() if up else c for c, up in zip(head, upper, strict=False))
    assert parse(mixed + "?" + rest) == p


@pytest.mark.parametrize(
    ("mode", "prefix", "told", "dial"),
    [("ani", "8", "ani", ""), ("dnis", "8", "dnis", "8"), ("either", "8", "dnis", "8"), ("either", "", "ani", ""),
     ("dnis", "", "dnis", "")],
)  # fmt: skip
def test_the_platform_gives_dial_to_dnis_phones_only(tmp_path: Path, mode: str, prefix: str, told: str,
                                                     dial: str) -> None:  # fmt: skip
    cfg = config.build({"inbound": {"mode": mode, "dial_prefix": prefix}}, {}, tmp_path)
    params = device_params(cfg)
    assert (params.mode, params.dial) == (told, dial)  # revision 1 code: ani was given dial = 8
    assert params_document(params)["dial"] == dial
