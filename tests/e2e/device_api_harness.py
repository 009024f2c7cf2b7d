"""The device API on the testbed, shared by test_device_api.py and test_device_api_number.py: `securelink run`
with the device API on TLS (and escrow, metrics) in a fresh installation, and a phone that enrolls and claims over it.
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import APP, Home, new_home, start_app, stop_app, wait_until
from sipp import CallResult, run_uac
from support.deviceapi_fakes import Answer, http, raw_request, self_signed

from asterisk_securelink.deviceapi.codes import parse_enrollment_uri
from asterisk_securelink.deviceapi.signing import api_key, authorization

CALLER = "15557770002"
TTL = 10  # device_api.voucher_ttl (its minimum)


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


def add_settings(home: Home, settings: Mapping[str, str]) -> None:
    """More lines for sections the harness's config already has (`{"calling": "intent_ttl = 20\\n"}`), put right
    below their header."""
    config = home.path / "securelink.toml"
    text = config.read_text()
    for section, lines in settings.items():
        header = f"[{section}]\n"
        assert header in text, f"the harness config has no [{section}]"
        text = text.replace(header, header + lines, 1)
    config.write_text(text)


def serving(
    path: Path,
    outbound: str = "",
    *,
    db_url: str = "sqlite:///securelink.sqlite3",
    app: str = APP,
    settings: Mapping[str, str] | None = None,
) -> Iterator[Api]:
    """`securelink run` with the device API on TLS (and escrow, metrics) in a fresh installation at `path`;
    `outbound`: more `[outbound]` lines; `db_url`, `app`: as `new_home`; `settings`: as `add_settings`."""
    home = new_home(path, db_url=db_url, app=app)
    add_settings(home, settings or {})
    home.cli("escrow", "keygen", "--private-key", "escrow.key", "--public-key", "escrow.pub")
    cert, key = self_signed(path)
    port, metrics_port = free_port(), free_port()
    with (path / "securelink.toml").open("a") as f:
        f.write(f'[outbound]\nring_timeout = 20\n{outbound}[escrow]\npublic_key_file = "escrow.pub"\n'
                f'[device_api]\nlisten = "127.0.0.1:{port}"\npublic_host = "localhost:{port}"\n'
                f'tls_cert = "{cert}"\ntls_key = "{key}"\nvoucher_ttl = {TTL}\n'
                f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')  # fmt: skip
    run, agi = start_app(home, name=app, agi=False)
    try:
        wait_until(lambda: _listening(port), 10, "the device API to listen")
        yield Api(home, port, metrics_port, cert)
    finally:
        stop_app(home, run, agi)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


Background = tuple[threading.Thread, list[CallResult]]


def call_in_background(calls: list[tuple[str, str]], scenario: Path | None = None) -> Background:
    results: list[CallResult] = []
    thread = threading.Thread(target=lambda: results.extend(run_uac(calls, scenario=scenario, timeout=60)))
    thread.start()
    return thread, results
