"""The one listen rule (`core.listen`): loopback unless allowed, followed by `/metrics`, FastAGI and the device API."""

from __future__ import annotations

import pytest

from asterisk_securelink.asterisk.agi_access import check_listen
from asterisk_securelink.core.listen import is_loopback, listen_refusal, split_listen
from asterisk_securelink.deviceapi.settings import listen_problem
from asterisk_securelink.metrics import parse_listen

LOOPBACK = ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost")
OTHERS = ("0.0.0.0", "::", "", "192.0.2.10", "pbx.example.org", "[::1", "localhost.example.org")  # noqa: S104


def test_what_counts_as_loopback() -> None:
    assert all(is_loopback(host) for host in LOOPBACK)
    assert not any(is_loopback(host) for host in OTHERS)


def test_loopback_unless_allowed() -> None:
    for host in LOOPBACK:
        assert listen_refusal(host, False, "; remedy") is None
    for host in OTHERS:
        assert listen_refusal(host, True, "; remedy") is None
        refusal = listen_refusal(host, False, "; remedy")
        assert refusal == f"{host or '(all interfaces)'} is not a loopback address; remedy"


@pytest.mark.parametrize("host", LOOPBACK + OTHERS)
def test_the_three_servers_refuse_the_same_hosts(host: str) -> None:
    refused = not is_loopback(host)
    assert (check_listen(host, allow_remote=False) is not None) == refused
    assert (listen_problem(host, tls_configured=False) is not None) == refused
    if host and host not in ("::", "[::1"):  # parse_listen takes host:port (an IPv6 host in brackets)
        listen = f"[{host}]:9466" if ":" in host and not host.startswith("[") else f"{host}:9466"
        if refused:
            with pytest.raises(ValueError, match=r"set metrics\.allow_remote = true"):
                parse_listen(listen, allow_remote=False)
        else:
            assert parse_listen(listen, allow_remote=False)[1] == 9466
        assert parse_listen(listen, allow_remote=True)[1] == 9466


def test_each_server_says_how_to_allow_it() -> None:
    assert "agi.allow_remote = true" in (check_listen("0.0.0.0", False) or "")  # noqa: S104
    assert (listen_problem("192.0.2.1", False) or "").startswith("device_api.listen: 192.0.2.1 is not a loopback")
    assert "tls_cert" in (listen_problem("192.0.2.1", False) or "")


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("127.0.0.1:9466", ("127.0.0.1", 9466)), ("[::1]:8443", ("::1", 8443)), ("0.0.0.0:1", ("0.0.0.0", 1))],  # noqa: S104
)
def test_split_listen(value: str, parsed: tuple[str, int]) -> None:
    assert split_listen(value) == parsed


@pytest.mark.parametrize(
    ("value", "error"), [("9466", "host:port"), (":9466", "host:port"), ("h:0", "1..65535"), ("h:x", "1..65535")]
)
def test_split_listen_refuses(value: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        split_listen(value)
