"""In-memory stand-ins for the device API's tests: a `DeviceDirectory`, a raw HTTP/1.1 client (no URL
normalization, exact bytes), a signed-request builder and a self-signed certificate."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from asterisk_securelink.core.provisioning import DeviceParams
from asterisk_securelink.core.slk1 import device_secret
from asterisk_securelink.deviceapi.ports import (
    ApiEvent,
    ClaimOutcome,
    ClaimResult,
    DeviceView,
    DirectoryUnavailable,
    EnrollResult,
    IntentOutcome,
    IntentResult,
    IntentSettings,
    Offer,
)
from asterisk_securelink.deviceapi.signing import api_key, authorization
from support.keys import MASTER

PARAMS = DeviceParams(period=30, t0=0, inbound_format="+1NXXNXXXXXX", outbound_format="XXXXXXXXXX", look_behind=1,
                      look_ahead=1, trunk=("0", "00"), mode="ani")  # fmt: skip
ACCESS = "+12155550199"
PARAMS_1_2 = replace(PARAMS, mode="intent", access=ACCESS)


@dataclass
class Voucher:
    device_id: int
    presented: str
    call_id: str
    call_key_id: str
    call_key: bytes
    idempotency_key: str | None = None
    released: bool = False


@dataclass
class MemoryDirectory:
    """A `DeviceDirectory` in memory, with a log of what the server asked."""

    devices: dict[str, DeviceView] = field(default_factory=dict)
    retired_key_ids: set[str] = field(default_factory=set)  # key_ids a rotation retired
    codes: dict[str, tuple[str, int, bool]] = field(default_factory=dict)  # hash -> (key_id, expires_ms, used)
    nonces: dict[tuple[str, str], int] = field(default_factory=dict)
    vouchers: list[Voucher] = field(default_factory=list)
    events: list[ApiEvent] = field(default_factory=list)
    forks: list[tuple[int, bool, str]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    fail_on: str | None = None
    offer: Offer = field(default_factory=lambda: Offer(PARAMS))
    intents: IntentSettings = field(default_factory=IntentSettings)
    intent_answer: IntentResult | None = None  # what create_intent answers (None: created, a new intent each time)
    intent_requests: list[tuple[int, str, str | None, int, str | None]] = field(default_factory=list)

    def add(self, key_id: str, device_id: int, status: str = "registered") -> DeviceView:
        view = DeviceView(device_id=device_id, key_id=key_id, status=status, fork=True)
        self.devices[key_id] = view
        return view

    def rotate(self, key_id: str, new_key_id: str) -> DeviceView:
        """The device of `key_id` gets `new_key_id`; the old one is retired (as `store._rotate_in` does)."""
        view = replace(self.devices.pop(key_id), key_id=new_key_id)
        self.devices[new_key_id] = view
        self.retired_key_ids.add(key_id)
        return view

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_on:
            raise RuntimeError("the database said no: secret=shh")

    async def by_key_id(self, key_id: str) -> DeviceView | None:
        self._call("by_key_id")
        return self.devices.get(key_id)

    async def retired(self, key_id: str) -> bool:
        self._call("retired")
        return key_id in self.retired_key_ids

    def secret_of(self, key_id: str) -> bytes:
        self._call("secret_of")
        return device_secret(MASTER, key_id)

    async def nonce_insert_if_absent(self, key_id: str, nonce: str, expires: int) -> bool:
        self._call("nonce")
        if (key_id, nonce) in self.nonces:
            return False
        self.nonces[(key_id, nonce)] = expires
        return True

    async def redeem_code(self, code_hash: str, now_ms: int) -> EnrollResult | None:
        self._call("redeem_code")
        found = self.codes.get(code_hash)
        if found is None or found[2] or now_ms >= found[1]:
            return None
        self.codes[code_hash] = (found[0], found[1], True)
        view = self.devices[found[0]]
        return EnrollResult(view.device_id, view.key_id, device_secret(MASTER, view.key_id))

    async def set_fork(self, device_id: int, enabled: bool, actor: str) -> None:
        self._call("set_fork")
        self.forks.append((device_id, enabled, actor))
        for key_id, view in self.devices.items():
            if view.device_id == device_id:
                self.devices[key_id] = replace(view, fork=enabled)

    async def claim(self, device_id: int, presented: str, now_ms: int, idempotency_key: str | None) -> ClaimResult:
        self._call("claim")
        for v in self.vouchers:
            if v.device_id == device_id and v.presented == presented:
                if v.released and not (idempotency_key and idempotency_key == v.idempotency_key):
                    return ClaimResult(ClaimOutcome.ALREADY_CLAIMED, "released before", v.call_id)
                outcome = ClaimOutcome.REPEATED if v.released else ClaimOutcome.RELEASED
                v.released, v.idempotency_key = True, idempotency_key
                return ClaimResult(outcome, "", v.call_id, v.call_key_id, v.call_key)
        return ClaimResult(ClaimOutcome.NOT_FOUND, "no_call")

    async def claim_by_call_id(self, device_id: int, call_id: str, now_ms: int,
                               idempotency_key: str | None) -> ClaimResult:  # fmt: skip
        self._call("claim_by_call_id")
        for v in self.vouchers:
            if v.device_id == device_id and v.call_id == call_id:
                if v.released and not (idempotency_key and idempotency_key == v.idempotency_key):
                    return ClaimResult(ClaimOutcome.ALREADY_CLAIMED, "released_before", v.call_id)
                outcome = ClaimOutcome.REPEATED if v.released else ClaimOutcome.RELEASED
                v.released, v.idempotency_key = True, idempotency_key
                return ClaimResult(outcome, "", v.call_id, v.call_key_id, v.call_key)
        return ClaimResult(ClaimOutcome.NOT_FOUND, "no_call")

    async def create_intent(self, device_id: int, access_number: str, destination: str | None, now_ms: int,
                            idempotency_key: str | None) -> IntentResult:  # fmt: skip
        self._call("create_intent")
        if self.fail_on == "create_intent_unavailable":
            raise DirectoryUnavailable("the store failed (OperationalError)")
        self.intent_requests.append((device_id, access_number, destination, now_ms, idempotency_key))
        if self.intent_answer is not None:
            return self.intent_answer
        n = len(self.intent_requests)
        return IntentResult(IntentOutcome.CREATED, f"intent-{n}", f"call-{n}", access_number,
                            now_ms + self.intents.ttl_s * 1000)  # fmt: skip

    def audit(self, event: ApiEvent) -> None:
        self.events.append(event)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names (last value wins)
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        return str(self.json["error"])


async def raw_request(port: int, data: bytes, ssl_context: ssl.SSLContext | None = None,
                      timeout: float = 5.0) -> Answer:  # fmt: skip
    """Send exactly `data` on a fresh connection and read one answer (until the body's Content-Length)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_context,
                                                   server_hostname="localhost" if ssl_context else None)  # fmt: skip
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            length = 0 if data.startswith(b"HEAD ") else int(headers.get("content-length", "0"))
            body = await reader.readexactly(length)
        return Answer(status, headers, body)
    finally:
        writer.close()


def http(method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None,
         extra: Sequence[tuple[str, str]] = ()) -> bytes:  # fmt: skip
    """Request bytes: `headers` plus any repeated `extra` header lines; Content-Length when there is a body."""
    lines = [f"{method} {target} HTTP/1.1", "Host: pbx.internal", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()] + [f"{k}: {v}" for k, v in extra]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def signed(key_id: str, method: str, target: str, body: bytes, *, host: str, ts: int, nonce: str,
           secret: bytes | None = None) -> dict[str, str]:  # fmt: skip
    s = secret if secret is not None else device_secret(MASTER, key_id)
    value = authorization(key_id, api_key(s), method=method, host=host, target=target, body=body, ts=ts, nonce=nonce)
    return {"Authorization": value}


def self_signed(folder: Path, *, days: int = 30, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for `name` (and 127.0.0.1) valid from now for `days`: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file
