from __future__ import annotations

import pytest

from asterisk_securelink.core.provisioning import Provisioning, ProvisioningError, parse

P = Provisioning(7, "kabc", bytes(range(32)), 30, 0, "+1NXXNXXXXXX", "XXXXXXXXXX", 1, 0)


def test_round_trip() -> None:
    uri = P.uri()
    assert uri.startswith("securelink://provision?")
    assert "%2B1NXXNXXXXXX" in uri  # '+' is escaped, so it does not turn into a space
    assert parse(uri) == P


def test_repr_hides_the_secret() -> None:
    assert bytes(range(32)).hex() not in repr(P) and "secret=<hidden>" in repr(P)


@pytest.mark.parametrize(
    "uri",
    [
        "https://provision?v=1",
        "securelink://provision?v=2&device=1",
        P.uri().replace("period=30", "period=3"),
        P.uri().replace("in=%2B1NXXNXXXXXX", "in=XX"),
        P.uri().replace("&key_id=kabc", ""),
        "securelink://provision?v=1&device=1&key_id=a&secret=AAAA&period=30&in=XXXXXXXXXX&out=XXXXXXXXXX",
    ],
)
def test_invalid(uri: str) -> None:
    with pytest.raises(ProvisioningError):
        parse(uri)
