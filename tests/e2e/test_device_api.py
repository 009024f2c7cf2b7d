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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from device_api_harness import CALLER, TTL, Api, call_in_background, serving
from harness import ami_monitor, fresh_window, next_window, no_channels_left, wait_until
from sipp import SCENARIO_DIR, UasProcess, run_uac
from support.ami import VOUCHER

from testbed import ari_get

# every claim of the outbound test, audited and published (a replayed nonce is refused before any claim)
OUTBOUND_CLAIMS = sorted(["released", "repeated", "repeated", "already_claimed"] + ["not_found"] * 4)
LATE = {"expired", "no_call"}  # why a claim after its call ended finds nothing ("no_call" once purged)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from serving(tmp_path_factory.mktemp("securelink-deviceapi"))


def hold_uac(dest: Path, ms: int) -> Path:
    text = (SCENARIO_DIR / "uac.xml").read_text()
    assert 'timeout="200" ontimeout="sendbye"' in text
    dest.write_text(text.replace('timeout="200" ontimeout="sendbye"', f'timeout="{ms}" ontimeout="sendbye"'))
    return dest


def test_doctor_sees_the_listener_and_its_certificate(api: Api) -> None:
    checks = json.loads(api.home.cli("doctor", "--json", check=False).stdout)
    mine = {c["check"]: c["ok"] for c in checks if c["check"].startswith("device API")}
    assert mine == {"device API certificate": True, "device API": True}, checks


async def test_outbound_the_phone_claims_the_key_of_the_call_ringing_it(api: Api, tmp_path: Path) -> None:
    async with ami_monitor(VOUCHER) as mon:
        await asyncio.to_thread(_outbound, api, tmp_path)
        deadline = time.monotonic() + 10
        while len(mon.events) < len(OUTBOUND_CLAIMS) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    assert sorted(e.get("Result", "") for e in mon.events) == OUTBOUND_CLAIMS, mon.events
    assert all("Key" not in e and "CallKey" not in e for e in mon.events)


def _outbound(api: Api, tmp_path: Path) -> None:
    dev, phone = api.enrolled("Out", "+15550300001")
    _other, intruder = api.enrolled("Other", "+15550300002")
    before = api.claims_counted()
    fresh_window()
    with UasProcess(5070, mode="answer", ring_ms=10000) as uas:  # ringing while the seven claims are made
        thread, results = call_in_background([(CALLER, f"6{dev['id']}")])
        (invite,) = uas.wait_for_invites(1, timeout=15, to="+15550300001")
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
    ours = lambda rows: [e for e in rows if e["device"] in (dev["id"], _other["id"])]  # noqa: E731
    audit = ours(api.home.audit("voucher.claim", until=lambda rows: len(ours(rows)) >= len(OUTBOUND_CLAIMS) - 1))
    late_claim = OUTBOUND_CLAIMS.index("not_found")  # the claim after the TTL comes below
    assert sorted(e["result"] for e in audit) == OUTBOUND_CLAIMS[:late_claim] + OUTBOUND_CLAIMS[late_claim + 1 :]
    assert any("cloned" in json.dumps(e["detail"]) for e in audit if e["result"] == "already_claimed")
    db = (api.home.path / "securelink.sqlite3").read_bytes()
    assert doc["call_key"].encode() not in db and base64.urlsafe_b64decode(doc["call_key"] + "=") not in db

    # a voucher not claimed within voucher_ttl is gone, although its call is still up
    with UasProcess(5070, mode="answer", ring_ms=500) as uas:
        fresh_window()
        thread, results = call_in_background([(CALLER, f"6{dev['id']}")], hold_uac(tmp_path / "uac.xml", 13000))
        (invite,) = uas.wait_for_invites(1, timeout=15, to="+15550300001")
        time.sleep(TTL + 0.5)
        assert ari_get("/channels"), "the call should still be up"
        late = phone.claim(invite.from_user)
        assert (late.status, late.error) == (404, "not_found")
        thread.join(60)
    assert [r.status_code for r in results] == [200]
    no_channels_left()


def test_inbound_the_phone_claims_the_key_of_its_admitted_call(api: Api, tmp_path: Path) -> None:
    """While the admitted call is up the phone claims its key with the key it called with; once the call has hung up
    nothing is claimable (DEVICE-API: until min(creation + voucher_ttl, hangup))."""
    dev, phone = api.enrolled("In", "+15550300003")
    _other, intruder = api.enrolled("Other2", "+15550300004")
    fresh_window()
    key = api.home.key(dev)
    thread, results = call_in_background([(key, "100")], hold_uac(tmp_path / "uac.xml", 5000))
    # answered by the dialplan after the verdict's hand-off, which comes after the voucher is written
    wait_until(lambda: any(c.get("state") == "Up" for c in ari_get("/channels")), 10, "the admitted call")
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
    thread.join(60)
    assert [r.status_code for r in results] == [200]  # admitted
    no_channels_left()

    next_window()  # a new epoch: the first key is spent
    key2 = api.home.key(dev)
    assert [r.status_code for r in run_uac([(key2, "100")], timeout=30)] == [200]
    no_channels_left()
    late = phone.claim(key2)  # the call hung up: its voucher is gone, well before voucher_ttl
    assert (late.status, late.error) == (404, "not_found")

    def not_found(rows: list[dict[str, Any]]) -> list[str | None]:
        ours = [e for e in rows if e["device"] == dev["id"] and e["result"] == "not_found"]
        return [(e["detail"] or {}).get("reason") for e in ours]

    reasons = not_found(api.home.audit("voucher.claim", until=lambda rows: bool(set(not_found(rows)) & LATE)))
    assert "wrong_number" in reasons and reasons[-1] in LATE
