"""`POST /v1/calls/intent` and SLK1 1.2 provisioning over a real loopback listener with an in-memory directory:
every answer of the intent route (201, 400, 403, 409, 429, 503) and its audit, enrollment by the phone's version
(`"v"`, 409 `upgrade_required`) and `GET /v1/device?v=1.2`. (The same over the real store:
tests/test_deviceapi_intent_wiring.py.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from support.clock import Clock
from support.deviceapi_fakes import (
    ACCESS,
    PARAMS,
    PARAMS_1_2,
    Answer,
    MemoryDirectory,
    http,
    raw_request,
    signed,
)

from asterisk_securelink.config import RoutingConfig
from asterisk_securelink.deviceapi.codes import code_hash
from asterisk_securelink.deviceapi.ports import IntentOutcome, IntentResult, IntentSettings, Offer
from asterisk_securelink.deviceapi.server import DeviceApi, DeviceApiServer

HOST = "pbx.example.com:8443"
T = 1_790_000_000_250
POOL = ("+12155550199", "+12155550198", "+12155550197")
ON = IntentSettings(POOL, on=True)
INTENT = "/v1/calls/intent"


@dataclass
class Api:
    directory: MemoryDirectory
    clock: Clock[int]
    port: int
    nonces: int = 0

    async def call(self, method: str, target: str, body: bytes = b"", *, key_id: str = "dev-0001",
                   idem: str | None = None) -> Answer:  # fmt: skip
        self.nonces += 1
        auth = signed(key_id, method, target, body, host=HOST, ts=self.clock.t // 1000, nonce=f"n-{self.nonces:016d}")
        extra = [("Idempotency-Key", idem)] if idem is not None else []
        return await raw_request(self.port, http(method, target, body, auth, extra))

    async def intent(self, destination: object = "2001", **kw: str) -> Answer:
        return await self.call("POST", INTENT, json.dumps({"destination": destination}).encode(), **kw)

    def audited(self) -> list[tuple[str, str, str]]:
        return [(e.action, e.result, e.detail.get("reason", "")) for e in self.directory.events]


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    directory = MemoryDirectory(intents=ON, offer=Offer(PARAMS, PARAMS_1_2))
    directory.add("dev-0001", 1)
    directory.add("dev-revoked", 2, status="revoked")
    directory.add("dev-0003", 3, status="suspended")
    directory.add("dev-0004", 4, status="provisioned")
    clock = Clock(T)
    server = DeviceApiServer(DeviceApi(directory, public_host=HOST, clock=clock), "127.0.0.1", 0)
    await server.start()
    assert server.bound_port
    try:
        yield Api(directory, clock, server.bound_port)
    finally:
        await server.close()


# -- POST /v1/calls/intent ------------------------------------------------------------------------------------
async def test_an_intent_names_an_access_number_of_the_pool(api: Api) -> None:
    a = await api.intent("2001", idem="k-1")
    assert a.status == 201, a.body
    assert a.headers["cache-control"] == "no-store"
    assert list(a.json) == ["intent_id", "call_id", "dial", "expires_ms", "server_time_ms"]
    assert a.json == {"intent_id": "intent-1", "call_id": "call-1", "dial": a.json["dial"],
                      "expires_ms": T + 30_000, "server_time_ms": T}  # fmt: skip
    assert a.json["dial"] in POOL
    ((device, dial, destination, at, idem),) = api.directory.intent_requests
    assert (device, dial, destination, at) == (1, a.json["dial"], "2001", T)
    assert idem is not None and len(idem) == 64 and idem != "k-1"  # bound to key_id, route and body (L5)
    (event,) = api.directory.events
    assert (event.action, event.result, event.device_id, event.call_id) == ("intent.create", "created", 1, "call-1")
    assert event.detail == {"intent": "intent-1", "access": a.json["dial"], "destination": "2001"}
    assert "k-1" not in repr(api.directory.events)  # never the Idempotency-Key


async def test_the_access_number_is_drawn_from_the_whole_pool(api: Api) -> None:
    seen = set()
    for _ in range(40):  # 3 numbers: all three appear with probability 1 - 3 * (2/3)^40 - ..., about 1 - 1e-6
        a = await api.intent()
        assert a.status == 201
        seen.add(a.json["dial"])
    assert seen == set(POOL)


async def test_a_repeat_answers_the_same_intent(api: Api) -> None:
    api.directory.intent_answer = IntentResult(IntentOutcome.REPEATED, "intent-9", "call-9", ACCESS, T + 5000)
    a = await api.intent("2001", idem="k-1")
    assert (a.status, a.json["intent_id"], a.json["dial"], a.json["expires_ms"]) == (201, "intent-9", ACCESS, T + 5000)
    assert api.audited() == [("intent.create", "repeated", "")]


async def test_rate_limited_with_retry_after(api: Api) -> None:
    api.directory.intent_answer = IntentResult(IntentOutcome.RATE_LIMITED, retry_after_s=17)
    a = await api.intent()
    assert (a.status, a.error, a.headers["retry-after"]) == (429, "rate_limited", "17")
    assert api.audited() == [("intent.create", "refused", "rate_limited")]


async def test_a_noisy_number_is_told_to_use_dtmf(api: Api) -> None:
    api.directory.intent_answer = IntentResult(IntentOutcome.USE_DTMF)
    a = await api.intent()
    assert (a.status, a.error) == (409, "use_dtmf")
    assert api.audited() == [("intent.create", "refused", "noise")]


async def test_a_home_extension_lets_an_intent_go_without_a_destination(api: Api) -> None:
    api.directory.intents = IntentSettings(POOL, on=True, home="extension:8000")
    a = await api.call("POST", INTENT, b'{"destination": null}')
    assert a.status == 201 and "create_intent" in api.directory.calls


REFUSED = [("911", "emergency"), ("9112", "emergency"), ("0044207946000", "denied_pattern"),
           ("12125551234", "not_allowed")]  # fmt: skip


@pytest.mark.parametrize(("destination", "reason"), REFUSED)
async def test_the_guard_refuses_a_destination_before_an_intent_exists(api: Api, destination: str, reason: str) -> None:
    api.directory.intents = IntentSettings(POOL, on=True, policy=RoutingConfig())
    a = await api.intent(destination)
    assert (a.status, a.error) == (403, "denied")
    assert "create_intent" not in api.directory.calls
    assert api.audited() == [("intent.create", "refused", reason)]
    assert (await api.intent("2001")).status == 201  # an internal extension passes


@pytest.mark.parametrize(
    "settings", [IntentSettings(POOL, on=False), IntentSettings((), on=True)], ids=["intent off", "no access numbers"]
)
async def test_intents_not_offered_is_use_dtmf(api: Api, settings: IntentSettings) -> None:
    api.directory.intents = settings
    a = await api.intent()
    assert (a.status, a.error) == (409, "use_dtmf")
    assert "create_intent" not in api.directory.calls
    assert api.audited() == [("intent.create", "refused", "intent_off")]


async def test_the_store_failing_is_503(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    api.directory.fail_on = "create_intent_unavailable"
    a = await api.intent()
    assert (a.status, a.error) == (503, "unavailable")
    assert api.audited() == [("intent.create", "refused", "unavailable")]


async def test_no_dial_tone_by_intent(api: Api) -> None:
    for body in (b'{"destination": null}', b"{}"):
        a = await api.call("POST", INTENT, body)
        assert (a.status, a.error) == (403, "denied")
    assert "create_intent" not in api.directory.calls
    assert api.audited() == [("intent.create", "refused", "no_destination")] * 2


@pytest.mark.parametrize(
    ("key_id", "code"), [("dev-revoked", "revoked"), ("dev-0003", "suspended"), ("dev-0004", "not_registered")]
)
async def test_devices_that_may_not_ask(api: Api, key_id: str, code: str) -> None:
    a = await api.intent(key_id=key_id)
    assert (a.status, a.error) == (403, code)
    assert "create_intent" not in api.directory.calls
    assert api.audited() == [("intent.create", "refused", code)]


@pytest.mark.parametrize(
    "body",
    [b'{"destination": ""}', b'{"destination": "123456789012345678901"}', b'{"destination": "20#1"}',
     b'{"destination": 2001}', b'{"destination": "\xd9\xa1"}', b'{"destination": ["2001"]}', b"[]"],
)  # fmt: skip
async def test_bad_destinations_are_400(api: Api, body: bytes) -> None:
    a = await api.call("POST", INTENT, body)
    assert (a.status, a.error) == (400, "bad_request")
    assert "create_intent" not in api.directory.calls


async def test_twenty_digits_is_a_destination(api: Api) -> None:
    a = await api.intent("0" * 20)
    assert a.status == 201
    assert api.directory.intent_requests[0][2] == "0" * 20


async def test_a_bad_idempotency_key_is_400(api: Api) -> None:
    a = await api.intent(idem="has space")
    assert (a.status, a.error) == (400, "bad_request")


async def test_the_intent_route_is_signed(api: Api) -> None:
    a = await raw_request(api.port, http("POST", INTENT, b'{"destination":"2001"}'))
    assert (a.status, a.error) == (401, "unauthorized")
    assert "create_intent" not in api.directory.calls


# -- SLK1 1.2 provisioning: POST /v1/enroll's "v", GET /v1/device?v= --------------------------------------------
def _code(api: Api, code: str = "ABCDEFGHIJKLMNOP", key_id: str = "dev-0001") -> bytes:
    api.directory.codes[code_hash(code)] = (key_id, api.clock.t + 900_000, False)
    return code.encode()


async def _enroll(api: Api, **fields: object) -> Answer:
    return await raw_request(api.port, http("POST", "/v1/enroll", json.dumps({"code": _code(api).decode(), **fields})
                                            .encode()))  # fmt: skip


@pytest.mark.parametrize("v", ["1.2", "1.3", "2"])
async def test_a_1_2_phone_is_provisioned_for_the_access_number(api: Api, v: str) -> None:
    a = await _enroll(api, v=v)
    assert a.status == 200, a.body
    assert list(a.json) == ["key_id", "secret", "v", "period", "t0", "in", "out", "look_behind", "look_ahead",
                            "trunk", "mode", "access", "server_time_ms"]  # fmt: skip
    assert (a.json["v"], a.json["mode"], a.json["access"]) == ("1.2", "intent", ACCESS)


@pytest.mark.parametrize("fields", [{}, {"v": "1.1"}, {"v": "1"}, {"v": "1.0"}])
async def test_a_1_1_phone_never_sees_1_2_values(api: Api, fields: dict[str, str]) -> None:
    a = await _enroll(api, **fields)
    assert a.status == 200, a.body
    assert (a.json["v"], a.json["mode"], a.json["dial"]) == ("1.1", "ani", "")
    assert "access" not in a.json


async def test_a_1_1_phone_on_a_platform_without_ani_or_dnis_must_upgrade_and_keeps_its_code(api: Api) -> None:
    api.directory.offer = Offer(None, PARAMS_1_2)
    a = await _enroll(api, v="1.1")
    assert (a.status, a.error) == (409, "upgrade_required")
    assert "redeem_code" not in api.directory.calls  # the code is not spent
    b = await _enroll(api, v="1.2")
    assert (b.status, b.json["mode"]) == (200, "intent")


async def test_a_1_2_phone_on_a_platform_without_access_numbers_gets_ani(api: Api) -> None:
    api.directory.offer = Offer(PARAMS)
    a = await _enroll(api, v="1.2")
    assert (a.status, a.json["v"], a.json["mode"]) == (200, "1.1", "ani")


@pytest.mark.parametrize("v", [1.2, "", "1.2.0", "v1.2", None])
async def test_enroll_bad_versions_are_400(api: Api, v: object) -> None:
    body = json.dumps({"code": _code(api).decode(), "v": v}).encode()
    a = await raw_request(api.port, http("POST", "/v1/enroll", body))
    if v is None:  # null: the phone did not say, 1.1
        assert (a.status, a.json["v"]) == (200, "1.1")
    else:
        assert (a.status, a.error) == (400, "bad_request")
        assert "redeem_code" not in api.directory.calls


async def test_status_by_the_phone_s_version(api: Api) -> None:
    old = await api.call("GET", "/v1/device")
    assert (old.status, old.json["mode"], old.json["dial"]) == (200, "ani", "")
    new = await api.call("GET", "/v1/device?v=1.2")
    assert (new.status, new.json["mode"], new.json["access"]) == (200, "intent", ACCESS)
    assert "dial" not in new.json
    twice = await api.call("GET", "/v1/device?v=1.2&v=1.1")
    assert (twice.status, twice.error) == (400, "bad_request")
