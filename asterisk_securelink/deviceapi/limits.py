"""Failed-redeem limiting for enrollment (`docs/device-api.md`, "Enrollment codes"). Pure; the clock is injected.

Redeem attempts are counted per client network (an IPv4 address, an IPv6 /64), each in a sliding window; past the
limit that network's redeems are refused (429 `rate_limited`) until old attempts leave the window. An attempt is
counted before the code is looked up (`RedeemLimits.attempt`, which decides and counts in one step, so concurrent
requests cannot all pass a check made before any of them was counted) and given back when the code was good
(`succeeded`). There is no global limit: one that any 10 networks could fill would switch enrollment off for every
genuine phone, and 80-bit codes need none (`docs/security.md`, "M2"). The service counts in the shared store
(`store.enroll_limits`), so every node and a restart see the same counts; `RedeemLimiter` here is the in-process
form (tests, a single node without a store). The client address is the TCP peer, or, when the peer is a configured
trusted reverse proxy, the right-most `X-Forwarded-For` hop that is not itself a trusted proxy.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PER_NETWORK: Final = 10  # failed redeems per client network per window
WINDOW: Final = 600.0  # seconds
MAX_NETWORKS: Final = 100_000  # networks tracked at once (memory bound); the oldest are forgotten first
UNKNOWN: Final = "unknown"  # the network of a peer address that cannot be parsed


def parse_trusted(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """`trusted_proxy` entries: addresses or CIDR networks. Raises ValueError naming the bad entry."""
    nets = []
    for value in values:
        try:
            nets.append(ipaddress.ip_network(value.strip(), strict=False))
        except (ValueError, AttributeError):
            raise ValueError(f"not an IP address or network: {value!r}") from None
    return tuple(nets)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from a peer name or an `X-Forwarded-For` entry (`1.2.3.4`, `1.2.3.4:5`, `[2001:db8::1]:5`)."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _trusted(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: Sequence[IPNetwork]) -> bool:
    return any(addr in net for net in trusted)


def is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    """True when `address` (a peer address as text) is one of the trusted proxies."""
    addr = _address(address)
    return addr is not None and _trusted(addr, trusted)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy; then the right-most `X-Forwarded-For`
    hop (all headers joined in order) that is not a trusted proxy. An unparseable hop ends the walk at the last
    trusted address (a proxy that wrote garbage answers for it)."""
    addr = _address(peer) if peer else None
    if addr is None:
        return UNKNOWN
    if not _trusted(addr, trusted):
        return str(addr)
    hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        hop_addr = _address(hop)
        if hop_addr is None:
            break
        addr = hop_addr
        if not _trusted(addr, trusted):
            break
    return str(addr)


def client_network(address: str) -> str:
    """What failures are counted against: an IPv4 address (`/32`) or an IPv6 `/64`."""
    addr = _address(address)
    if addr is None:
        return UNKNOWN
    prefix = 32 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


class RedeemLimits(Protocol):
    """Counts of redeem attempts per client network, shared or in-process."""

    async def attempt(self, network: str) -> bool:
        """Count one attempt from `network`; False (not counted) when the network is at its limit."""
        ...

    async def succeeded(self, network: str) -> None:
        """Give back the attempt of a redeem that succeeded (only failures count against the limit)."""
        ...


class RedeemLimiter:
    """In-process sliding-window counts of redeem attempts per network. `clock` is monotonic seconds. `attempt`
    decides and counts without awaiting anything, so concurrent requests on this process cannot race it."""

    def __init__(
        self,
        *,
        per_network: int = PER_NETWORK,
        window: float = WINDOW,
        max_networks: int = MAX_NETWORKS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_network < 1 or window <= 0 or max_networks < 1:
            raise ValueError("limits must be positive")
        self.per_network = per_network
        self.window = window
        self.max_networks = max_networks
        self.clock = clock
        self._networks: dict[str, deque[float]] = {}  # insertion order = least recently failing first

    async def attempt(self, network: str) -> bool:
        if self.blocked(network):
            return False
        self.failed(network)
        return True

    async def succeeded(self, network: str) -> None:
        times = self._networks.get(network)
        if times:
            times.pop()

    def blocked(self, network: str) -> bool:
        """True while `network` has reached its limit of failures in the window."""
        times = self._networks.get(network)
        return times is not None and self._full(times, self.per_network, self.clock())

    def failed(self, network: str) -> None:
        """Count one failed redeem from `network`."""
        now = self.clock()
        times = self._networks.pop(network, None)
        if times is None:
            times = deque(maxlen=self.per_network)
            while len(self._networks) >= self.max_networks:
                del self._networks[next(iter(self._networks))]
        times.append(now)
        self._networks[network] = times  # re-inserted: the most recently failing networks are forgotten last
        self._prune(now)

    def _full(self, times: deque[float], limit: int, now: float) -> bool:
        # only the last `limit` failures are kept: the limit is reached when the oldest of them is still in the window
        return len(times) >= limit and now - times[0] < self.window

    def _prune(self, now: float) -> None:
        # forget networks whose last failure left the window (they are at the front: least recently failing first)
        while self._networks:
            first = next(iter(self._networks))
            if now - self._networks[first][-1] < self.window:
                break
            del self._networks[first]
