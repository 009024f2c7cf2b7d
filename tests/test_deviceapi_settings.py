"""`[device_api]` validation, the listen rule (no plain HTTP off loopback) and TLS."""

from __future__ import annotations

import datetime as dt
import re
import ssl
from pathlib import Path

import pytest
from support.deviceapi_fakes import MemoryDirectory, self_signed

from asterisk_securelink.deviceapi.server import server_from_config
from asterisk_securelink.deviceapi.settings import (
    DeviceApiConfig,
    listen_address,
    listen_problem,
    problems,
    public_host,
)
from asterisk_securelink.deviceapi.tls import TlsError, certificate_problem, server_context


def test_defaults() -> None:
    cfg = DeviceApiConfig()
    assert (cfg.enabled, cfg.code_ttl, cfg.voucher_ttl, cfg.trusted_proxy) == (False, 900, 90, ())
    assert problems(cfg) == []


def test_public_host_defaults_to_the_listen_address() -> None:
    cfg = DeviceApiConfig(listen="127.0.0.1:8443")
    assert public_host(cfg) == "127.0.0.1:8443" and problems(cfg) == []
    assert listen_address(cfg) == ("127.0.0.1", 8443)
    cfg = DeviceApiConfig(listen="[::1]:8443", public_host="pbx.example.com:8443")
    assert public_host(cfg) == "pbx.example.com:8443" and listen_address(cfg) == ("::1", 8443)
    assert problems(cfg) == []


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (DeviceApiConfig(listen="0.0.0.0:8443"), "device_api.listen: 0.0.0.0 is not a loopback address"),
        (DeviceApiConfig(listen="192.0.2.1:8443", public_host="pbx:8443"), "device_api.listen: 192.0.2.1 is not"),
        (DeviceApiConfig(listen="0.0.0.0:8443", tls_cert="c", tls_key="k"), "device_api.public_host: must be set"),
        (DeviceApiConfig(listen="8443"), "device_api.listen: must be host:port"),
        (DeviceApiConfig(listen="127.0.0.1:0"), "device_api.listen: port must be"),
        (DeviceApiConfig(listen="127.0.0.1:8443", public_host="https://pbx"), "device_api.public_host: must be"),
        (DeviceApiConfig(tls_cert="c"), "device_api.tls_cert, tls_key: set both"),
        (DeviceApiConfig(trusted_proxy=("10.0.0.1", "proxy")), "device_api.trusted_proxy: not an IP"),
        (DeviceApiConfig(code_ttl=10), "device_api.code_ttl: must be 60..604800 seconds, got 10"),
        (DeviceApiConfig(voucher_ttl=0), "device_api.voucher_ttl: must be 10..3600 seconds, got 0"),
    ],
)
def test_problems(cfg: DeviceApiConfig, expected: str) -> None:
    found = problems(cfg)
    assert any(p.startswith(expected) for p in found), found
    assert all("\n" not in p for p in found)


def test_tls_allows_any_listen_address() -> None:
    cfg = DeviceApiConfig(listen="0.0.0.0:8443", public_host="pbx.example.com:8443", tls_cert="c", tls_key="k")
    assert problems(cfg) == []
    assert cfg.tls_configured


ANY = "0.0.0.0"  # noqa: S104 - the address under test


@pytest.mark.parametrize(("host", "tls", "refused"), [
    ("127.0.0.1", False, False), ("127.9.9.9", False, False), ("::1", False, False), ("[::1]", False, False),
    ("localhost", False, False), (ANY, False, True), ("::", False, True), ("192.0.2.1", False, True),
    ("pbx.example.com", False, True), (ANY, True, False),
])  # fmt: skip
def test_listen_problem(host: str, tls: bool, refused: bool) -> None:
    problem = listen_problem(host, tls)
    assert (problem is not None) == refused
    if problem:
        assert host in problem and "tls_cert" in problem


def test_server_context(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    ctx = server_context(cert, key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(TlsError, match="not found"):
        server_context(tmp_path / "missing.pem", key)
    (tmp_path / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(TlsError, match="cannot load"):
        server_context(tmp_path / "bad.pem", key)
    (tmp_path / "other").mkdir()
    other_cert, _ = self_signed(tmp_path / "other")
    with pytest.raises(TlsError, match="cannot load"):
        server_context(other_cert, key)  # a key that does not match the certificate


def test_certificate_problem(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, days=30)
    pem = cert.read_bytes()
    now = dt.datetime.now(dt.UTC)
    assert certificate_problem(pem, now) is None
    assert "within 14 days" in (certificate_problem(pem, now + dt.timedelta(days=20)) or "")
    assert "expired" in (certificate_problem(pem, now + dt.timedelta(days=31)) or "")
    assert "not valid before" in (certificate_problem(pem, now - dt.timedelta(days=1)) or "")
    assert certificate_problem(b"junk", now) == "not a PEM certificate"


def test_server_from_config(tmp_path: Path) -> None:
    self_signed(tmp_path)
    cfg = DeviceApiConfig(listen="0.0.0.0:8443", public_host="pbx.example.com:8443", tls_cert="cert.pem",
                          tls_key="key.pem", trusted_proxy=("127.0.0.1",))  # fmt: skip
    server = server_from_config(cfg, MemoryDirectory(), lambda p: tmp_path / p)
    assert (server.host, server.port, server.api.public_host) == (ANY, 8443, "pbx.example.com:8443")
    assert server.ssl_context is not None and server.api.trusted_proxy[0].num_addresses == 1
    plain = server_from_config(DeviceApiConfig(listen="127.0.0.1:8080"), MemoryDirectory())
    assert plain.ssl_context is None and plain.api.public_host == "127.0.0.1:8080"


@pytest.mark.parametrize(
    ("cfg", "error"),
    [
        (DeviceApiConfig(), "device_api.listen: not set"),
        (DeviceApiConfig(listen="192.0.2.1:8443"), "device_api.listen: 192.0.2.1 is not a loopback address"),
        (DeviceApiConfig(listen="127.0.0.1:8443", tls_cert="nope.pem", tls_key="nope.key"), "nope.pem not found"),
    ],
)
def test_server_from_config_refuses(cfg: DeviceApiConfig, error: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        server_from_config(cfg, MemoryDirectory(), lambda p: tmp_path / p)
