"""Provisioning parameters (SLK1.md 1.1, "Provisioning parameters") and the one-time URI that carries them."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from asterisk_securelink.core.provisioning import DeviceParams, Provisioning, ProvisioningError, params_document, parse

SECRET = bytes(range(32))
B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
P = Provisioning(30, 0, "+1NXXNXXXXXX", "XXXXXXXXXX", 1, 1, key_id="kabc", secret=SECRET)
DNIS = Provisioning(
    5, 1_700_000_000, "555XXXXXXX", "+4420XXXXXXXX", 2, 1, trunk=("0", "00", "011", "1"), mode="dnis", dial="9",
    key_id="k7Q2-alice.iphone~2", secret=SECRET,
)  # fmt: skip
SPEC_NAMES = ["v", "key_id", "secret", "period", "t0", "in", "out", "look_behind", "look_ahead", "trunk", "mode"]


def names(uri: str) -> list[str]:
    return [part.split("=")[0] for part in urlsplit(uri).query.split("&")]


def test_round_trip() -> None:
    uri = P.uri()
    assert uri.startswith("securelink://provision?v=1.1&")
    assert "%2B1NXXNXXXXXX" in uri  # '+' is escaped, so it does not turn into a space
    assert parse(uri) == P
    assert parse(DNIS.uri()) == DNIS


def test_every_parameter_of_the_spec_exactly_once() -> None:
    assert names(P.uri()) == SPEC_NAMES  # mode ani: no dial
    assert names(DNIS.uri()) == [*SPEC_NAMES, "dial"]
    assert (
        P.uri() == f"securelink://provision?v=1.1&key_id=kabc&secret={B64}&period=30&t0=0&in=%2B1NXXNXXXXXX"
        "&out=XXXXXXXXXX&look_behind=1&look_ahead=1&trunk=&mode=ani"
    )


def test_values_are_percent_encoded_per_rfc_3986() -> None:
    uri = DNIS.uri()
    assert "trunk=0%2C00%2C011%2C1" in uri and "out=%2B4420XXXXXXXX" in uri and "dial=9" in uri
    assert "key_id=k7Q2-alice.iphone~2" in uri  # the key_id charset is unreserved: never encoded
    q = {k: v[0] for k, v in parse_qs(urlsplit(uri).query, keep_blank_values=True).items()}
    assert q["out"] == "+4420XXXXXXXX" and q["trunk"] == "0,00,011,1"  # a form decoder reads it right too


def test_a_bare_plus_is_a_plus_not_a_space() -> None:
    # RFC 3986 decoding: '+' is literal (a form decoder would make it a space, which no format accepts)
    assert parse(P.uri().replace("%2B", "+")) == P


def test_defaults_the_platform_passes_from_config() -> None:
    p = Provisioning(30, 0, "XXXXXXXXXX", "XXXXXXXXXX", key_id="k1", secret=SECRET)
    assert (p.look_behind, p.look_ahead, p.trunk, p.mode, p.dial) == (1, 1, (), "ani", "")
    listed = Provisioning(30, 0, "XXXXXXXXXX", "XXXXXXXXXX", trunk=["0", "011"], key_id="k1", secret=SECRET)
    assert listed.trunk == ("0", "011")  # a list from the config is kept as a tuple


def test_dnis_with_an_empty_dial_dials_the_key_itself() -> None:
    p = Provisioning(30, 0, "555XXXXXXX", "XXXXXXXXXX", mode="dnis", key_id="k1", secret=SECRET)
    assert p.uri().endswith("&mode=dnis&dial=") and parse(p.uri()) == p


def test_repr_hides_the_secret() -> None:
    assert SECRET.hex() not in repr(P) and B64 not in repr(P) and "secret=<hidden>" in repr(P)


def test_a_1_0_uri_is_still_accepted() -> None:
    old = (
        f"securelink://provision?v=1&alg=SLK1&device=7&key_id=vector&secret={B64}&period=30&t0=0"
        "&in=%2B1NXXNXXXXXX&out=XXXXXXXXXX&behind=1&ahead=0"
    )
    p = parse(old)
    assert (p.key_id, p.secret, p.period, p.t0, p.inbound_format, p.outbound_format) == (
        "vector", SECRET, 30, 0, "+1NXXNXXXXXX", "XXXXXXXXXX"
    )  # fmt: skip
    assert (p.look_behind, p.look_ahead, p.trunk, p.mode, p.dial, p.device_id) == (1, 0, (), "ani", "", 7)
    minimal = f"securelink://provision?v=1&key_id=a&secret={B64}&period=30&in=XXXXXXXXXX&out=XXXXXXXXXX"
    assert (parse(minimal).t0, parse(minimal).look_behind, parse(minimal).look_ahead) == (0, 1, 0)
    assert parse(old).uri().startswith("securelink://provision?v=1.1&")  # re-issued as 1.1


def test_unknown_parameters_are_ignored() -> None:
    assert parse(P.uri() + "&x-vendor=1") == P


def drop(uri: str, name: str) -> str:
    head, query = uri.split("?")
    return head + "?" + "&".join(part for part in query.split("&") if not part.startswith(f"{name}="))


@pytest.mark.parametrize(
    "uri",
    [
        "https://provision?v=1.1",
        "securelink://other?v=1.1",
        "securelink://provision/x?" + P.uri().split("?")[1],
        "securelink://provision?v=2&key_id=a",
        "securelink://provision?v=1.0&key_id=a",
        P.uri().replace("period=30", "period=3"),
        P.uri().replace("period=30", "period=+30"),
        P.uri().replace("period=30", "period=%EF%BC%93%EF%BC%90"),  # fullwidth digits
        P.uri().replace("t0=0", "t0=-1"),
        P.uri().replace("look_ahead=1", "look_ahead=11"),
        P.uri().replace("look_behind=1", "look_behind=x"),
        P.uri().replace("in=%2B1NXXNXXXXXX", "in=XX"),
        P.uri().replace("in=%2B1NXXNXXXXXX", "in=%2BXXXXXXXXXXXXXXXXXXXX"),  # above 2^64
        P.uri().replace("key_id=kabc", "key_id=a%20b"),
        P.uri().replace("key_id=kabc", "key_id=a%2Fb"),
        P.uri().replace("key_id=kabc", "key_id=" + "k" * 65),
        P.uri().replace("key_id=kabc", "key_id="),
        P.uri().replace("trunk=", "trunk=0%2C%2C1"),
        P.uri().replace("trunk=", "trunk=%2B1"),
        P.uri().replace("mode=ani", "mode=either"),
        P.uri().replace("mode=ani", "mode=dnis"),  # dnis needs dial
        DNIS.uri().replace("dial=9", "dial=9a"),
        P.uri().replace(f"secret={B64}", "secret=AAAA"),  # too short
        P.uri().replace(f"secret={B64}", "secret=" + B64.replace("A", "*", 1)),
        P.uri().replace(f"secret={B64}", "secret=" + B64[:-1] + "%2F"),  # base64, not base64url
        P.uri() + "&v=1.1",  # a parameter twice
        P.uri() + "&trunk=0",
        P.uri().replace("key_id=kabc", "key_id=kabc&key_id=kabd"),
        P.uri().replace("t0=0", "t0=%zz"),
        P.uri().replace("t0=0", "t0"),
        P.uri().replace("key_id=kabc", "key_id=%FF"),
        *[drop(P.uri(), name) for name in SPEC_NAMES],
        f"securelink://provision?v=1&alg=HOTP&key_id=a&secret={B64}&period=30&in=XXXXXXXXXX&out=XXXXXXXXXX",
        f"securelink://provision?v=1&key_id=a&secret={B64}&period=30&in=XXXXXXXXXX",
        f"securelink://provision?v=1&key_id=a&secret={B64}&period=30&in=XXXXXXXXXX&out=XXXXXXXXXX&behind=1&behind=2",
    ],
)
def test_invalid(uri: str) -> None:
    with pytest.raises(ProvisioningError) as refused:
        parse(uri)
    assert B64 not in str(refused.value)


@pytest.mark.parametrize(
    "fields",
    [{"key_id": "has space"}, {"period": 61}, {"t0": -1}, {"look_ahead": -1}, {"mode": "DNIS"}, {"dial": "+9"},
     {"trunk": ("1", "x")}, {"secret": b"short"}, {"inbound_format": "X"}],
)  # fmt: skip
def test_a_provisioning_is_checked_when_it_is_made(fields: dict[str, object]) -> None:
    base: dict[str, object] = {"key_id": "k1", "secret": SECRET, "period": 30, "t0": 0,
                               "inbound_format": "XXXXXXXXXX", "outbound_format": "XXXXXXXXXX"}  # fmt: skip
    with pytest.raises(ProvisioningError):
        Provisioning(**{**base, **fields})  # type: ignore[arg-type]


def test_the_parameters_written_as_json_are_the_device_apis_fields_in_the_specs_order() -> None:
    """One writer for the device API's answers and the device's state file (DEVICE-API.md, `POST /v1/enroll`)."""
    assert json.dumps(params_document(DNIS)) == (
        '{"period": 5, "t0": 1700000000, "in": "555XXXXXXX", "out": "+4420XXXXXXXX", "look_behind": 2, '
        '"look_ahead": 1, "trunk": "0,00,011,1", "mode": "dnis", "dial": "9"}'
    )
    shared = DeviceParams(5, 1_700_000_000, "555XXXXXXX", "+4420XXXXXXXX", 2, 1, ("0", "00", "011", "1"), "dnis", "9")
    assert params_document(shared) == params_document(DNIS)


def test_a_provisioning_is_the_shared_parameters_given_a_key_id_and_secret() -> None:
    shared = DeviceParams(5, 1_700_000_000, "555XXXXXXX", "+4420XXXXXXXX", 2, 1, ["0", "00", "011", "1"], "dnis", "9")
    p = Provisioning.of(shared, key_id="k7Q2-alice.iphone~2", secret=SECRET, device_id=3)
    assert p == DNIS and p.device_id == 3 and p.trunk == ("0", "00", "011", "1")
    with pytest.raises(ProvisioningError):
        Provisioning.of(shared, key_id="k1", secret=b"short")  # checked like any provisioning
