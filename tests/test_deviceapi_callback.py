"""`POST /v1/calls/claim` by `{"call_id"}` and `POST /v1/calls/callback` over a real loopback listener with an
in-memory directory and a fake `Callbacks`: every answer (202, 400, 403, 404, 409, 429, 503) and its audit. (The
store half of claim by call_id: tests/test_api_store.py.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from support.clock import Clock
from support.deviceapi_fakes import Answer, MemoryDirectory, Voucher, http, raw_request, signed

from asterisk_securelink.deviceapi.ports import CallbackOutcome, CallbackResult
from asterisk_securelink.deviceapi.server import DeviceApi, DeviceApiServer

HOST = "pbx.example.com:8443"
T = 1_790_000_000_250
CALL_KEY = bytes(range(100, 132))
CLAIM = "/v1/calls/claim"
CALLBACK = "/v1/calls/callback"


@dataclass
class FakeCallbacks:
    answer: CallbackResult = field(default_factory=lambda: CallbackResult(CallbackOutcome.PLACED, "cb-1"))
    requests: list[tuple[int, str, int]] = field(default_factory=list)
    fail: bool = False

    async def request(self, device_id: int, destination: str, now_ms: int) -> CallbackResult:
        self.requests.append((device_id, destination, now_ms))
        if self.fail:
            raise ConnectionError("ARI down")
        return self.answer


@dataclass
class Api:
    directory: MemoryDirectory
    callbacks: FakeCallbacks
    server: DeviceApiServer
    clock: Clock[int]
    port: int
    nonces: int = 0

    async def call(self, method: str, target: str, body: bytes = b"", *, key_id: str = "dev-0001",
                   idem: str | None = None) -> Answer:  # fmt: skip
        self.nonces += 1
        auth = signed(key_id, method, target, body, host=HOST, ts=self.clock.t // 1000, nonce=f"n-{self.nonces:016d}")
        extra = [("Idempotency-Key", idem)] if idem is not None else []
        return await raw_request(self.port, http(method, target, body, auth, extra))

    async def callback(self, destination: object = "2001", **kw: str) -> Answer:
        return await self.call("POST", CALLBACK, json.dumps({"destination": destination}).encode(), **kw)

    async def claim(self, call_id: object, **kw: str) -> Answer:
        return await self.call("POST", CLAIM, json.dumps({"call_id": call_id}).encode(), **kw)

    def audited(self) -> list[tuple[str, str, str]]:
        return [(e.action, e.result, e.detail.get("reason", "")) for e in self.directory.events]


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    directory = MemoryDirectory()
    directory.add("dev-0001", 1)
    directory.add("dev-0002", 2)
    directory.add("dev-revoked", 3, status="revoked")
    directory.add("dev-0004", 4, status="suspended")
    directory.add("dev-0005", 5, status="provisioned")
    clock = Clock(T)
    callbacks = FakeCallbacks()
    server = DeviceApiServer(DeviceApi(directory, public_host=HOST, clock=clock, callbacks=callbacks), "127.0.0.1", 0)
    await server.start()
    assert server.bound_port
    try:
        yield Api(directory, callbacks, server, clock, server.bound_port)
    finally:
        await server.close()


# -- POST /v1/calls/claim {"call_id"} ----------------------------------------------------------------------------
def _voucher(api: Api, device_id: int = 1, call_id: str = "cb-1") -> Voucher:
    v = Voucher(device_id, "+12677638475", call_id, "ck-cb-1", CALL_KEY)
    api.directory.vouchers.append(v)
    return v


async def test_a_call_is_claimed_by_its_call_id(api: Api) -> None:
    _voucher(api)
    a = await api.claim("cb-1", idem="k-1")
    assert a.status == 200, a.body
    assert (a.json["call_id"], a.json["call_key_id"]) == ("cb-1", "ck-cb-1")
    again = await api.claim("cb-1", idem="k-1")
    assert (again.status, again.json) == (200, a.json)  # a lost answer, asked again
    other = await api.claim("cb-1", idem="k-2")
    assert (other.status, other.error) == (409, "already_claimed")
    assert api.audited() == [("voucher.claim", "released", ""), ("voucher.claim", "repeated", ""),
                             ("voucher.claim", "already_claimed", "released_before")]  # fmt: skip
    assert all(e.detail.get("by") == "call_id" for e in api.directory.events)
    assert "alert" in api.directory.events[-1].detail


async def test_another_devices_call_is_not_found(api: Api) -> None:
    _voucher(api, device_id=2)
    a = await api.claim("cb-1")
    assert (a.status, a.error) == (404, "not_found")
    assert "call_id" not in a.json and "cb-1" not in a.body.decode()
    assert api.audited() == [("voucher.claim", "not_found", "no_call")]
    assert not api.directory.vouchers[0].released


async def test_a_revoked_device_cannot_claim_by_call_id(api: Api) -> None:
    _voucher(api, device_id=3)
    a = await api.claim("cb-1", key_id="dev-revoked")
    assert (a.status, a.error) == (403, "revoked")
    assert "claim_by_call_id" not in api.directory.calls


@pytest.mark.parametrize(
    "body",
    [b'{"call_id": ""}', b'{"call_id": 7}', b'{"call_id": "has space"}', b'{"call_id": "' + b"x" * 129 + b'"}',
     b'{"call_id": "cb-1", "presented": "+12677638475"}', b"{}", b'{"call_id": null}'],
)  # fmt: skip
async def test_claim_bodies_that_are_not_exactly_one_way_are_400(api: Api, body: bytes) -> None:
    _voucher(api)
    a = await api.call("POST", CLAIM, body)
    assert (a.status, a.error) == (400, "bad_request")
    assert not {"claim", "claim_by_call_id"} & set(api.directory.calls)


async def test_claim_by_presented_still_works(api: Api) -> None:
    _voucher(api)
    a = await api.call("POST", CLAIM, b'{"presented":"+12677638475"}')
    assert (a.status, a.json["call_id"]) == (200, "cb-1")
    assert "by" not in api.directory.events[0].detail


# -- POST /v1/calls/callback ----------------------------------------------------------------------------------------
async def test_a_callback_is_placed_202(api: Api) -> None:
    a = await api.callback("2001")
    assert a.status == 202, a.body
    assert a.json == {"call_id": "cb-1"}
    assert a.headers["cache-control"] == "no-store"
    assert api.callbacks.requests == [(1, "2001", T)]
    (event,) = api.directory.events
    assert (event.action, event.result, event.device_id, event.call_id) == ("callback.request", "placed", 1, "cb-1")
    assert event.detail == {"destination": "2001"}


@pytest.mark.parametrize(
    ("outcome", "status", "code"),
    [(CallbackOutcome.BUSY, 409, "busy"), (CallbackOutcome.DENIED, 403, "denied"),
     (CallbackOutcome.NO_ROUTE, 409, "no_route"), (CallbackOutcome.UNAVAILABLE, 503, "unavailable")],
)  # fmt: skip
async def test_refusals_of_the_stasis_app(api: Api, outcome: CallbackOutcome, status: int, code: str) -> None:
    api.callbacks.answer = CallbackResult(outcome, reason=f"why-{code}")
    a = await api.callback()
    assert (a.status, a.error) == (status, code)
    assert "retry-after" not in a.headers
    assert api.audited() == [("callback.request", "refused", f"why-{code}")]


async def test_rate_limited_with_retry_after(api: Api) -> None:
    api.callbacks.answer = CallbackResult(CallbackOutcome.RATE_LIMITED, retry_after_s=42, reason="daily")
    a = await api.callback()
    assert (a.status, a.error, a.headers["retry-after"]) == (429, "rate_limited", "42")
    assert api.audited() == [("callback.request", "refused", "daily")]


async def test_no_stasis_app_or_a_failing_one_is_503(api: Api) -> None:
    api.callbacks.fail = True
    a = await api.callback()
    assert (a.status, a.error) == (503, "unavailable")
    api.server.api.callbacks = None  # a node without the Stasis app
    b = await api.callback()
    assert (b.status, b.error) == (503, "unavailable")
    assert len(api.callbacks.requests) == 1
    assert api.audited() == [("callback.request", "refused", "error"), ("callback.request", "refused", "no_stasis_app")]


async def test_placed_without_a_call_id_is_not_202(api: Api) -> None:
    api.callbacks.answer = CallbackResult(CallbackOutcome.PLACED)
    a = await api.callback()
    assert (a.status, a.error) == (503, "unavailable")


@pytest.mark.parametrize(
    ("key_id", "code"), [("dev-revoked", "revoked"), ("dev-0004", "suspended"), ("dev-0005", "not_registered")]
)
async def test_devices_that_may_not_ask(api: Api, key_id: str, code: str) -> None:
    a = await api.callback(key_id=key_id)
    assert (a.status, a.error) == (403, code)
    assert api.callbacks.requests == []
    assert api.audited() == [("callback.request", "refused", code)]


@pytest.mark.parametrize(
    "body",
    [b'{"destination": ""}', b'{"destination": null}', b"{}", b'{"destination": "123456789012345678901"}',
     b'{"destination": "20#1"}', b'{"destination": 2001}', b"[]"],
)  # fmt: skip
async def test_bad_destinations_are_400(api: Api, body: bytes) -> None:
    a = await api.call("POST", CALLBACK, body)
    assert (a.status, a.error) == (400, "bad_request")
    assert api.callbacks.requests == []


async def test_the_callback_route_is_signed(api: Api) -> None:
    a = await raw_request(api.port, http("POST", CALLBACK, b'{"destination":"2001"}'))
    assert (a.status, a.error) == (401, "unauthorized")
    assert api.callbacks.requests == []
