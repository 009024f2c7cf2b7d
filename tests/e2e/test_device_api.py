"""The device API on the real testbed, over TLS (a self-signed certificate made here): a phone enrolls with an
activation code over `securelink run`'s listener, then claims the per-call key of its live calls, signing with
`deviceapi.signing`, and gets exactly the key `securelink escrow decrypt` opens; a second claim, another device's
claim, a wrong number, a claim after `voucher_ttl` and a replayed nonce are refused. Outbound: the PBX calls the
mobile (SIPp UAS as the carrier, 127.0.0.1:5070) and the phone claims with the caller number the UAS saw. Inbound: an
admitted ANI call, and the phone claims with the key it called with. Claims are counted in /metrics and published on
AMI as `UserEvent: SecureLinkVoucher`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import (
    AmiMonitor,
    Home,
    fresh_window,
    new_home,
    next_window,
    no_channels_left,
    start_app,
    stop_app,
    wait_until,
)
from sipp import SCENARIO_DIR, CallResult, UasProcess, run_uac
from support.deviceapi_fakes import Answer, http, raw_request, self_signed

from asterisk_securelink.deviceapi.codes import parse_enrollment_uri
from asterisk_securelink.deviceapi.signing import api_key, authorization
from testbed import ari_get

CALLER = "15557770002"
TTL = 10  # device_api.voucher_ttl (its minimum)
# every claim of the outbound test, audited and published (a replayed nonce is refused before any claim)
OUTBOUND_CLAIMS = sorted(["released", "repeated", "repeated", "already_claimed"] + ["not_found"] * 4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Phone:
    """A phone's side of the API, signing as the spec says (`deviceapi.signing`)."""

    port: int
    host: str  # device_api.public_host
    ctx: ssl.SSLContext
    key_id: str = ""
    secret: bytes = b""
    sent: int = 0

    def send(self, data: bytes) -> Answer:
        return asyncio.run(raw_request(self.port, data, self.ctx))

    def enroll(self, code: str) -> dict[str, Any]:
        got = self.send(http("POST", "/v1/enroll", json.dumps({"code": code}).encode()))
        assert got.status == 200, got.body
        doc: dict[str, Any] = got.json
        self.key_id, self.secret = doc["key_id"], base64.urlsafe_b64decode(doc["secret"] + "==")
        return doc

    def signed(self, method: str, target: str, body: bytes = b"", idem: str | None = None) -> bytes:
        self.sent += 1
        nonce = f"e2e-{self.key_id}-{self.sent:08d}"[:64]
        auth = authorization(self.key_id, api_key(self.secret), method=method, host=self.host, target=target,
                             body=body, ts=int(time.time()), nonce=nonce)  # fmt: skip
        extra = [("Idempotency-Key", idem)] if idem else []
        return http(method, target, body, {"Authorization": auth}, extra)

    def claim_request(self, number: str, idem: str | None = None) -> bytes:
        return self.signed("POST", "/v1/calls/claim", json.dumps({"presented": number}).encode(), idem)

    def claim(self, number: str, idem: str | None = None) -> Answer:
        return self.send(self.claim_request(number, idem))


@dataclass
class Api:
    home: Home
    port: int
    metrics_port: int
    cert: Path

    def phone(self) -> Phone:
        return Phone(self.port, f"localhost:{self.port}", ssl.create_default_context(cafile=str(self.cert)))

    def enrolled(self, name: str, number: str) -> tuple[dict[str, Any], Phone]:
        """`device add --activation`, the phone redeems the code over TLS, and the device is registered."""
        dev = json.loads(self.home.cli("device", "add", name, "--number", number, "--activation", "--json").stdout)
        server, code = parse_enrollment_uri(dev["enrollment_uri"])
        assert server == f"https://localhost:{self.port}"
        phone = self.phone()
        doc = phone.enroll(dev["activation_code"])
        assert doc["key_id"] == dev["key_id"] and len(phone.secret) == 32
        again = phone.send(http("POST", "/v1/enroll", json.dumps({"code": code}).encode()))
        assert (again.status, again.error) == (404, "not_found")  # single use
        self.home.cli("device", "register", str(dev["id"]))
        return dev, phone

    def escrowed_key(self, ref: str) -> str:
        rows = json.loads(self.home.cli("escrow", "decrypt", ref, "--private-key", "escrow.key", "--reason",
                                        "device api e2e", "--json").stdout)  # fmt: skip
        (row,) = rows
        return base64.urlsafe_b64encode(bytes.fromhex(row["key"])).rstrip(b"=").decode()

    def claims_counted(self) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("securelink_voucher_claims_total{"):
                result = line.split('result="', 1)[1].split('"', 1)[0]
                out[result] = float(line.rsplit(" ", 1)[1])
        return out


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from serving(tmp_path_factory.mktemp("securelink-deviceapi"))


