"""Where a server may listen: the one rule "a loopback address, unless allowed", and `host:port` parsing. Pure.

Three servers follow it: `/metrics` (allowed by `metrics.allow_remote`), FastAGI (`agi.allow_remote`) and the device
API (allowed by TLS: plain HTTP stays on loopback). Each says in its own words how to allow more (`remedy`), since
the fix differs; the rule itself, and what counts as loopback, is written here once.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8, ::1 (IPv6 brackets allowed: `[::1]`)."""
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen_refusal(host: str, allowed: bool, remedy: str) -> str | None:
    """None when a server may listen on `host`: loopback always, anything else (a wildcard, an empty host, a LAN
    address, a host name) only when `allowed`. Else one line: what is wrong, then `remedy` (how to allow it)."""
    if allowed or is_loopback(host):
        return None
    return f"{host or '(all interfaces)'} is not a loopback address{remedy}"


def split_listen(value: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:9466`) -> (host, port), brackets removed. Raises ValueError with what is wrong."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"must be host:port, e.g. 127.0.0.1:9466, got {value!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        raise ValueError(f"port must be 1..65535, got {port_s!r}")
    return host, int(port_s)
