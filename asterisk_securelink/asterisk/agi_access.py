"""Who may hold a FastAGI connection (`asterisk.agi.FastAgiServer`), and where the server may listen.

The AGI environment carries the caller number, which can be a key, and the server answers with verdicts: only
Asterisk should reach it. Three rules, all pure and free of I/O (the config validation uses them too):

* `check_listen`: a non-loopback listen address is refused unless `allow_remote` (the rule `[metrics]` has);
* `allow_from`: the addresses and networks a connection may come from (default: loopback only); a connection from
  anywhere else is closed at once, before a byte is read, and holds no slot;
* `PeerSlots`: at most `max_total` connections at once, and at most `max_per_peer` from one address, so one
  misbehaving (or hostile) allowed host cannot take every slot from the others.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from asterisk_securelink.core.listen import listen_refusal

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

AGI_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{16,128}")  # `agi.result_token` (a dialplan string: no quoting needed)
DEFAULT_ALLOW_FROM: Final = ("127.0.0.1", "::1")  # not all of 127.0.0.0/8: a local user can pick its source there
MAX_CONNECTIONS: Final = 256  # concurrent, from everyone; more are closed at once
# Concurrent connections from one address. Asterisk holds one per AGI() in progress (a verification: milliseconds;
# at worst the verify timeout), so 32 carries a PBX at 20 calls/s with one-second verifications; beyond it the call
# fails closed (AGISTATUS=FAILURE -> rejected) instead of queueing. A local Asterisk and a local attacker share
# 127.0.0.1: when the slots are full, the connection that has waited longest without sending its AGI environment is
# dropped for the new one (`agi.GuardedApplication`): Asterisk sends its environment at once, a squatter does not.
MAX_PER_PEER: Final = 32


def parse_allow_from(values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or networks (`127.0.0.1`, `10.1.0.0/16`, `::1`) -> networks. Raises ValueError naming the bad one."""
    networks: list[Network] = []
    for value in values:
        text = str(value).strip()
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text[:64]!r} is not an IP address or network (e.g. 127.0.0.1, 10.1.0.0/16)") from None
    return tuple(networks)


def check_listen(host: str, allow_remote: bool) -> str | None:
    """None when the FastAGI server may listen on `host`; else what is wrong. Loopback (or `localhost`) always may;
    anything else (`0.0.0.0`, `::`, an empty host, a LAN address, a host name) only with `allow_remote`
    (`core.listen`, the rule `[metrics]` and `[device_api]` follow too)."""
    return listen_refusal(
        host,
        allow_remote,
        ": the AGI environment carries caller numbers, which can be keys; set agi.allow_remote = true "
        "(and agi.allow_from to the Asterisk hosts) to listen on it",
    )


def peer_address(peername: object) -> str | None:
    """The IP address of a socket's peer (`writer.get_extra_info("peername")`), IPv4-mapped IPv6 as IPv4; None for
    anything else (a Unix socket, no peer)."""
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return None
    try:
        address = ipaddress.ip_address(peername[0].split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class PeerSlots:
    """The connections held, in total and per address; `take` admits one (or says why not), `release` gives it back."""

    def __init__(
        self,
        allow_from: Iterable[str] = DEFAULT_ALLOW_FROM,
        max_total: int = MAX_CONNECTIONS,
        max_per_peer: int = MAX_PER_PEER,
    ) -> None:
        self.allow_from = parse_allow_from(allow_from)
        self.max_total = max_total
        self.max_per_peer = max_per_peer
        self.held: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.held.values())

    def allowed(self, address: str | None) -> bool:
        if address is None:
            return False
        ip = ipaddress.ip_address(address)
        return any(ip in network for network in self.allow_from)

    def take(self, address: str | None) -> str | None:
        """None when `address` may open one more connection (a slot is now held: `release` it); else the reason."""
        if address is None or not self.allowed(address):
            return "not in agi.allow_from"
        if self.total >= self.max_total:
            return f"{self.max_total} connections open"
        if self.held[address] >= self.max_per_peer:
            return f"{self.max_per_peer} connections open from this address"
        self.held[address] += 1
        return None

    def release(self, address: str) -> None:
        self.held[address] -= 1
        if self.held[address] <= 0:
            del self.held[address]


@dataclass(eq=False)
class Waiting:
    """A connection that has not sent its whole AGI environment yet (`writer`: to drop it)."""

    since: float  # monotonic seconds
    peer: str
    writer: Any
    evicted: bool = False


def oldest_silent(waiting: Iterable[Waiting], peer: str, slots: PeerSlots) -> Waiting | None:
    """Which connection gives its slot to a new one from `peer` when the slots are full: the one that has waited
    longest without its AGI environment, from `peer` itself when that address is at its own limit, else from anyone.
    Asterisk sends its environment at once, so what waits is a slow or hostile client, never a call."""
    own_limit = slots.held[peer] >= slots.max_per_peer
    candidates = [w for w in waiting if not w.evicted and (w.peer == peer or not own_limit)]
    return min(candidates, key=lambda w: w.since) if candidates else None