def serving(path: Path, outbound: str = "") -> Iterator[Api]:
    """`securelink run` with the device API on TLS (and escrow, metrics) in a fresh installation at `path`;
    `outbound`: more `[outbound]` lines."""
    home = new_home(path)
    home.cli("escrow", "keygen", "--private-key", "escrow.key", "--public-key", "escrow.pub")
    cert, key = self_signed(path)
    port, metrics_port = free_port(), free_port()
    with (path / "securelink.toml").open("a") as f:
        f.write(f'[outbound]\nring_timeout = 20\n{outbound}[escrow]\npublic_key_file = "escrow.pub"\n'
                f'[device_api]\nlisten = "127.0.0.1:{port}"\npublic_host = "localhost:{port}"\n'
                f'tls_cert = "{cert}"\ntls_key = "{key}"\nvoucher_ttl = {TTL}\n'
                f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')  # fmt: skip
    run, agi = start_app(home, agi=False)
    try:
        wait_until(lambda: _listening(port), 10, "the device API to listen")
        yield Api(home, port, metrics_port, cert)
    finally:
        stop_app(home, run, agi)


class VoucherEvents(AmiMonitor):
    def _record(self, manager: Any, event: Any) -> None:
        if event.get("UserEvent") == "SecureLinkVoucher":
            self.events.append(dict(event))


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def hold_uac(dest: Path, ms: int) -> Path:
    text = (SCENARIO_DIR / "uac.xml").read_text()
    assert 'timeout="200" ontimeout="sendbye"' in text
    dest.write_text(text.replace('timeout="200" ontimeout="sendbye"', f'timeout="{ms}" ontimeout="sendbye"'))
    return dest


Background = tuple[threading.Thread, list[CallResult]]


def call_in_background(calls: list[tuple[str, str]], scenario: Path | None = None) -> Background:
    results: list[CallResult] = []
    thread = threading.Thread(target=lambda: results.extend(run_uac(calls, scenario=scenario, timeout=60)))
    thread.start()
    return thread, results


def test_doctor_sees_the_listener_and_its_certificate(api: Api) -> None:
    checks = json.loads(api.home.cli("doctor", "--json", check=False).stdout)
    mine = {c["check"]: c["ok"] for c in checks if c["check"].startswith("device API")}
    assert mine == {"device API certificate": True, "device API": True}, checks


async def test_outbound_the_phone_claims_the_key_of_the_call_ringing_it(api: Api, tmp_path: Path) -> None:
    mon = VoucherEvents()
    await mon.manager.connect()
    await asyncio.wait_for(mon.logged_in.wait(), 10)
    try:
        await asyncio.to_thread(_outbound, api, tmp_path)
        deadline = time.monotonic() + 10
        while len(mon.events) < len(OUTBOUND_CLAIMS) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        mon.manager.close()
    assert sorted(e.get("Result", "") for e in mon.events) == OUTBOUND_CLAIMS, mon.events
    assert all("Key" not in e and "CallKey" not in e for e in mon.events)


def _outbound(api: Api, tmp_path: Path) -> None:
    dev, phone = api.enrolled("Out", "+15550300001")
    _other, intruder = api.enrolled("Other", "+15550300002")
    before = api.claims_counted()
    fresh_window()
    with UasProcess(5070, mode="answer", ring_ms=4000) as uas:
        thread, results = call_in_background([(CALLER, f"6{dev['id']}")])
        (invite,) = uas.wait_for_invites(1, timeout=15)
        shown = invite.from_user  # the caller number the phone was shown: the PBX's outbound key
        first = phone.claim(shown, idem="first-try")
        assert first.status == 200, first.body
        retry = phone.claim(shown, idem="first-try")  # its first answer was lost: the same answer
        assert retry.status == 200 and retry.json == first.json
        second = phone.claim(shown, idem="another")
        assert (second.status, second.error) == (409, "already_claimed")
        stolen = intruder.claim(shown)
        assert (stolen.status, stolen.error) == (404, "not_found")
        wrong = phone.claim("5550009999")
        assert (wrong.status, wrong.error) == (404, "not_found")
        replay = phone.claim_request(shown, idem="first-try")
        assert phone.send(replay).status == 200
        again = phone.send(replay)  # the same nonce again
        assert (again.status, again.error) == (401, "unauthorized")
        thread.join(60)
    assert [r.status_code for r in results] == [200]
    no_channels_left()
    doc = first.json
    assert api.escrowed_key(doc["call_id"]) == doc["call_key"]  # exactly the key escrow opens for that call
    assert len(base64.urlsafe_b64decode(doc["call_key"] + "=")) == 32
    after = phone.claim(shown, idem="first-try")  # hung up: nothing left to release
    assert (after.status, after.error) == (404, "not_found")
    counted = api.claims_counted()
    assert counted.get("released", 0) - before.get("released", 0) == 1
    assert counted.get("already_claimed", 0) - before.get("already_claimed", 0) == 1
    audit = [e for e in api.home.audit("voucher.claim") if e["device"] in (dev["id"], _other["id"])]
    late_claim = OUTBOUND_CLAIMS.index("not_found")  # the claim after the TTL comes below
    assert sorted(e["result"] for e in audit) == OUTBOUND_CLAIMS[:late_claim] + OUTBOUND_CLAIMS[late_claim + 1 :]
    assert any("cloned" in json.dumps(e["detail"]) for e in audit if e["result"] == "already_claimed")
    db = (api.home.path / "securelink.sqlite3").read_bytes()
    assert doc["call_key"].encode() not in db and base64.urlsafe_b64decode(doc["call_key"] + "=") not in db

    # a voucher not claimed within voucher_ttl is gone, although its call is still up
    with UasProcess(5070, mode="answer", ring_ms=500) as uas:
        fresh_window()
        thread, results = call_in_background([(CALLER, f"6{dev['id']}")], hold_uac(tmp_path / "uac.xml", 13000))
        (invite,) = uas.wait_for_invites(1, timeout=15)
        time.sleep(TTL + 0.5)
        assert ari_get("/channels"), "the call should still be up"
        late = phone.claim(invite.from_user)
        assert (late.status, late.error) == (404, "not_found")
        thread.join(60)
    assert [r.status_code for r in results] == [200]
    no_channels_left()


def test_inbound_the_phone_claims_the_key_of_its_admitted_call(api: Api) -> None:
    dev, phone = api.enrolled("In", "+15550300003")
    _other, intruder = api.enrolled("Other2", "+15550300004")
    fresh_window()
    key = api.home.key(dev)
    (result,) = run_uac([(key, "100")], timeout=30)
    assert result.status_code == 200  # admitted
    first = phone.claim(key)  # the key it called with
    assert first.status == 200, first.body
    assert api.escrowed_key(first.json["call_key_id"]) == first.json["call_key"]
    second = phone.claim(key)
    assert (second.status, second.error) == (409, "already_claimed")
    stolen = intruder.claim(key)
    assert (stolen.status, stolen.error) == (404, "not_found")
    assert phone.claim("5550009999").status == 404
    replay = phone.claim_request(key)
    assert phone.send(replay).status == 409
    assert phone.send(replay).status == 401  # a replayed nonce
    no_channels_left()

    next_window()  # a new epoch: the first key is spent
    key2 = api.home.key(dev)
    assert [r.status_code for r in run_uac([(key2, "100")], timeout=30)] == [200]
    time.sleep(TTL + 0.5)
    late = phone.claim(key2)  # after voucher_ttl
    assert (late.status, late.error) == (404, "not_found")
    reasons = [(e["detail"] or {}).get("reason") for e in api.home.audit("voucher.claim")
               if e["device"] == dev["id"] and e["result"] == "not_found"]  # fmt: skip
    assert "wrong_number" in reasons and reasons[-1] in ("expired", "no_call")  # "no_call" once purged
