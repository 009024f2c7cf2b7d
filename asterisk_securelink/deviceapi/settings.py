"""`[device_api]`: the device API's settings and their validation. Pure.

A non-loopback listen address without TLS is refused (plain HTTP only on loopback: tests, a local reverse proxy
that terminates TLS). The dataclass uses the config loader's field types (str, int, tuple of str), so
`config.Config` can hold it as a section; `problems(cfg)` returns what is wrong as `device_api.<key>: ...` lines.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from asterisk_securelink.deviceapi.codes import CodeError, check_public_host
from asterisk_securelink.deviceapi.limits import parse_trusted

CODE_TTL: Final = (60, 7 * 86400)  # seconds an activation code stays redeemable
VOUCHER_TTL: Final = (10, 3600)  # seconds a voucher stays claimable after its creation
_WILDCARDS: Final = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - recognized, to require a public_host


@dataclass(frozen=True)
class DeviceApiConfig:
    listen: str = ""  # host:port (IPv6 as [::1]:8443); empty: the API is off
    public_host: str = ""  # host[:port] the phones are told and every signature covers; empty: the listen address
    tls_cert: str = ""  # PEM certificate (chain); with tls_key, HTTPS
    tls_key: str = ""  # PEM private key
    trusted_proxy: tuple[str, ...] = ()  # addresses (or networks) whose X-Forwarded-For is believed
    code_ttl: int = 900
    voucher_ttl: int = 90

    @property
    def enabled(self) -> bool:
        return bool(self.listen)

    @property
    def tls_configured(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


def is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8, ::1 (brackets allowed)."""
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen_problem(host: str, tls_configured: bool) -> str | None:
    """Why the API must not listen on `host`, or None. One line."""
    if tls_configured or is_loopback(host):
        return None
    return f"device_api.listen: {host} is not a loopback address; set device_api.tls_cert and tls_key to serve HTTPS"


def listen_address(cfg: DeviceApiConfig) -> tuple[str, int]:
    """(host, port) of `listen`. Raises ValueError."""
    from asterisk_securelink.metrics import parse_listen  # late: the config loader imports this module

    return parse_listen(cfg.listen, allow_remote=True)


def public_host(cfg: DeviceApiConfig) -> str:
    """`public_host`, or the listen address when it is not set."""
    return cfg.public_host or cfg.listen


def problems(cfg: DeviceApiConfig) -> list[str]:
    """Everything wrong with `cfg`, one line each (empty when it is usable; an API that is off is not checked)."""
    out: list[str] = []
    ttls = (("code_ttl", cfg.code_ttl, CODE_TTL), ("voucher_ttl", cfg.voucher_ttl, VOUCHER_TTL))
    for name, value, (low, high) in ttls:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            out.append(f"device_api.{name}: must be {low}..{high} seconds, got {value!r}")
    try:
        parse_trusted(cfg.trusted_proxy)
    except ValueError as exc:
        out.append(f"device_api.trusted_proxy: {exc}")
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        out.append("device_api.tls_cert, tls_key: set both (HTTPS) or neither (plain HTTP on loopback only)")
    if not cfg.enabled:
        return out
    try:
        host, _port = listen_address(cfg)
    except ValueError as exc:
        return [*out, f"device_api.listen: {exc}"]
    problem = listen_problem(host, cfg.tls_configured)
    if problem:
        out.append(problem)
    if not cfg.public_host and host in _WILDCARDS:
        out.append("device_api.public_host: must be set when listen is a wildcard address (the name phones reach)")
    else:
        try:
            check_public_host(public_host(cfg))
        except CodeError as exc:
            out.append(f"device_api.public_host: {exc}")
    return out
