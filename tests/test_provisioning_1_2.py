"""SLK1 1.2 provisioning (SLK1.md, "1.2 provisioning"; CALLING.md, "Provisioning: SLK1 1.2"): `v=1.2`, `mode` `dtmf`
or `intent`, `access` instead of `dial`; a 1.1 phone never receives a 1.2 value; what a platform offers by version."""

from __future__ import annotations

from dataclasses import replace

import pytest

from asterisk_securelink import config
from asterisk_securelink.core.provisioning import (
    DeviceParams,
    Offer,
    Provisioning,
    ProvisioningError,
    params_document,
    parse,
    phone_speaks_1_2,
)
from asterisk_securelink.provision import access_params, device_params, intent_settings, offer

SECRET = bytes(range(32))
B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
ACCESS = "+12155550199"
ANI = Provisioning(30, 0, "+1NXXNXXXXXX", "XXXXXXXXXX", 1, 1, key_id="kabc", secret=SECRET)
DTMF = replace(ANI, mode="dtmf", access=ACCESS)
INTENT = replace(ANI, mode="intent", access=ACCESS, trunk=("0", "011"))
HEAD = f"securelink://provision?v=1.2&key_id=kabc&secret={B64}&period=30&t0=0&in=%2B1NXXNXXXXXX&out=XXXXXXXXXX"


def test_the_1_2_uris_byte_for_byte() -> None:
    assert DTMF.uri() == HEAD + "&look_behind=1&look_ahead=1&trunk=&mode=dtmf&access=%2B12155550199"
    assert INTENT.uri() == HEAD + "&look_behind=1&look_ahead=1&trunk=0%2C011&mode=intent&access=%2B12155550199"


def test_ani_and_dnis_stay_1_1() -> None:
    assert ANI.version == "1.1" and ANI.uri().startswith("securelink://provision?v=1.1&")
    assert "access" not in ANI.uri()
    assert (DTMF.version, INTENT.version) == ("1.2", "1.2")


def test_round_trip() -> None:
    assert parse(DTMF.uri()) == DTMF
    assert parse(INTENT.uri()) == INTENT
    assert parse(DTMF.uri()).access == ACCESS


def test_a_1_2_uri_for_ani_or_dnis_is_read_as_before() -> None:
    uri = ANI.uri().replace("v=1.1", "v=1.2") + "&access=%2B12155550199"  # access means nothing for ani
    assert parse(uri) == ANI


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        (HEAD + "&look_behind=1&look_ahead=1&trunk=&mode=dtmf", "access"),  # access missing
        (HEAD + "&look_behind=1&look_ahead=1&trunk=&mode=dtmf&access=%2B12155550199&dial=9", "dial"),
        (HEAD + "&look_behind=1&look_ahead=1&trunk=&mode=dtmf&access=12155550199", "access"),  # no +
        (HEAD + "&look_behind=1&look_ahead=1&trunk=&mode=dtmf&access=%2B1215555", "access"),  # 7 digits
        (HEAD + "&look_behind=1&look_ahead=1&trunk=&mode=dtmf&access=%2B1234567890123456", "access"),  # 16 digits
        (HEAD + "&look_behind=1&look_ahead=1&trunk=&mode=intent&access=%2B12155550199&access=%2B12155550198", "once"),
        (HEAD.replace("v=1.2", "v=1.1") + "&look_behind=1&look_ahead=1&trunk=&mode=dtmf&access=%2B12155550199",
         "1.2"),  # a 1.1 URI knows no dtmf
        (HEAD + "&look_behind=1&look_ahead=1&trunk=&mode=callback&access=%2B12155550199", "mode"),
    ],
)  # fmt: skip
def test_invalid_1_2_uris(uri: str, why: str) -> None:
    with pytest.raises(ProvisioningError, match=why):
        parse(uri)


@pytest.mark.parametrize(
    "fields",
    [{"mode": "dtmf"}, {"mode": "intent", "access": "+1215"}, {"mode": "dtmf", "access": ACCESS, "dial": "9"},
     {"mode": "ani", "access": ACCESS}],
)  # fmt: skip
def test_a_provisioning_is_checked(fields: dict[str, object]) -> None:
    with pytest.raises(ProvisioningError):
        replace(ANI, **fields)  # type: ignore[arg-type]


def test_the_json_document_has_access_instead_of_dial() -> None:
    doc = params_document(DTMF)
    assert list(doc)[-2:] == ["mode", "access"] and doc["access"] == ACCESS and "dial" not in doc
    assert list(params_document(ANI))[-2:] == ["mode", "dial"]


@pytest.mark.parametrize(
    ("v", "speaks"), [(None, False), ("1", False), ("1.0", False), ("1.1", False), ("1.2", True), ("1.10", True),
                      ("2", True)]
)  # fmt: skip
def test_the_phone_s_version(v: str | None, speaks: bool) -> None:
    assert phone_speaks_1_2(v) is speaks


@pytest.mark.parametrize("v", ["", "1.2.0", "v1.2", "1,2", 1.2, True])
def test_a_version_that_is_not_one(v: object) -> None:
    with pytest.raises(ProvisioningError):
        phone_speaks_1_2(v)


def test_an_offer_by_version() -> None:
    legacy = DeviceParams(30, 0, "+1NXXNXXXXXX", "XXXXXXXXXX")
    access = replace(legacy, mode="intent", access=ACCESS)
    assert Offer(legacy, access).for_phone(True) == access
    assert Offer(legacy, access).for_phone(False) == legacy
    assert Offer(legacy).for_phone(True) == legacy
    assert Offer(None, access).for_phone(False) is None  # 409 upgrade_required


def test_the_platform_s_offer_follows_calling(tmp_path: object) -> None:
    def cfg(**calling: object) -> config.Config:
        return config.build({"calling": calling}, {}, tmp_path)  # type: ignore[arg-type]

    none = cfg()
    assert offer(none) == Offer(device_params(none), None) and access_params(none) is None
    pool = ["+12155550199", "+12155550198"]
    on = cfg(access_numbers=pool)
    assert access_params(on) == replace(device_params(on), mode="intent", access="+12155550199")
    off = cfg(access_numbers=pool, intent="off")
    assert access_params(off) == replace(device_params(off), mode="dtmf", access="+12155550199")
    s = intent_settings(cfg(access_numbers=pool, intent_ttl=45, intent_quiet=60))
    assert (s.access_numbers, s.on, s.ttl_s, s.quiet_s, s.offered) == (tuple(pool), True, 45, 60, True)
    assert intent_settings(off).offered is False
