"""SLK1 against every test vector of the spec (copied here so a fresh clone needs no ../shared)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.slk1 import (
    Direction,
    SLK1Error,
    derive_key,
    device_secret,
    epoch_at,
    key_index,
    outbound_window,
)

SECRET = bytes(range(32))
FORMATS = ("XXXXXXXXXX", "+1NXXNXXXXXX", "555XXXXXXX", "9ZXXXXXXXX")

# (direction, epoch, keys in the order of FORMATS) - SLK1.md "Test vectors"
KEY_VECTORS = [
    ("inbound", 0, ("6141638475", "+12677638475", "5551638475", "9941638475")),
    ("inbound", 1, ("5193065513", "+13993065513", "5553065513", "9993065513")),
    ("inbound", 59682345, ("3264874290", "+13582874290", "5554874290", "9664874290")),
    ("inbound", 1099511627776, ("3805726724", "+15757726724", "5555726724", "9705726724")),
    ("outbound", 0, ("6161835209", "+13203835209", "5551835209", "9761835209")),
    ("outbound", 1, ("5575039342", "+19469039342", "5555039342", "9675039342")),
    ("outbound", 59682345, ("6889726154", "+13113726154", "5559726154", "9289726154")),
    ("outbound", 1099511627776, ("9940020971", "+12426020971", "5550020971", "9240020971")),
]


@pytest.mark.parametrize(
    ("direction", "epoch", "fmt", "expected"),
    [(d, e, f, k) for d, e, keys in KEY_VECTORS for f, k in zip(FORMATS, keys, strict=True)],
)
def test_key_vectors(direction: str, epoch: int, fmt: str, expected: str) -> None:
    assert derive_key(SECRET, direction, epoch, NumberFormat(fmt)) == expected


@pytest.mark.parametrize(
    ("key_id", "expected"),
    [
        ("dev-0001", "65916420d17c4e99ba35027831e7e6e4414ec87741eefef53e5d27558cc1e082"),
        ("k7Q2-alice-iphone", "15218e8df51b7b31e3171234c9747ef548f38a4b74134e36320e67b54314a77e"),
    ],
)
def test_device_secret_vectors(key_id: str, expected: str) -> None:
    assert device_secret(SECRET, key_id).hex() == expected


@pytest.mark.parametrize(
    ("t", "period", "epoch"),
    [
        (1790000000.5, 30, 59666666),
        (1790000000.5, 5, 358000000),
        (1790000029.999, 30, 59666667),
        (1790000030, 30, 59666667),
        (59.9, 60, 0),
    ],
)
def test_epoch_vectors(t: float, period: int, epoch: int) -> None:
    assert epoch_at(t, period) == epoch


def test_directions_differ() -> None:
    fmt = NumberFormat("XXXXXXXXXX")
    assert derive_key(SECRET, Direction.INBOUND, 7, fmt) != derive_key(SECRET, Direction.OUTBOUND, 7, fmt)


def test_64_bit_reduction_not_31_bit() -> None:
    msg = b"SLK1\x00inbound\x00" + (0).to_bytes(8, "big")
    mac = hmac.new(SECRET, msg, hashlib.sha256).digest()
    v = key_index(SECRET, "inbound", 0)
    assert v == int.from_bytes(mac[:8], "big")
    assert v >= 2**63  # this vector's top bit is set: a 31-bit truncation would have dropped it
    assert v % 10**10 == 6141638475


def test_t0_shifts_epochs() -> None:
    assert epoch_at(1000, 30, t0=1000) == 0
    assert epoch_at(1029.9, 30, t0=1000) == 0
    with pytest.raises(SLK1Error):
        epoch_at(999, 30, t0=1000)


@pytest.mark.parametrize("period", [4, 61, 0, -5])
def test_period_bounds(period: int) -> None:
    with pytest.raises(SLK1Error, match="period"):
        epoch_at(100, period)


def test_bad_inputs_are_refused_without_secret_material() -> None:
    with pytest.raises(SLK1Error) as short:
        key_index(b"short", "inbound", 0)
    assert "short" not in str(short.value)
    with pytest.raises(SLK1Error):
        device_secret(b"\x00" * 31, "dev")
    with pytest.raises(SLK1Error):
        device_secret(SECRET, "has space")
    with pytest.raises(ValueError):
        key_index(SECRET, "sideways", 0)
    with pytest.raises(SLK1Error):
        key_index(SECRET, "inbound", 2**64)


def test_outbound_window_is_e_then_next_then_previous_and_never_negative() -> None:
    assert outbound_window(100) == [100, 101, 99]
    assert outbound_window(0) == [0, 1]
