"""`POST /v1/calls/intent` over the real store (SQLite and PostgreSQL) and a real loopback listener: the intent is in
the shared store (the access entry's `IntentStore.admit` spends it), a repeat with the same Idempotency-Key answers the
same intent on another node, a noise record makes it 409 `use_dtmf`, the eleventh in a minute is 429, and every
request is audited as `intent.create`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.deviceapi_fakes import Answer, http, raw_request, signed
from support.keys import MASTER

from asterisk_securelink import config
from asterisk_securelink.callkeys.store import VoucherStore
from asterisk_securelink.callkeys.vouchers import VoucherKeys
from asterisk_securelink.deviceapi.server import DeviceApi, DeviceApiServer
from asterisk_securelink.notifier import Notifier
from asterisk_securelink.provision import intent_settings, offer
from asterisk_securelink.store.api_store import ApiStore
from asterisk_securelink.store.intents import IntentStore
from asterisk_securelink.store.lanes import lanes_for
from asterisk_securelink.store.store import DeviceRow, Store

HOST = "pbx.example.com:8443"
NOW_MS = 1_790_000_000_000
POOL = ["+12155550199", "+12155550198"]


@dataclass
class Env:
    store: Store
    intents: IntentStore
    ports: list[int]
    events: list[dict[str, Any]]
    clock: list[int]
    nonces: int = 0

    async def intent(self, key_id: str, destination: str | None = "2001", *, node: int = 0,
                     idem: str | None = None) -> Answer:  # fmt: skip
        self.nonces += 1
        body = json.dumps({"destination": destination}).encode()
        auth = signed(key_id, "POST", "/v1/calls/intent", body, host=HOST, ts=self.clock[0] // 1000,
                      nonce=f"intent-nonce-{self.nonces:06d}")  # fmt: skip
        extra = [("Idempotency-Key", idem)] if idem else []
        return await raw_request(self.ports[node], http("POST", "/v1/calls/intent", body, auth, extra))


@pytest.fixture
async def env(db_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    cfg = config.build({"calling": {"access_numbers": POOL}}, {}, tmp_path)
    clock = [NOW_MS]
    events: list[dict[str, Any]] = []
    stores, servers, ports = [], [], []
    for _ in range(2):  # two nodes on one database
        store = Store.from_url(db_url)
        lanes = lanes_for(store.engine)
        api = ApiStore(store, MASTER, offer(cfg), notify=Notifier(events.append).api_event,
                       vouchers=VoucherStore(lanes, VoucherKeys(MASTER), ()), lanes=lanes,
                       intents=IntentStore(store, lanes), intent_settings=intent_settings(cfg))  # fmt: skip
        server = DeviceApiServer(DeviceApi(api, public_host=HOST, clock=lambda: clock[0]), "127.0.0.1", 0)
        await server.start()
        assert server.bound_port
        stores.append(store)
        servers.append(server)
        ports.append(server.bound_port)
    try:
        yield Env(stores[0], IntentStore(stores[0], lanes_for(stores[0].engine)), ports, events, clock)
    finally:
        for server, store in zip(servers, stores, strict=True):
            await server.close()
            await store.close()


async def device(store: Store, n: int = 1, status: str = "registered") -> DeviceRow:
    d = await store.add_device(f"Dev {n}", f"+1555000000{n}", None, f"dev-000{n}", "test")
    if status == "provisioned":
        return d
    return await store.update_device(d.id, f"device.{status}", "test", status=status)


def intent_events(env: Env) -> list[tuple[str, str]]:
    return [(e["result"], json.loads(e["detail"] or "{}").get("reason", "")) for e in env.events
            if e["action"] == "intent.create"]  # fmt: skip


async def test_an_intent_is_spent_by_the_call_it_names(env: Env) -> None:
    dev = await device(env.store)
    a = await env.intent(dev.key_id, "2001", idem="k-1")
    assert a.status == 201, a.body
    doc = a.json
    assert doc["dial"] in POOL and doc["expires_ms"] == NOW_MS + 30_000 and doc["server_time_ms"] == NOW_MS
    again = await env.intent(dev.key_id, "2001", node=1, idem="k-1")  # the answer was lost: the same intent
    assert again.status == 201 and again.json == doc
    admitted = await env.intents.admit([dev.id], doc["dial"], "PJSIP/trunk-1", NOW_MS + 5000)
    assert admitted.intent is not None
    assert (admitted.intent.intent_id, admitted.intent.call_id, admitted.intent.destination) == (
        doc["intent_id"], doc["call_id"], "2001")  # fmt: skip
    assert intent_events(env) == [("created", ""), ("repeated", "")]
    assert all(e["actor"] == "device" and e["device_id"] == dev.id for e in env.events)
    assert "k-1" not in json.dumps(env.events, default=str)


async def test_a_noisy_number_gets_use_dtmf(env: Env) -> None:
    dev = await device(env.store)
    miss = await env.intents.admit([dev.id], POOL[0], "PJSIP/spoofer-1", NOW_MS - 10_000)  # no live intent: noise
    assert miss.noise == (dev.id,)
    a = await env.intent(dev.key_id)
    assert (a.status, a.error) == (409, "use_dtmf")
    env.clock[0] = NOW_MS + 120_000  # intent_quiet (120 s) after the noise
    assert (await env.intent(dev.key_id)).status == 201
    assert intent_events(env) == [("refused", "noise"), ("created", "")]


async def test_the_eleventh_intent_in_a_minute_is_rate_limited(env: Env) -> None:
    dev = await device(env.store)
    for i in range(10):
        env.clock[0] = NOW_MS + i * 1000
        assert (await env.intent(dev.key_id, node=i % 2)).status == 201
    a = await env.intent(dev.key_id)
    assert (a.status, a.error, a.headers["retry-after"]) == (429, "rate_limited", "51")  # the first leaves at +60 s
    assert intent_events(env)[-1] == ("refused", "rate_limited")


@pytest.mark.parametrize(("status", "code"), [("provisioned", "not_registered"), ("suspend", "suspended")])
async def test_a_device_that_may_not_ask(env: Env, status: str, code: str) -> None:
    dev = await device(env.store, status=status if status == "provisioned" else "registered")
    if status == "suspend":
        await env.store.update_device(dev.id, "device.suspend", "test", status="suspended")
    a = await env.intent(dev.key_id)
    assert (a.status, a.error) == (403, code)
    assert intent_events(env) == [("refused", code)]
