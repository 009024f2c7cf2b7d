#!/usr/bin/env python3
"""The server side of `bench/claims.py`, run as its child: `claims_server.py SPEC` (JSON).

The real `DeviceApiServer` (TLS with a self-signed certificate made for the run) over an in-memory `DeviceDirectory`
or the store-backed `store.api_store.ApiStore` (`database_url`), and a call generator that adds each planned call's
voucher `LEAD_S` before its claim is due and ends the call `HANGUP_S` after. Protocol on stdin/stdout: prints
`READY <port> <ca file>`, reads `GO <unix time T0>`, places the calls, reads `STOP` (or EOF), prints
`STATS <json>` (what the directory answered, which vouchers it released, the time of each store call, CPU seconds)
and exits. The plan of calls (`plan`) is shared with the load side, so both know every call without talking.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asterisk_securelink.core.slk1 import device_secret
from asterisk_securelink.runner import SWITCH_INTERVAL

MASTER = hashlib.sha256(b"bench/claims.py master key").digest()
LEAD_S = 1.0  # a call's voucher exists this long before its claim is sent
HANGUP_S = 5.0  # and ends this long after
KINDS = ("genuine", "wrong_signature", "wrong_number")


@dataclass(frozen=True)
class Call:
    index: int
    device: int  # 1-based device number; key_id dev-NNNNN
    number: str  # the caller number the call presented
    at: float  # seconds after T0 the claim is due
    kind: str  # genuine | wrong_signature | wrong_number
    claim_device: int  # who signs the claim
    claim_number: str  # what it claims


def key_id(device: int) -> str:
    return f"dev-{device:05d}"


def call_key(index: int) -> bytes:
    return hashlib.sha256(b"call-key\x00" + str(index).encode()).digest()


def plan(rate: float, duration: float, forged: float, devices: int, seed: int) -> list[Call]:
    """The calls, each with the claim made for it. Deterministic: both processes compute the same list."""
    rng = random.Random(seed)
    n = int(rate * duration)
    forged_ix = set(rng.sample(range(n), round(n * forged)))
    calls: list[Call] = []
    for j in range(n):
        device = rng.randrange(devices) + 1
        number = f"+1{rng.randrange(2, 10)}{rng.randrange(10**9):09d}"
        kind = "genuine" if j not in forged_ix else rng.choice(KINDS[1:])
        claimer, claimed = device, number
        if kind == "wrong_number":  # another device signs, naming this call's number
            claimer = (device + rng.randrange(1, devices)) % devices + 1 if devices > 1 else device
        calls.append(Call(j, device, number, j / rate, kind, claimer, claimed))
    return calls


# -- the server -----------------------------------------------------------------------------------
def self_signed(folder: Path) -> tuple[Path, Path]:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_file, key_file


def bench_params() -> Any:
    from asterisk_securelink.core.provisioning import DeviceParams

    return DeviceParams(period=30, t0=0, inbound_format="+1NXXNXXXXXX", outbound_format="+1NXXNXXXXXX",
                        look_behind=1, look_ahead=1, trunk=("0", "011"), mode="ani")  # fmt: skip


class MemoryDirectory:
    """An in-memory `DeviceDirectory` indexed for load: vouchers by (device, number), nonces purged as they expire."""

    def __init__(self, devices: int) -> None:
        from asterisk_securelink.deviceapi.ports import DeviceView

        params = bench_params()
        self.views = {key_id(d): DeviceView(d, key_id(d), "registered", True, params) for d in range(1, devices + 1)}
        self.nonces: dict[tuple[str, str], int] = {}
        self.vouchers: dict[tuple[int, str], dict[str, Any]] = {}
        self.audited = 0

    async def by_key_id(self, kid: str) -> Any:
        return self.views.get(kid)

    async def retired(self, kid: str) -> bool:
        return False

    def secret_of(self, kid: str) -> bytes:
        return device_secret(MASTER, kid)

    async def nonce_insert_if_absent(self, kid: str, nonce: str, expires: int) -> bool:
        if (kid, nonce) in self.nonces:
            return False
        self.nonces[(kid, nonce)] = expires
        return True

    async def redeem_code(self, code_hash: str, now_ms: int) -> Any:
        return None

    async def set_fork(self, device_id: int, enabled: bool, actor: str) -> None:
        return None

    async def claim(self, device_id: int, presented: str, now_ms: int, idempotency_key: str | None) -> Any:
        from asterisk_securelink.deviceapi.ports import ClaimOutcome, ClaimResult

        v = self.vouchers.get((device_id, presented))
        if v is None:
            return ClaimResult(ClaimOutcome.NOT_FOUND, "no_call")
        if v["released"]:
            if idempotency_key and idempotency_key == v["idem"]:
                return ClaimResult(ClaimOutcome.REPEATED, "", v["call_id"], v["id"], v["key"])
            return ClaimResult(ClaimOutcome.ALREADY_CLAIMED, "released_before", v["call_id"])
        v["released"], v["idem"] = True, idempotency_key
        return ClaimResult(ClaimOutcome.RELEASED, "", v["call_id"], v["id"], v["key"])

    def audit(self, event: Any) -> None:
        self.audited += 1

    async def add_call(self, call: Call) -> None:
        voucher = {"id": f"ck-{call.index}", "call_id": f"call-{call.index}", "key": call_key(call.index)}
        self.vouchers[(call.device, call.number)] = {**voucher, "released": False, "idem": None}

    async def end_call(self, call: Call) -> None:
        self.vouchers.pop((call.device, call.number), None)

    async def purge(self, now_ms: int) -> None:
        for k in [k for k, exp in self.nonces.items() if exp < now_ms // 1000]:
            del self.nonces[k]


def api_store_class(path: str | None) -> Any:
    """`ApiStore` from `store.api_store`, or from another copy of that module (`path`: e.g. the version before a
    change, saved with `git show REV:asterisk_securelink/store/api_store.py > FILE`), for before/after runs."""
    if not path:
        from asterisk_securelink.store.api_store import ApiStore

        return ApiStore
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_alt_api_store", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ApiStore


class StoreDirectory:
    """The production `ApiStore` on a database, with the real `AuditWriter`; calls go through the vouchers' store
    half (`callkeys.store.VoucherStore`)."""

    def __init__(self, url: str, devices: int, api_store: str | None = None) -> None:
        self.url = url
        self.devices = devices
        self.api_store = api_store

    async def start(self) -> Any:
        from asterisk_securelink.audit import AuditWriter
        from asterisk_securelink.core.formats import NumberFormat
        from asterisk_securelink.store.migrations import upgrade
        from asterisk_securelink.store.store import Store

        await upgrade(self.url)
        self.store = Store.from_url(self.url)
        self.writer = AuditWriter(self.store.audit_many)
        if self.api_store:  # an earlier ApiStore (before the per-call keys moved to `callkeys`): its own vouchers
            self.api = api_store_class(self.api_store)(self.store, MASTER, bench_params(), audit=self.writer.record)
            self.add_voucher, self.end_voucher, keys = self.api.add_voucher, self.api.end_call, self.api.keys
        else:
            from asterisk_securelink.callkeys.store import VoucherStore
            from asterisk_securelink.callkeys.vouchers import VoucherKeys
            from asterisk_securelink.notifier import Notifier
            from asterisk_securelink.store.api_store import ApiStore
            from asterisk_securelink.store.lanes import lanes_for

            lanes = lanes_for(self.store.engine)
            vouchers = VoucherStore(lanes, VoucherKeys(MASTER), bench_params().trunk)
            notify = Notifier(self.writer.record).api_event
            self.api = ApiStore(self.store, MASTER, bench_params(), notify=notify, vouchers=vouchers, lanes=lanes)
            self.add_voucher, self.end_voucher, keys = vouchers.add, vouchers.end_call, vouchers.keys
        self.keys = keys
        self.fmt = NumberFormat(bench_params().outbound_format)
        self.ids: dict[int, int] = {}
        for d in range(1, self.devices + 1):  # a database of an earlier run keeps its devices (key ids are unique)
            row = await self.store.get_device(key_id(d))
            if row is None:
                row = await self.store.add_device(f"Bench {d}", f"+1555{d:07d}", None, key_id(d), "bench")
            self.ids[d] = row.id
        return self.api

    async def add_call(self, call: Call) -> None:
        dev = self.ids[call.device]
        shown = self.keys.of_key(dev, self.fmt, call.number)
        await self.add_voucher(f"ck-{call.index}", f"call-{call.index}", dev, "outbound", shown,
                               call_key(call.index), time.time_ns() // 1_000_000, 90)  # fmt: skip

    async def end_call(self, call: Call) -> None:
        await self.end_voucher(f"call-{call.index}")

    async def purge(self, now_ms: int) -> None:
        await self.api.purge(now_ms)


class Recording:
    """Wraps a directory: records what `claim` answered (for the forged-claim check) and times each store call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.outcomes: Counter[str] = Counter()
        self.released: list[str] = []
        self.times: dict[str, list[float]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _took(self, name: str, start: float) -> None:
        self.times.setdefault(name, []).append((time.perf_counter() - start) * 1000)

    async def by_key_id(self, kid: str) -> Any:
        start = time.perf_counter()
        try:
            return await self.inner.by_key_id(kid)
        finally:
            self._took("by_key_id", start)

    async def nonce_insert_if_absent(self, kid: str, nonce: str, expires: int) -> bool:
        start = time.perf_counter()
        try:
            return bool(await self.inner.nonce_insert_if_absent(kid, nonce, expires))
        finally:
            self._took("nonce_insert_if_absent", start)

    async def claim(self, device_id: int, presented: str, now_ms: int, idempotency_key: str | None) -> Any:
        start = time.perf_counter()
        try:
            result = await self.inner.claim(device_id, presented, now_ms, idempotency_key)
        finally:
            self._took("claim", start)
        self.outcomes[result.outcome.value] += 1
        if result.outcome.value == "released":
            self.released.append(str(result.call_id))
        return result

    def timing(self) -> dict[str, dict[str, float]]:
        return {name: {"n": len(v), "p50_ms": round(percentile(v, 0.5), 2), "p99_ms": round(percentile(v, 0.99), 2)}
                for name, v in self.times.items()}  # fmt: skip


async def serve(spec: dict[str, Any]) -> None:
    import resource
    import tempfile

    from asterisk_securelink.deviceapi.server import DeviceApi, DeviceApiServer
    from asterisk_securelink.deviceapi.tls import server_context

    calls = plan(spec["rate"], spec["duration"], spec["forged"], spec["devices"], spec["seed"])
    folder = Path(tempfile.mkdtemp(prefix="securelink-claims-"))
    cert, key = self_signed(folder)
    store_dir = (
        StoreDirectory(spec["database_url"], spec["devices"], spec.get("api_store")) if spec["database_url"] else None
    )
    base: Any = await store_dir.start() if store_dir else MemoryDirectory(spec["devices"])
    calls_side: Any = store_dir if store_dir else base
    directory = Recording(base)
    api = DeviceApi(directory, public_host="pending")
    server = DeviceApiServer(api, "127.0.0.1", 0, server_context(cert, key))
    await server.start()
    api.public_host = f"127.0.0.1:{server.bound_port}"
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(f"READY {server.bound_port} {cert}", flush=True)
    go = (await reader.readline()).split()
    t0 = float(go[1])
    start_cpu = resource.getrusage(resource.RUSAGE_SELF)
    call_errors = Counter[str]()

    async def place(call: Call) -> None:
        await asyncio.sleep(max(0.0, t0 + call.at - LEAD_S - time.time()))
        try:
            await calls_side.add_call(call)
            await asyncio.sleep(LEAD_S + HANGUP_S)
            await calls_side.end_call(call)
        except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
            call_errors[type(exc).__name__] += 1

    async def purge_loop() -> None:
        while True:
            await asyncio.sleep(10)
            await calls_side.purge(time.time_ns() // 1_000_000)

    tasks = [asyncio.create_task(place(c)) for c in calls]
    purger = asyncio.create_task(purge_loop())
    await reader.readline()  # STOP (or EOF: the load process is gone)
    purger.cancel()
    for t in tasks:
        t.cancel()
    await asyncio.gather(purger, *tasks, return_exceptions=True)
    end_cpu = resource.getrusage(resource.RUSAGE_SELF)
    await server.close()
    stats: dict[str, Any] = {
        "outcomes": dict(directory.outcomes),
        "released": directory.released,
        "call_errors": dict(call_errors),
        "store_calls": directory.timing(),
        "cpu_s": round((end_cpu.ru_utime + end_cpu.ru_stime) - (start_cpu.ru_utime + start_cpu.ru_stime), 2),
    }
    if store_dir:
        await store_dir.writer.drain(30)
        await store_dir.writer.close()
        stats["audit_released"] = await audit_released(store_dir.store)
        if hasattr(store_dir.api, "close"):  # the version before issue 13 keeps no connections
            await store_dir.api.close()
        await store_dir.store.close()
    print("STATS " + json.dumps(stats), flush=True)


async def audit_released(store: Any) -> list[str]:
    from sqlalchemy import select

    from asterisk_securelink.store.models import AuditEvent

    q = select(AuditEvent.call_id).where(AuditEvent.action == "voucher.claim", AuditEvent.result == "released")
    async with store.sessions() as s:
        return [str(c) for c in (await s.execute(q)).scalars()]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))] if s else float("nan")


def main() -> int:
    sys.setswitchinterval(SWITCH_INTERVAL)  # as `securelink run` serves (runner.settle_for_serving)
    asyncio.run(serve(json.loads(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
