"""`[device_api]`: the device API's settings and their validation. Pure.

A non-loopback listen address without TLS is refused (plain HTTP only on loopback: tests, a local reverse proxy
that terminates TLS). The dataclass uses the config loader's field types (str, int, tuple of str), so
`config.Config` can hold it as a section; `problems(cfg)` returns what is wrong as `device_api.<key>: ...` lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from asterisk_securelink.core.fields import range_problems, setting
from asterisk_securelink.core.listen import is_loopback as is_loopback
from asterisk_securelink.core.listen import listen_refusal, split_listen
from asterisk_securelink.deviceapi.codes import CodeError, check_public_host
from asterisk_securelink.deviceapi.limits import parse_trusted

CODE_TTL: Final = (60, 7 * 86400)  # seconds an activation code stays redeemable
VOUCHER_TTL: Final = (10, 3600)  # seconds a voucher stays claimable after its creation
_WILDCARDS: Final = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - recognized, to require a public_host


@dataclass(frozen=True)
class DeviceApiConfig:
    NAME: ClassVar[str] = "device_api"

    listen: str = setting(
        "",
        "`host:port` (IPv6 `[::1]:8443`) where `securelink run` serves the device API (`docs/device-api.md`: "
        "enrollment by code, status, fork toggle, per-call key vouchers) on its own event loop; off when empty. Plain "
        "HTTP only on a loopback address (a local TLS-terminating proxy, tests): a non-loopback address without "
        "`tls_cert`/`tls_key` stops the start with one line. `doctor` checks it answers and its certificate",
        skeleton=True,
        example="0.0.0.0:8443",
    )
    public_host: str = setting(
        "",
        "`host[:port]` the phones are told (in the enrollment URI) and every request signature covers; required when "
        "`listen` is a wildcard (`0.0.0.0`, `::`)",
        note="the name phones reach; every request signature covers it",
        shown="the listen address",
        skeleton=True,
        example="pbx.example.com:8443",
    )
    tls_cert: str = setting(
        "",
        "PEM certificate (chain); with `tls_key`, HTTPS, TLS 1.2+. `doctor` fails on an invalid or expired "
        "certificate and warns 14 days before it expires",
        skeleton=True,
        example="/etc/securelink/tls/cert.pem",
    )
    tls_key: str = setting("", "PEM private key of `tls_cert`", skeleton=True, example="/etc/securelink/tls/key.pem")
    trusted_proxy: tuple[str, ...] = setting(
        (),
        "addresses / networks of reverse proxies whose `X-Forwarded-For` names the client (for the per-network limit "
        "on failed activation codes); no one else's is believed",
    )
    code_ttl: int = setting(
        900, "seconds an activation code stays redeemable ({range})", range=CODE_TTL, unit="seconds"
    )
    voucher_ttl: int = setting(
        90,
        "seconds a call's key can be claimed after the call's key is made ({range}; the voucher also ends at hangup, "
        "outbound). Outbound keyed calls (mobile, fork) and admitted inbound calls get a per-call key (escrowed too "
        "when `escrow.public_key_file` is set), kept sealed at rest under a key derived from the master key until "
        "then; each claim is audited (`voucher.claim`, with the reason; a second claim of a released voucher is an "
        "alert), counted in `securelink_voucher_claims_total{result}` and published on AMI as "
        "`UserEvent: SecureLinkVoucher`",
        range=VOUCHER_TTL,
        unit="seconds",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.listen)

    @property
    def tls_configured(self) -> bool:
        return bool(self.tls_cert and self.tls_key)

    def problems(self) -> list[str]:
        """Everything wrong, one line each (`problems`)."""
        return problems(self)


def listen_problem(host: str, tls_configured: bool) -> str | None:
    """Why the API must not listen on `host`, or None: plain HTTP stays on loopback (`core.listen`). One line."""
    problem = listen_refusal(host, tls_configured, "; set device_api.tls_cert and tls_key to serve HTTPS")
    return f"device_api.listen: {problem}" if problem else None


def listen_address(cfg: DeviceApiConfig) -> tuple[str, int]:
    """(host, port) of `listen`. Raises ValueError."""
    return split_listen(cfg.listen)


def public_host(cfg: DeviceApiConfig) -> str:
    """`public_host`, or the listen address when it is not set."""
    return cfg.public_host or cfg.listen


def problems(cfg: DeviceApiConfig) -> list[str]:
    """Everything wrong with `cfg`, one line each (empty when it is usable; an API that is off is not checked)."""
    out = range_problems(DeviceApiConfig.NAME, cfg)
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
