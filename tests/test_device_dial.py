"""The reference client on the access number (CALLING.md "DTMF", "Intent"): the DTMF dial string `ACCESS,,KEY,DEST`
and its `tel:` URI (`device/dial.py`), and `securelink-device dial|intent` against a real loopback TLS server with an
in-memory directory: an intent's number, and the fall back to DTMF on 409 use_dtmf, 503 and too little time left."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from support.api_server import SKEW_MS, Server, cli
from support.deviceapi_fakes import ACCESS, PARAMS, PARAMS_1_2, MemoryDirectory, self_signed
from support.keys import MASTER

from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.provisioning import Offer, Provisioning
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret, now_ms
from asterisk_securelink.device import api_client
from asterisk_securelink.device.dial import DialError, dtmf_dial_string, intent_usable, tel_uri
from asterisk_securelink.deviceapi.codes import enrollment_uri
from asterisk_securelink.deviceapi.ports import IntentOutcome, IntentResult, IntentSettings
from asterisk_securelink.deviceapi.server import DeviceApi, DeviceApiServer
from asterisk_securelink.deviceapi.tls import server_context

SECRET = bytes(range(32))
DTMF = Provisioning.of(replace(PARAMS_1_2, mode="dtmf"), key_id="kabc", secret=SECRET)


# -- the dial string ---------------------------------------------------------------------------------------------
def test_the_dial_string_is_access_pause_key_pause_destination() -> None:
    key = "+13582874290"  # SLK1.md: epoch 59682345, +1NXXNXXXXXX
    assert dtmf_dial_string(DTMF, key, "2001") == "+12155550199,,3582874290,2001"
    assert dtmf_dial_string(DTMF, key) == "+12155550199,,3582874290"
    assert tel_uri("+12155550199,,3582874290,2001") == "tel:+12155550199,,3582874290,2001"
    for s in (dtmf_dial_string(DTMF, key, "2001"), tel_uri(dtmf_dial_string(DTMF, key, "2001"))):
        assert "#" not in s and "*" not in s


def test_the_key_s_significant_digits_only() -> None:
    prov = replace(DTMF, inbound_format="555XXXXXXX")
    assert NumberFormat("555XXXXXXX").significant_length == 7
    assert dtmf_dial_string(prov, "5554874290", "12") == f"{ACCESS},,4874290,12"


@pytest.mark.parametrize("dest", ["", "20#1", "*2001", "1" * 21, "२००१"])
def test_bad_destinations(dest: str) -> None:
    with pytest.raises(DialError):
        dtmf_dial_string(DTMF, "+13582874290", dest)


def test_an_ani_device_has_no_dial_string() -> None:
    ani = Provisioning.of(PARAMS, key_id="kabc", secret=SECRET)
    with pytest.raises(DialError, match="provisioned for ani"):
        dtmf_dial_string(ani, "+13582874290")


def test_an_intent_is_dialled_with_15_s_left() -> None:
    assert intent_usable(15_000) and not intent_usable(14_999)
    i = api_client.Intent("i", "c", ACCESS, expires_ms=1_000_030_000, server_time_ms=1_000_000_000, received_ms=500)
    assert i.remaining_ms(500) == 30_000 and i.remaining_ms(15_500) == 15_000  # this device's clock differs


# -- securelink-device dial | intent -----------------------------------------------------------------------------
@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    cert, key = self_signed(tmp_path)
    directory = MemoryDirectory(offer=Offer(PARAMS, PARAMS_1_2), intents=IntentSettings((ACCESS,), on=True))
    directory.add("dev-0001", 1)
    api = DeviceApi(directory, public_host="pending", clock=lambda: now_ms() + SKEW_MS)
    srv = DeviceApiServer(api, "127.0.0.1", 0, server_context(cert, key))
    await srv.start()
    api.public_host = f"127.0.0.1:{srv.bound_port}"
    try:
        yield Server(directory, f"https://{api.public_host}", cert, api)
    finally:
        await srv.close()


async def enrolled(server: Server, home: Path) -> None:
    code, out, err = await cli("enroll", enrollment_uri(server.url, server.code()), "--ca", str(server.ca), "--json",
                               home=home)  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["mode"], doc["access"]) == ("intent", ACCESS)


def key_digits(epoch: int) -> str:
    return derive_key(device_secret(MASTER, "dev-0001"), Direction.INBOUND, epoch, NumberFormat("+1NXXNXXXXXX"))[-10:]


async def test_dial_prints_the_dtmf_string_with_the_next_key(server: Server, tmp_path: Path) -> None:
    await enrolled(server, tmp_path)
    code, out, err = await cli("dial", "2001", "--json", home=tmp_path)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["method"] == "dtmf"
    assert doc["dial"] == f"{ACCESS},,{key_digits(doc['epoch'])},2001" and doc["tel"] == "tel:" + doc["dial"]
    state = json.loads((tmp_path / "securelink-device" / "state.json").read_text())
    assert state["last_inbound_epoch"] == doc["epoch"]  # the key is spent by the call: recorded before it is shown
    code, _, err = await cli("dial", "20#1", home=tmp_path)
    assert code == 2 and "DEST" in err


async def test_intent_prints_the_number_to_dial(server: Server, tmp_path: Path) -> None:
    await enrolled(server, tmp_path)
    code, out, err = await cli("intent", "2001", "--json", home=tmp_path)
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["method"], doc["dial"], doc["tel"], doc["call_id"]) == ("intent", ACCESS, f"tel:{ACCESS}", "call-1")
    assert 25_000 < doc["remaining_ms"] <= 30_000
    (request,) = server.directory.intent_requests
    assert request[:3] == (1, ACCESS, "2001")


@pytest.mark.parametrize(
    "setup",
    ["use_dtmf", "unavailable", "short"],
)
async def test_intent_falls_back_to_dtmf(server: Server, tmp_path: Path, setup: str) -> None:
    await enrolled(server, tmp_path)
    if setup == "use_dtmf":
        server.directory.intent_answer = IntentResult(IntentOutcome.USE_DTMF)
    elif setup == "unavailable":
        server.directory.fail_on = "create_intent_unavailable"
    else:  # an intent with 10 s left
        t = now_ms() + SKEW_MS
        server.directory.intent_answer = IntentResult(IntentOutcome.CREATED, "i", "c", ACCESS, t + 10_000)
    code, out, err = await cli("intent", "2001", "--json", home=tmp_path)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["method"] == "dtmf" and doc["dial"] == f"{ACCESS},,{key_digits(doc['epoch'])},2001"
    assert "calling by DTMF" in err


async def test_intent_refusals_are_told(server: Server, tmp_path: Path) -> None:
    await enrolled(server, tmp_path)
    code, out, err = await cli("intent", home=tmp_path)  # no destination: no dial tone by intent
    assert (code, out) == (1, "") and "refuses this destination" in err
    server.directory.intent_answer = IntentResult(IntentOutcome.RATE_LIMITED, retry_after_s=12)
    code, out, err = await cli("intent", "2001", home=tmp_path)
    assert (code, out) == (1, "") and "rate limited" in err and "retry after 12 s" in err
