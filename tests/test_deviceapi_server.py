"""The device API over a real loopback listener with an in-memory directory: the routes, every 4xx of the spec,
the order of checks, nonce replay, the clock window and the answers' shape. (Transport rules, enrollment limits and
TLS: tests/test_deviceapi_transport.py.)"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate

import pytest
from support.clock import Clock
from support.deviceapi_fakes import PARAMS, Answer, MemoryDirectory, Voucher, http, raw_request, signed
from support.keys import MASTER

from asterisk_securelink.core.slk1 import device_secret
from asterisk_securelink.deviceapi.codes import code_hash
from asterisk_securelink.deviceapi.server import DeviceApi, DeviceApiServer

HOST = "pbx.example.com:8443"
TS = 1790000000
NONCE = "n0nce-0123456789"
GET_SIG = "Icl4IjO8On2CMSCcWE6LV77cdqEpKpvNK8o1YKz0wcM"  # docs/device-api.md
CLAIM_SIG = "UPpW3C5aEiTd2OTGF2lClKHeqn5Xet2Rhc5MVYGGp5k"
CLAIM_BODY = b'{"presented":"+12677638475"}'
CALL_KEY = bytes(range(100, 132))
UNAUTHORIZED = {"error": "unauthorized", "message": "authentication failed"}


@dataclass
class Api:
    directory: MemoryDirectory
    clock: Clock[int]
    port: int
    nonces: int = 0

    async def send(self, data: bytes) -> Answer:
        return await raw_request(self.port, data)

    def nonce(self) -> str:
        self.nonces += 1
        return f"nonce-{self.nonces:012d}"

    async def call(self, method: str, target: str, body: bytes = b"", *, key_id: str = "dev-0001",
                   ts: int | None = None, nonce: str | None = None, host: str = HOST,
                   extra: list[tuple[str, str]] | None = None) -> Answer:  # fmt: skip
        auth = signed(key_id, method, target, body, host=host, ts=self.clock.t // 1000 if ts is None else ts,
                      nonce=nonce or self.nonce())  # fmt: skip
        return await self.send(http(method, target, body, auth, extra or []))


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    directory = MemoryDirectory()
    directory.add("dev-0001", 1)
    directory.add("dev-revoked", 2, status="revoked")
    directory.add("dev-0003", 3, status="suspended")
    clock = Clock(TS * 1000 + 250)
    server = DeviceApiServer(DeviceApi(directory, public_host=HOST, clock=clock), "127.0.0.1", 0)
    await server.start()
    assert server.bound_port
    try:
        yield Api(directory, clock, server.bound_port)
    finally:
        await server.close()


def vector_get() -> bytes:
    auth = f'SLK1 key_id="dev-0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}"'
    return http("GET", "/v1/device", headers={"Authorization": auth})


# -- GET /v1/device ---------------------------------------------------------------------------------------------
async def test_get_device_with_the_spec_vector(api: Api) -> None:
    a = await api.send(vector_get())
    assert a.status == 200, a.body
    assert a.headers["cache-control"] == "no-store"
    assert a.headers["content-type"].startswith("application/json")
    assert a.json == {
        "key_id": "dev-0001", "status": "registered", "fork": True, "period": 30, "t0": 0, "in": "+1NXXNXXXXXX",
        "out": "XXXXXXXXXX", "look_behind": 1, "look_ahead": 1, "trunk": "0,00", "mode": "ani", "dial": "",
        "server_time_ms": TS * 1000 + 250,
    }  # fmt: skip
    assert list(a.json) == ["key_id", "status", "fork", "period", "t0", "in", "out", "look_behind", "look_ahead",
                            "trunk", "mode", "dial", "server_time_ms"]  # fmt: skip
    assert api.directory.nonces == {("dev-0001", NONCE): TS + 61}


async def test_a_replayed_nonce_is_unauthorized(api: Api) -> None:
    assert (await api.send(vector_get())).status == 200
    again = await api.send(vector_get())
    assert (again.status, again.json) == (401, UNAUTHORIZED)
    assert again.headers["www-authenticate"] == "SLK1"
    assert again.headers["date"] == "Mon, 21 Sep 2026 14:13:20 GMT" == formatdate(TS, usegmt=True)  # the API's clock


async def test_the_same_nonce_with_another_key_id_is_fine(api: Api) -> None:
    assert (await api.call("GET", "/v1/device", nonce=NONCE)).status == 200
    api.directory.add("dev-0004", 4)
    assert (await api.call("GET", "/v1/device", key_id="dev-0004", nonce=NONCE)).status == 200


@pytest.mark.parametrize(("offset", "status"), [(-60, 200), (60, 200), (-61, 401), (61, 401), (-3600, 401)])
async def test_clock_window(api: Api, offset: int, status: int) -> None:
    a = await api.call("GET", "/v1/device", ts=TS + offset)
    assert a.status == status
    if status == 401:
        assert api.directory.nonces == {}  # the nonce is stored only when everything before it passed


async def test_a_suspended_device_learns_its_status(api: Api) -> None:
    a = await api.call("GET", "/v1/device", key_id="dev-0003")
    assert (a.status, a.json["status"]) == (200, "suspended")


# -- every cause of 401 gets the same answer -----------------------------------------------------------------------
def _auth(**parts: str) -> str:
    p = {"key_id": "dev-0001", "ts": str(TS), "nonce": NONCE, "sig": GET_SIG} | parts
    return ", ".join(f'{k}="{v}"' for k, v in p.items())


@pytest.mark.parametrize(
    "headers",
    [
        [],  # none
        [("Authorization", "SLK1 " + _auth())] * 2,  # two headers
        [("Authorization", "Bearer abc")],
        [("Authorization", "SLK1 " + _auth(sig="A" * 43))],  # wrong signature
        [("Authorization", "SLK1 " + _auth(key_id="dev-9999"))],  # unknown key_id (its signature would be right)
        [("Authorization", "SLK1 " + _auth(ts="1790000001"))],  # signed TS changed
        [("Authorization", "SLK1 " + _auth(nonce="n0nce-0123456780"))],
        [("Authorization", "SLK1 " + _auth(ts="179000000"))],  # malformed
    ],
)
async def test_every_auth_failure_is_the_same_401(api: Api, headers: list[tuple[str, str]]) -> None:
    a = await api.send(http("GET", "/v1/device", extra=headers))
    assert (a.status, a.json) == (401, UNAUTHORIZED)
    assert a.headers["cache-control"] == "no-store"
    assert "nonce" not in api.directory.calls  # the nonce is never touched before the signature verified


@pytest.mark.parametrize(
    ("scheme", "status"),
    [(b"SLK1 ", 200), (b"slk1 ", 200), (b"sLk1   ", 200),
     ("\u017flk1 ".encode(), 401), ("SL\u212a1 ".encode(), 401), (b"SLK1 \t", 401), (b"SLK1\t", 401)],
)  # fmt: skip
async def test_the_scheme_is_ascii_case_insensitive_then_spaces(api: Api, scheme: bytes, status: int) -> None:
    """Revision 2: `\u017flk1` (UTF-8 on the wire) passed as SLK1 by Unicode case folding, and `SLK1 <tab>` passed."""
    params = f'key_id="dev-0001", ts="{TS}", nonce="{NONCE}", sig="{GET_SIG}"'.encode()
    data = b"GET /v1/device HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + scheme + params + b"\r\n\r\n"
    a = await api.send(data)
    assert a.status == status, a.body
    if status == 401:
        assert a.json == UNAUTHORIZED and api.directory.calls == []  # refused by the parser: nothing looked up


async def test_a_signature_for_another_deployment_fails(api: Api) -> None:
    assert (await api.call("GET", "/v1/device", host="pbx.example.com")).status == 401
    assert (await api.call("GET", "/v1/device", host="pbx.other.example:8443")).status == 401


async def test_the_request_host_header_is_not_what_is_signed(api: Api) -> None:
    auth = signed("dev-0001", "GET", "/v1/device", b"", host="pbx.internal", ts=TS, nonce=api.nonce())
    a = await api.send(http("GET", "/v1/device", headers=auth))  # the request's Host is pbx.internal
    assert a.status == 401


async def test_the_target_and_query_are_signed_as_sent(api: Api) -> None:
    assert (await api.call("GET", "/v1/device?lang=en")).status == 200
    auth = signed("dev-0001", "GET", "/v1/device", b"", host=HOST, ts=TS, nonce=api.nonce())
    assert (await api.send(http("GET", "/v1/device?lang=en", headers=auth))).status == 401


async def test_the_body_is_signed(api: Api) -> None:
    auth = signed("dev-0001", "PUT", "/v1/device/fork", b'{"enabled":true}', host=HOST, ts=TS, nonce=api.nonce())
    a = await api.send(http("PUT", "/v1/device/fork", b'{"enabled":false}', auth))
    assert a.status == 401 and api.directory.forks == []


async def test_order_of_checks(api: Api) -> None:
    d = api.directory
    await api.send(http("GET", "/v1/device", headers={"Authorization": "SLK1 " + _auth(ts="x")}))
    assert d.calls == []  # parse fails first: no lookup at all
    await api.send(http("GET", "/v1/device", headers={"Authorization": "SLK1 " + _auth(key_id="nobody")}))
    assert d.calls == ["secret_of", "by_key_id", "retired"]  # the same derivation and HMAC work as a known key_id
    d.calls.clear()
    await api.call("GET", "/v1/device", ts=TS + 120)  # good signature, stale clock: no nonce
    assert d.calls == ["secret_of", "by_key_id"]
    d.calls.clear()
    await api.call("GET", "/v1/device")
    assert d.calls == ["secret_of", "by_key_id", "nonce"]


# -- rotated (revision 2) ----------------------------------------------------------------------------------------
ROTATED = {"error": "rotated", "message": "this device's key was rotated: ask for a new activation code"}


async def test_a_key_id_a_rotation_retired_gets_403_rotated_on_every_route(api: Api) -> None:
    """Revision 2: before, a rotated phone got 401 forever (and the docs' "after any 401, call GET /v1/device"
    looped); now, once its old signature, clock and nonce verified, 403 `rotated` tells it to ask for a new code."""
    api.directory.rotate("dev-0001", "dev-0101")
    a = await api.send(vector_get())  # the spec's vector, signed with the old key_id's secret
    assert (a.status, a.json, a.headers["cache-control"]) == (403, ROTATED, "no-store")
    assert "www-authenticate" not in a.headers
    assert api.directory.nonces == {("dev-0001", NONCE): TS + 61}  # the nonce was checked and stored first
    for method, target, body in (("PUT", "/v1/device/fork", b'{"enabled":false}'), ("POST", "/v1/calls/claim",
                                 CLAIM_BODY), ("POST", "/v1/calls/intent", b'{"destination":"2001"}'),
                                 ("POST", "/v1/calls/callback", b'{"destination":"2001"}')):  # fmt: skip
        a = await api.call(method, target, body)
        assert (a.status, a.json) == (403, ROTATED), (method, target)
    assert api.directory.forks == [] and "claim" not in api.directory.calls and api.directory.intent_requests == []
    assert (await api.call("GET", "/v1/device", key_id="dev-0101")).json["key_id"] == "dev-0101"  # the new one works


async def test_rotated_is_told_only_after_signature_clock_and_nonce(api: Api) -> None:
    api.directory.rotate("dev-0001", "dev-0101")
    wrong = signed("dev-0001", "GET", "/v1/device", b"", host=HOST, ts=TS, nonce=api.nonce(), secret=bytes(32))
    assert (await api.send(http("GET", "/v1/device", headers=wrong))).json == UNAUTHORIZED  # not the old secret
    assert (await api.call("GET", "/v1/device", ts=TS - 61)).json == UNAUTHORIZED  # stale
    assert (await api.send(vector_get())).status == 403
    assert (await api.send(vector_get())).json == UNAUTHORIZED  # the same nonce again
    assert (await api.call("GET", "/v1/device", key_id="dev-never-issued")).json == UNAUTHORIZED


# -- revoked ------------------------------------------------------------------------------------------------------
async def test_a_revoked_device_is_told_so_and_refused_elsewhere(api: Api) -> None:
    a = await api.call("GET", "/v1/device", key_id="dev-revoked")
    assert (a.status, a.json["status"]) == (200, "revoked")
    for method, target, body in (("PUT", "/v1/device/fork", b'{"enabled":false}'),
                                 ("POST", "/v1/calls/claim", CLAIM_BODY)):  # fmt: skip
        a = await api.call(method, target, body, key_id="dev-revoked")
        assert (a.status, a.json) == (403, {"error": "revoked", "message": "this device is revoked"})
    assert api.directory.forks == [] and "claim" not in api.directory.calls


async def test_a_revoked_device_with_a_bad_signature_gets_401(api: Api) -> None:
    a = await api.call("PUT", "/v1/device/fork", b'{"enabled":false}', key_id="dev-revoked", host="elsewhere")
    assert a.status == 401


# -- PUT /v1/device/fork --------------------------------------------------------------------------------------------
async def test_fork_toggle(api: Api) -> None:
    a = await api.call("PUT", "/v1/device/fork", b'{"enabled": false, "future_field": [1, 2]}')
    assert (a.status, a.json) == (200, {"key_id": "dev-0001", "fork": False})
    assert api.directory.forks == [(1, False, "device")]
    assert (await api.call("GET", "/v1/device")).json["fork"] is False


BAD_FORK_BODIES = [b'{"enabled": "false"}', b'{"enabled": 0}', b"{}", b'{"Enabled": true}', b"[true]", b"true",
                   b"null", b"", b"{", b'{"enabled": true', b"\xff\xfe{}"]  # fmt: skip


@pytest.mark.parametrize("body", BAD_FORK_BODIES)
async def test_fork_bad_bodies(api: Api, body: bytes) -> None:
    a = await api.call("PUT", "/v1/device/fork", body)
    assert (a.status, a.error) == (400, "bad_request")
    assert api.directory.forks == []


# -- POST /v1/calls/claim -------------------------------------------------------------------------------------------
def _voucher(api: Api, device_id: int = 1, presented: str = "+12677638475") -> Voucher:
    v = Voucher(device_id, presented, "node1-1790000000.42", "3f2a-call-key", CALL_KEY)
    api.directory.vouchers.append(v)
    return v


async def test_claim_with_the_spec_vector(api: Api) -> None:
    _voucher(api)
    auth = f'SLK1 key_id="dev-0001", ts="{TS}", nonce="{NONCE}", sig="{CLAIM_SIG}"'
    a = await api.send(http("POST", "/v1/calls/claim", CLAIM_BODY, {"Authorization": auth}))
    assert a.status == 200, a.body
    assert a.json == {"call_id": "node1-1790000000.42", "call_key_id": "3f2a-call-key",
                      "call_key": base64.urlsafe_b64encode(CALL_KEY).rstrip(b"=").decode()}  # fmt: skip
    assert "=" not in a.json["call_key"] and len(a.json["call_key"]) == 43
    (event,) = api.directory.events
    assert (event.action, event.result, event.device_id, event.call_id) == ("voucher.claim", "released", 1,
                                                                          "node1-1790000000.42")  # fmt: skip
    assert "+12677638475" not in json.dumps(event.detail)  # the presented number (a key) is not audited


async def test_claim_retry_with_idempotency_key_and_a_second_claim(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    _voucher(api)
    first = await api.call("POST", "/v1/calls/claim", CLAIM_BODY, extra=[("Idempotency-Key", "retry-1")])
    again = await api.call("POST", "/v1/calls/claim", CLAIM_BODY, extra=[("Idempotency-Key", "retry-1")])
    assert (first.status, again.status) == (200, 200) and first.json == again.json
    other = await api.call("POST", "/v1/calls/claim", CLAIM_BODY, extra=[("Idempotency-Key", "retry-2")])
    bare = await api.call("POST", "/v1/calls/claim", CLAIM_BODY)
    for a in (other, bare):
        assert (a.status, a.error) == (409, "already_claimed")
        assert "call_key" not in a.json
    results = [(e.result, e.detail.get("alert", "")[:6]) for e in api.directory.events]
    assert results == [("released", ""), ("repeated", ""), ("already_claimed", "second"), ("already_claimed", "second")]
    assert "cloned secret" in caplog.text


async def test_an_idempotency_key_replays_only_to_the_same_route_and_body(api: Api) -> None:
    """L5 (issue 22): the header is not signed; a repeat with it replays the answer only when the key_id, the route
    and the body are the ones it first came with (what the signature binds)."""
    _voucher(api)
    idem = [("Idempotency-Key", "retry-1")]
    first = await api.call("POST", "/v1/calls/claim", CLAIM_BODY, extra=idem)
    assert first.status == 200
    other_body = await api.call("POST", "/v1/calls/claim", b'{"presented":"+12677638475","again":1}', extra=idem)
    other_route = await api.call("POST", "/v1/calls/claim", b'{"call_id":"node1-1790000000.42"}', extra=idem)
    for a in (other_body, other_route):
        assert (a.status, a.error) == (409, "already_claimed") and "call_key" not in a.json
    again = await api.call("POST", "/v1/calls/claim", CLAIM_BODY, extra=idem)
    assert (again.status, again.json) == (200, first.json)
    stored = {v.idempotency_key for v in api.directory.vouchers}
    assert "retry-1" not in stored  # the store keeps the bound digest, not the header


@pytest.mark.parametrize(("key_id", "body"), [
    ("dev-0003", CLAIM_BODY),  # another device: that call is not its call
    ("dev-0001", b'{"presented":"+12677638476"}'),  # a wrong number
])  # fmt: skip
async def test_claim_not_found(api: Api, key_id: str, body: bytes) -> None:
    _voucher(api)
    a = await api.call("POST", "/v1/calls/claim", body, key_id=key_id)
    assert (a.status, a.error) == (404, "not_found")
    assert [(e.action, e.result, e.detail) for e in api.directory.events] == [
        ("voucher.claim", "not_found", {"reason": "no_call"})
    ]


@pytest.mark.parametrize(
    ("body", "extra"),
    [
        (b'{"presented": 12677638475}', []),
        (b'{"presented": ""}', []),
        (b'{"presented": "' + b"1" * 33 + b'"}', []),
        (b'{"number": "+12677638475"}', []),
        (b"[]", []),
        (b"not json", []),
        (CLAIM_BODY, [("Idempotency-Key", "a"), ("Idempotency-Key", "b")]),
        (CLAIM_BODY, [("Idempotency-Key", "x" * 129)]),
        (CLAIM_BODY, [("Idempotency-Key", "two words")]),
    ],
)
async def test_claim_bad_requests(api: Api, body: bytes, extra: list[tuple[str, str]]) -> None:
    _voucher(api)
    a = await api.call("POST", "/v1/calls/claim", body, extra=extra)
    assert (a.status, a.error) == (400, "bad_request")
    assert "claim" not in api.directory.calls


# -- POST /v1/enroll --------------------------------------------------------------------------------------------
def _code(api: Api, code: str = "ABCDEFGHIJKLMNOP", key_id: str = "dev-0001", ttl_ms: int = 900_000) -> None:
    api.directory.codes[code_hash(code)] = (key_id, api.clock.t + ttl_ms, False)


async def test_enroll_once(api: Api) -> None:
    _code(api)
    a = await api.send(http("POST", "/v1/enroll", b'{"code": "abcd-efgh-ijkl-mnop", "app": "x"}'))
    assert a.status == 200, a.body
    secret = base64.urlsafe_b64decode(a.json["secret"] + "=")
    assert secret == device_secret(MASTER, "dev-0001") and "=" not in a.json["secret"]
    assert list(a.json) == ["key_id", "secret", "v", "period", "t0", "in", "out", "look_behind", "look_ahead",
                            "trunk", "mode", "dial", "server_time_ms"]  # fmt: skip
    assert (a.json["key_id"], a.json["v"], a.json["in"], a.json["trunk"]) == ("dev-0001", "1.1", "+1NXXNXXXXXX", "0,00")
    assert a.json["period"] == PARAMS.period and a.json["server_time_ms"] == api.clock.t
    assert a.headers["cache-control"] == "no-store"
    again = await api.send(http("POST", "/v1/enroll", b'{"code": "ABCDEFGHIJKLMNOP"}'))
    assert (again.status, again.error) == (404, "not_found")
    assert [(e.action, e.result, e.device_id) for e in api.directory.events] == [
        ("device.enroll", "ok", 1), ("device.enroll", "not_found", None)
    ]  # fmt: skip
    assert all(e.source == "127.0.0.1" for e in api.directory.events)


async def test_unknown_used_expired_and_malformed_codes_are_the_same_404(api: Api) -> None:
    _code(api, "ABCDEFGHIJKLMNOP", ttl_ms=-1)  # expired
    answers = []
    for code in ("ABCDEFGHIJKLMNOP", "QRSTUVWXYZ234567", "not a code", ""):
        answers.append(await api.send(http("POST", "/v1/enroll", json.dumps({"code": code}).encode())))
    assert {(a.status, a.body) for a in answers} == {
        (404, b'{"error":"not_found","message":"unknown, used or expired activation code"}')
    }


@pytest.mark.parametrize("body", [b'{"code": 1}', b"{}", b'["ABCDEFGHIJKLMNOP"]', b"code=ABCDEFGHIJKLMNOP", b""])
async def test_enroll_bad_bodies(api: Api, body: bytes) -> None:
    a = await api.send(http("POST", "/v1/enroll", body))
    assert (a.status, a.error) == (400, "bad_request")
    assert "redeem_code" not in api.directory.calls


async def test_enroll_needs_no_signature_and_ignores_one(api: Api) -> None:
    _code(api)
    a = await api.send(http("POST", "/v1/enroll", b'{"code":"ABCDEFGHIJKLMNOP"}', {"Authorization": "SLK1 junk"}))
    assert a.status == 200


# -- errors never leak -------------------------------------------------------------------------------------------
async def test_an_internal_error_is_one_line_without_details(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    api.directory.fail_on = "by_key_id"
    a = await api.send(vector_get())
    assert (a.status, a.json) == (500, {"error": "internal", "message": "internal error"})
    assert a.headers["cache-control"] == "no-store"
    assert b"Traceback" not in a.body and b"shh" not in a.body
    assert "RuntimeError" in caplog.text  # the log has it
