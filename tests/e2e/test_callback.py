"""Callback on the real Asterisk (CALLING.md, "Callback"): the phone asks over the device API, the testbed rings its
mobile (a SIPp UAS on 5070, behind the carrier endpoint) with an outbound key as caller ID, waits for the phone to
confirm by claiming the call's voucher by `call_id`, then rings the destination in the device's desk context
(`PJSIP/1001`: `from-desk`, `"Alice" <1001>`) and bridges the two. Without a confirmation the call ends
`unconfirmed` and the destination never rings; a second request while one is live is 409 `busy`.

The confirmed call is placed by the reference client (`securelink-device callback DEST`, which confirms by claiming);
the unconfirmed one by the harness's signer, which only asks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from device_api_harness import Api, Phone, serving
from harness import PERIOD, AmiMonitor, ami_monitor, no_channels_left
from sipp import uas
from support import device_cli
from support.deviceapi_fakes import raw_request

from asterisk_securelink.config import KeysConfig
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.slk1 import derive_key, device_secret, epoch_at_ms

ROUTED = "TestbedRouted"
MAX_CALL_SECONDS = 12
SETTINGS = {"routing": f"max_call_seconds = {MAX_CALL_SECONDS}\n"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from serving(tmp_path_factory.mktemp("callback"), settings=SETTINGS)


def enrolled(api: Api, name: str, number: str, state: Path) -> dict[str, Any]:
    """`device add --activation --desk-endpoint PJSIP/1001`, enrolled by the reference client, registered."""
    dev: dict[str, Any] = json.loads(api.home.cli("device", "add", name, "--number", number, "--desk-endpoint",
                                                  "PJSIP/1001", "--activation", "--json").stdout)  # fmt: skip
    p = device_cli.run("enroll", dev["enrollment_uri"], "--ca", str(api.cert), "--state", str(state), "--json")
    assert p.returncode == 0, p.stderr
    api.home.cli("device", "register", str(dev["id"]))
    return dev


def signer_of(api: Api, state: Path) -> Phone:
    phone = api.phone()
    doc = json.loads(state.read_text())
    phone.key_id = doc["key_id"]
    phone.secret = base64.urlsafe_b64decode(doc["enrollment"]["secret"] + "==")
    return phone


async def ask(phone: Phone, destination: str) -> tuple[int, dict[str, Any]]:
    request = phone.signed("POST", "/v1/calls/callback", json.dumps({"destination": destination}).encode())
    got = await raw_request(phone.port, request, phone.ctx)
    return got.status, (got.json if got.body else {})


def outbound_keys(api: Api, dev: dict[str, Any], around: float) -> set[str]:
    """The device's outbound keys of the windows around `around` (the one presented is one of them)."""
    secret = device_secret(api.home.master, str(dev["key_id"]))
    fmt = NumberFormat(KeysConfig().outbound_format)
    now = epoch_at_ms(int(around * 1000), PERIOD)
    return {derive_key(secret, "outbound", e, fmt) for e in range(now - 1, now + 3)}


async def test_a_confirmed_callback_rings_the_mobile_with_a_key_then_bridges_the_destination(
    node: Api, tmp_path: Path, ami: AmiMonitor
) -> None:
    dev = enrolled(node, "cb-ok", "+15554000001", tmp_path / "ok.json")
    started = time.time()
    with uas(5070) as carrier:
        async with ami_monitor(ROUTED) as routed:
            p = await asyncio.to_thread(device_cli.run, "callback", "2021", "--state", str(tmp_path / "ok.json"),
                                        "--json")  # fmt: skip
            assert p.returncode == 0, p.stderr + p.stdout + node.home.log_text("run")[-2000:]
            lines = [json.loads(line) for line in p.stdout.splitlines()]
            call_id = lines[0]["call_id"]
            event = await routed.wait_for({"Dest": "2021"}, within=30)
            [mobile] = await asyncio.to_thread(carrier.wait_for_invites, 1, 30, "+15554000001")
            [destination] = await asyncio.to_thread(carrier.wait_for_invites, 1, 30, "2021")
        # the mobile rang with a valid outbound key as its caller ID; the destination as Alice's desk
        assert mobile.from_user in outbound_keys(node, dev, started)
        assert destination.from_user == "1001"
        assert (event["CidNum"], event["CidName"]) == ("1001", "Alice")
        # bridged until max_call_seconds ends it
        no_channels_left(MAX_CALL_SECONDS + 15)
    rows = json.loads(node.home.cli("calls", "list", "--json", "--device", str(dev["id"])).stdout)
    [cb] = [r for r in rows if r.get("method") == "callback"]
    assert (cb["destination"], cb["verdict"], cb["direction"]) == ("2021", "admitted", "outbound")
    assert cb["answered_at"] and cb["ended_at"] and cb["hangup_cause"]
    assert call_id in cb["call_id"]


async def test_an_unconfirmed_callback_never_dials_the_destination_and_a_second_request_is_busy(
    node: Api, tmp_path: Path, ami: AmiMonitor
) -> None:
    dev = enrolled(node, "cb-silent", "+15554000002", tmp_path / "silent.json")
    phone = signer_of(node, tmp_path / "silent.json")
    started = time.time()
    with uas(5070) as carrier:
        async with ami_monitor(ROUTED) as routed:
            status, doc = await ask(phone, "2001")
            assert status == 202 and doc["call_id"]
            again, err = await ask(phone, "2002")
            assert (again, err.get("error")) == (409, "busy")
            # the mobile rings (with its key) and answers; nobody claims, nobody presses 1
            [mobile] = await asyncio.to_thread(carrier.wait_for_invites, 1, 30, "+15554000002")
            await asyncio.to_thread(no_channels_left, 40)
            assert routed.events == []  # the destination's dialplan never ran: it never rang
    assert mobile.from_user in outbound_keys(node, dev, started)
    event = await ami.wait_for({"Result": "unconfirmed"})
    assert (event["Device"], event["Mode"]) == (str(dev["id"]), "callback")
