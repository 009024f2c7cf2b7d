"""Failed-redeem limits per client network and globally, and the client address behind a trusted proxy."""

from __future__ import annotations

import pytest
from support.clock import Clock

from asterisk_securelink.deviceapi.limits import (
    UNKNOWN,
    RedeemLimiter,
    client_address,
    client_network,
    parse_trusted,
)


def test_per_network_limit_and_window() -> None:
    clock = Clock(1000.0)
    lim = RedeemLimiter(per_network=3, window=60, clock=clock)
    for _ in range(3):
        assert not lim.blocked("198.51.100.7/32")
        lim.failed("198.51.100.7/32")
        clock.t += 1
    assert lim.blocked("198.51.100.7/32")
    assert not lim.blocked("198.51.100.8/32")  # another network is not affected
    clock.t = 1000.0 + 59.9
    assert lim.blocked("198.51.100.7/32")
    clock.t = 1000.0 + 60  # the first failure left the window
    assert not lim.blocked("198.51.100.7/32")
    lim.failed("198.51.100.7/32")
    assert lim.blocked("198.51.100.7/32")  # the last three failures are within 60 s again


async def test_an_attempt_is_counted_as_it_is_allowed_and_a_success_is_given_back() -> None:
    lim = RedeemLimiter(per_network=2, window=60, clock=Clock(1000.0))
    assert await lim.attempt("n") and await lim.attempt("n")
    assert not await lim.attempt("n")
    await lim.succeeded("n")  # that code was good: only failures count
    assert await lim.attempt("n")
    assert not await lim.attempt("n")
    assert await lim.attempt("other")


def test_memory_is_bounded() -> None:
    clock = Clock(1000.0)
    lim = RedeemLimiter(per_network=1, window=60, max_networks=3, clock=clock)
    for i in range(10):
        lim.failed(f"net{i}")
    assert len(lim._networks) == 3
    assert lim.blocked("net9") and not lim.blocked("net0")
    clock.t += 61
    lim.failed("late")
    assert list(lim._networks) == ["late"]  # networks whose failures left the window are forgotten


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RedeemLimiter(per_network=0)


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("198.51.100.7", "198.51.100.7/32"),
        ("::ffff:198.51.100.7", "198.51.100.7/32"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::99", "2001:db8:1:2::/64"),
        ("garbage", UNKNOWN),
    ],
)
def test_client_network(address: str, network: str) -> None:
    assert client_network(address) == network


TRUSTED = parse_trusted(["127.0.0.1", "10.0.0.0/8"])


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("198.51.100.7", ["203.0.113.9"], "198.51.100.7"),  # not a trusted proxy: its header is ignored
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.9"], "203.0.113.9"),
        ("127.0.0.1", ["6.6.6.6, 203.0.113.9"], "203.0.113.9"),  # the right hop: the one the proxy appended
        ("127.0.0.1", ["6.6.6.6", "203.0.113.9"], "203.0.113.9"),  # several headers, in order
        ("127.0.0.1", ["6.6.6.6, 203.0.113.9, 10.1.1.1"], "203.0.113.9"),  # through two trusted proxies
        ("127.0.0.1", ["203.0.113.9:5060"], "203.0.113.9"),
        ("127.0.0.1", ["[2001:db8::5]:443"], "2001:db8::5"),
        ("127.0.0.1", ["2001:db8::5"], "2001:db8::5"),
        ("127.0.0.1", ["6.6.6.6, unknown"], "127.0.0.1"),  # garbage: the proxy answers for it
        ("::ffff:127.0.0.1", ["203.0.113.9"], "203.0.113.9"),
        (None, ["203.0.113.9"], UNKNOWN),
    ],
)
def test_client_address(peer: str | None, xff: list[str], expected: str) -> None:
    assert client_address(peer, xff, TRUSTED) == expected


def test_bad_trusted_proxy() -> None:
    with pytest.raises(ValueError, match=r"proxy\.example"):
        parse_trusted(["proxy.example"])
