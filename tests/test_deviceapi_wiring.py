"""The device API wired into the product, on a real store (SQLite and PostgreSQL) and a real loopback listener:
enrollment by code, status and fork (audited as `device`), vouchers made by the call paths (escrowed too when an escrow
key is configured), a nonce replayed to a second node, `runner.device_api` and the doctor's checks."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.deviceapi_fakes import Answer, http, raw_request, self_signed, signed
from support.fakes import Channels, RecordingAri
from support.keys import MASTER
from support.outbound import FakeStore, Hooks, caller, device, keyer_for
from support.services import api_store, make_service

from asterisk_securelink import config, masterkey
from asterisk_securelink.app import build
from asterisk_securelink.callkeys import escrow
from asterisk_securelink.callkeys.book import CallBook, open_row
from asterisk_securelink.callkeys.service import CallKeys
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret
from asterisk_securelink.deviceapi.codes import code_hash, format_code, new_code
from asterisk_securelink.deviceapi.server import DeviceApi, DeviceApiServer
from asterisk_securelink.dialplan import CALL_KEY_VAR
from asterisk_securelink.doctor import certificate_check, device_api_checks
from asterisk_securelink.inbound.handlers import Handlers
from asterisk_securelink.notifier import Notifier
from asterisk_securelink.outbound.controller import Outbound
from asterisk_securelink.provision import device_params
from asterisk_securelink.runner import device_api
from asterisk_securelink.stasis import CallInfo
from asterisk_securelink.store.api_store import ApiStore, add_code, fork_set_by
from asterisk_securelink.store.store import DeviceRow, Store

HOST = "pbx.example.com:8443"
NOW_MS = 1_790_000_000_000


@dataclass
class Node:
    api: ApiStore
    port: int
    events: list[dict[str, Any]]


@dataclass
class Env:
    cfg: config.Config
    store: Store
    a: Node
    b: Node  # a second node on the same database
    vouchers: CallKeys
    clock: list[int]
    nonces: int = 0

    async def call(self, method: str, target: str, body: bytes = b"", *, key_id: str, node: Node | None = None,
                   idem: str | None = None) -> Answer:  # fmt: skip
        self.nonces += 1
        auth = signed(key_id, method, target, body, host=HOST, ts=self.clock[0] // 1000,
                      nonce=f"wiring-nonce-{self.nonces:06d}")  # fmt: skip
        extra = [("Idempotency-Key", idem)] if idem else []
        return await raw_request((node or self.a).port, http(method, target, body, auth, extra))


@pytest.fixture
async def env(db_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    escrow.generate(tmp_path / "escrow.key", tmp_path / "escrow.pub")
    cfg = config.build({"escrow": {"public_key_file": "escrow.pub"}, "keys": {"trunk_prefixes": ["0"]}}, {}, tmp_path)
    clock = [NOW_MS]
    servers, nodes = [], []
    for _ in range(2):
        store = Store.from_url(db_url)
        events: list[dict[str, Any]] = []
        api = api_store(store, MASTER, device_params(cfg), audit=events.append, clock_s=lambda: clock[0] / 1000)
        server = DeviceApiServer(DeviceApi(api, public_host=HOST, clock=lambda: clock[0]), "127.0.0.1", 0)
        await server.start()
        assert server.bound_port
        servers.append(server)
        nodes.append(Node(api, server.bound_port, events))
    a = nodes[0]
    try:
        keys = CallKeys(cfg, CallBook(cfg, a.api.store), a.api.vouchers, lambda: clock[0])  # type: ignore[arg-type]
        yield Env(cfg, a.api.store, a, nodes[1], keys, clock)
    finally:
        for server, node in zip(servers, nodes, strict=True):
            await server.close()
            await node.api.store.close()


async def registered(store: Store, n: int = 1) -> DeviceRow:
    d = await store.add_device(f"Dev {n}", f"+1555000000{n}", None, f"dev-000{n}", "test")
    return await store.update_device(d.id, "device.register", "test", status="registered")


async def test_enroll_by_code_status_and_fork_over_the_store(env: Env) -> None:
    dev = await registered(env.store)
    code = new_code()
    await add_code(env.store, dev.id, dev.key_id, code_hash(code), NOW_MS, 900, "cli")
    body = json.dumps({"code": format_code(code).lower()}).encode()
    got = await raw_request(env.a.port, http("POST", "/v1/enroll", body))
    assert got.status == 200, got.body
    doc = got.json
    assert base64.urlsafe_b64decode(doc["secret"] + "=") == device_secret(MASTER, dev.key_id)
    assert (doc["key_id"], doc["trunk"], doc["out"], doc["server_time_ms"]) == (dev.key_id, "0", "XXXXXXXXXX", NOW_MS)
    again = await raw_request(env.b.port, http("POST", "/v1/enroll", body))  # single use, on any node
    assert (again.status, again.error) == (404, "not_found")
    assert [(e["action"], e["result"], e["actor"]) for e in env.a.events] == [("device.enroll", "ok", "device")]

    status = await env.call("GET", "/v1/device", key_id=dev.key_id)
    assert status.status == 200 and status.json["status"] == "registered" and status.json["fork"] is True
    fork = await env.call("PUT", "/v1/device/fork", b'{"enabled":false}', key_id=dev.key_id)
    assert fork.status == 200 and fork.json == {"key_id": dev.key_id, "fork": False}
    assert (await env.store.get_device(dev.id)).fork_enabled is False  # type: ignore[union-attr]
    who = await fork_set_by(env.store, dev.id)
    assert who is not None and who[0] == "device"
    (row,) = [e for e in await env.store.list_audit() if e.action == "device.fork"]
    assert (row.actor, row.device_id, row.detail) == ("device", dev.id, '{"fork": "off"}')


async def test_an_outbound_voucher_is_released_once_and_is_the_escrowed_key(env: Env, tmp_path: Path) -> None:
    dev, other = await registered(env.store, 1), await registered(env.store, 2)
    key = derive_key(device_secret(MASTER, dev.key_id), Direction.OUTBOUND, 5, env.cfg.outbound_fmt)
    issued = await env.vouchers.outbound("call-1", dev.id, key)
    claim = json.dumps({"presented": "0" + key}).encode()  # the carrier put its trunk prefix in front
    first = await env.call("POST", "/v1/calls/claim", claim, key_id=dev.key_id, idem="retry-1")
    assert first.status == 200, first.body
    assert first.json == {"call_id": "call-1", "call_key_id": issued.key_id,
                          "call_key": base64.urlsafe_b64encode(issued.key).rstrip(b"=").decode()}  # fmt: skip
    (escrowed,) = await env.store.get_call_keys("call-1")
    assert open_row(escrowed, tmp_path / "escrow.key") == issued.key  # what `securelink escrow decrypt` opens
    retry = await env.call("POST", "/v1/calls/claim", claim, key_id=dev.key_id, node=env.b, idem="retry-1")
    assert retry.status == 200 and retry.json == first.json
    second = await env.call("POST", "/v1/calls/claim", claim, key_id=dev.key_id, idem="retry-2")
    assert (second.status, second.error) == (409, "already_claimed")
    stolen = await env.call("POST", "/v1/calls/claim", claim, key_id=other.key_id)
    assert (stolen.status, stolen.error) == (404, "not_found")
    results = [(e["result"], json.loads(e["detail"] or "{}").get("reason")) for e in env.a.events + env.b.events]
    assert sorted(results, key=str) == sorted(
        [("released", None), ("repeated", None), ("already_claimed", "released_before"), ("not_found", "no_call")],
        key=str,
    )
    alert = next(e for e in env.a.events if e["result"] == "already_claimed")
    assert "cloned" in alert["detail"]
    await env.vouchers.ended("call-1")  # hung up: nothing left to release, only the escrow copy
    after = await env.call("POST", "/v1/calls/claim", claim, key_id=dev.key_id, idem="retry-1")
    assert (after.status, after.error) == (404, "not_found")
    assert len(await env.store.get_call_keys("call-1")) == 1


async def test_a_claim_after_the_ttl_a_wrong_number_and_a_replayed_nonce_are_refused(env: Env) -> None:
    dev = await registered(env.store)
    key = derive_key(device_secret(MASTER, dev.key_id), Direction.OUTBOUND, 5, env.cfg.outbound_fmt)
    await env.vouchers.outbound("call-2", dev.id, key)
    wrong = await env.call("POST", "/v1/calls/claim", b'{"presented":"5550001234"}', key_id=dev.key_id)
    assert (wrong.status, wrong.error) == (404, "not_found")
    body = json.dumps({"presented": key}).encode()
    env.clock[0] += 90_000  # voucher_ttl (90 s) later
    ts = env.clock[0] // 1000
    auth = signed(dev.key_id, "POST", "/v1/calls/claim", body, host=HOST, ts=ts, nonce="replayed-nonce-01")
    request = http("POST", "/v1/calls/claim", body, auth)
    late = await raw_request(env.a.port, request)
    assert (late.status, late.error) == (404, "not_found")
    replayed = await raw_request(env.b.port, request)  # the same nonce at another node
    assert (replayed.status, replayed.error) == (401, "unauthorized")
    reasons = [json.loads(e["detail"])["reason"] for e in env.a.events]
    assert reasons == ["wrong_number", "expired"]


async def test_number_mode_presents_the_enterprise_number_and_the_phone_claims_with_it(env: Env) -> None:
    cfg = replace(env.cfg, outbound=replace(env.cfg.outbound, present="number", present_number="+12155550100"))
    hooks, ari = Hooks(), RecordingAri()
    keyer = keyer_for(MASTER, cfg.outbound_fmt)
    out = Outbound(cfg, FakeStore(device()), ari, keyer, lambda: 100, notifier=Notifier(), hooks=hooks)
    try:
        await out.stasis_start(caller())
        (orig,) = ari.of("originate")
        assert orig[2]["caller_id"] == "+12155550100" and hooks.presented == ["+12155550100"]
    finally:
        await out.close(0)
    dev = await registered(env.store)
    vouchers = CallKeys(cfg, CallBook(cfg, env.store), env.a.api.vouchers, lambda: env.clock[0])  # type: ignore[arg-type]
    issued = await vouchers.outbound("call-n", dev.id, "+12155550100")
    got = await env.call("POST", "/v1/calls/claim", b'{"presented":"2155550100"}', key_id=dev.key_id)
    assert got.status == 200 and got.json["call_key_id"] == issued.key_id


async def test_an_admitted_inbound_call_gets_a_voucher_and_its_key_id(env: Env, tmp_path: Path) -> None:
    t = NOW_MS
    svc = make_service(env.cfg, env.store, clock_ms=lambda: t, device_sync_interval=0)
    dev = await registered(env.store)
    await svc.start()
    channels = Channels()
    handlers = Handlers(env.cfg, svc, channels, Notifier(), env.vouchers)
    key = derive_key(device_secret(MASTER, dev.key_id), Direction.INBOUND, t // 30_000, env.cfg.inbound_fmt)
    await handlers.stasis_start(CallInfo("in-1", "PJSIP/carrier-00000001", key, "100", ("inbound", "ani")))
    (var,) = [c for c in channels.calls if c[:3] == ("var", "in-1", CALL_KEY_VAR)]
    got = await env.call("POST", "/v1/calls/claim", json.dumps({"presented": key}).encode(), key_id=dev.key_id)
    assert got.status == 200 and got.json["call_key_id"] == var[3] and got.json["call_id"] == "in-1"
    (escrowed,) = await env.store.get_call_keys("in-1")
    assert escrowed.direction == "inbound"
    assert (
        base64.urlsafe_b64encode(open_row(escrowed, tmp_path / "escrow.key")).rstrip(b"=").decode()
        == (got.json["call_key"])
    )
    await handlers.stasis_start(CallInfo("in-2", "PJSIP/carrier-00000002", key, "100", ("inbound", "ani")))
    assert not [c for c in channels.calls if c[:3] == ("var", "in-2", CALL_KEY_VAR)]  # replayed: no voucher
    await svc.audit.drain()


# -- device_api and doctor ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_device_api_serves_on_the_event_loop_and_the_doctor_sees_it(store: Store, tmp_path: Path) -> None:
    masterkey.create(tmp_path / "master.key")
    cert, key = self_signed(tmp_path)
    port = free_port()
    section = {"listen": f"127.0.0.1:{port}", "public_host": HOST, "tls_cert": str(cert), "tls_key": str(key)}
    cfg = config.build({"device_api": section}, {}, tmp_path)
    app = build(cfg, store, MASTER, needs_ari=False)
    assert await device_api_checks(config.build({}, {}, tmp_path)) == []  # off: nothing to check
    down = await device_api_checks(cfg)
    assert [(c.name, c.ok) for c in down] == [("device API certificate", True), ("device API", False)]
    async with device_api(app) as api:
        assert api is not None
        checks = await device_api_checks(cfg)
        assert [(c.name, c.ok) for c in checks] == [("device API certificate", True), ("device API", True)], checks
    soon = certificate_check(cfg, datetime.now(UTC) + timedelta(days=20))
    assert not soon.ok and soon.warn and "within 14 days" in soon.detail
    expired = certificate_check(cfg, datetime.now(UTC) + timedelta(days=40))
    assert not expired.ok and not expired.warn and "expired" in expired.detail
    off = config.build({}, {}, tmp_path)
    async with device_api(build(off, store, MASTER, needs_ari=False)) as none:
        assert none is None


async def test_a_certificate_that_does_not_load_stops_the_start_with_one_line(store: Store, tmp_path: Path) -> None:
    from asterisk_securelink.errors import StartupError

    masterkey.create(tmp_path / "master.key")
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    section = {"listen": f"127.0.0.1:{free_port()}", "tls_cert": "bad.pem", "tls_key": "bad.pem"}
    cfg = config.build({"device_api": section}, {}, tmp_path)
    with pytest.raises(StartupError) as err:
        async with device_api(build(cfg, store, MASTER, needs_ari=False)):
            pass
    assert str(err.value).startswith("device_api.tls_cert") and "\n" not in str(err.value)
    with pytest.raises(config.ConfigError, match=r"^device_api.listen: 192.0.2.1 is not a loopback address"):
        config.build({"device_api": {"listen": "192.0.2.1:8443"}}, {}, tmp_path)
