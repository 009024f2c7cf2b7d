"""SLK1 against every test vector of the spec (copied here so a fresh clone needs no ../shared)."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.slk1 import (
    Direction,
    SLK1Error,
    check_key_id,
    check_t0,
    derive_key,
    device_secret,
    epoch_at_ms,
    epoch_start_ms,
    key_index,
    now_ms,
    outbound_window,
    seconds_to_ms,
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


# informative (1.0 wrote time as a real number): the seconds as written, read exactly into milliseconds
@pytest.mark.parametrize(
    ("t", "period", "epoch"),
    [
        ("1790000000.5", 30, 59666666),
        ("1790000000.5", 5, 358000000),
        ("1790000029.999", 30, 59666667),
        ("1790000030", 30, 59666667),
        ("59.9", 60, 0),
    ],
)
def test_informative_epoch_vectors(t: str, period: int, epoch: int) -> None:
    assert epoch_at_ms(seconds_to_ms(t), period) == epoch


# normative (1.1): integer time, t0 = 0
@pytest.mark.parametrize(
    ("t_ms", "period", "epoch"),
    [
        (1790000029999, 30, 59666667),
        (1790000030000, 30, 59666667),
        (32985348833279999, 30, 1099511627775),
        (32985348833280000, 30, 1099511627776),
    ],
)
def test_integer_epoch_vectors(t_ms: int, period: int, epoch: int) -> None:
    assert epoch_at_ms(t_ms, period) == epoch
    assert epoch_at_ms(t_ms, period, t0=0) == epoch


@pytest.mark.parametrize("t_ms", [2**64, 2**64 + 1, 2**65, 10**30, -1, -(2**63)])
def test_a_time_outside_unsigned_64_bits_has_no_key(t_ms: int) -> None:
    """Revision 2: t_ms is an unsigned 64-bit integer; larger (or negative) gives no key (revision 1 code: an epoch)."""
    with pytest.raises(SLK1Error, match="64-bit"):
        epoch_at_ms(t_ms, 30)


def test_the_last_unsigned_64_bit_millisecond_still_has_an_epoch() -> None:
    assert epoch_at_ms(2**64 - 1, 60) == (2**64 - 1) // 60_000
    assert epoch_at_ms(2**64 - 1, 5, t0=1_790_000_000) == (2**64 - 1 - 1_790_000_000_000) // 5000


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=5, max_value=60))
def test_every_unsigned_64_bit_time_has_an_epoch_and_a_key(t_ms: int, period: int) -> None:
    epoch = epoch_at_ms(t_ms, period)
    assert epoch == t_ms // (period * 1000)
    fmt = NumberFormat("XXXXXXXXXX")
    assert fmt.matches(derive_key(SECRET, Direction.INBOUND, epoch, fmt))


def test_a_float_near_the_far_boundary_would_be_wrong() -> None:
    # why 1.1 made integer time normative: the float division rounds the last millisecond into the next epoch
    assert int(32985348833279999 / 1000 / 30) == 1099511627776
    assert epoch_at_ms(32985348833279999, 30) == 1099511627775


@pytest.mark.parametrize(
    ("text", "ms"),
    [("1790000000.5", 1790000000500), ("1790000000", 1790000000000), ("1790000029.999", 1790000029999),
     ("59.9", 59900), ("0", 0), (" 100 ", 100000), ("1.0009", 1000), ("100.", 100000), ("-0.5", -500),
     ("32985348833279.999", 32985348833279999)],
)  # fmt: skip
def test_seconds_to_ms_is_exact_and_floors(text: str, ms: int) -> None:
    assert seconds_to_ms(text) == ms


@pytest.mark.parametrize("text", ["", "nan", "inf", "1e9", "0x10", "1,5", "soon", "1.2.3", "\u0661\u0662", "1" * 16])
def test_seconds_to_ms_refuses_anything_else(text: str) -> None:
    with pytest.raises(SLK1Error):
        seconds_to_ms(text)


def test_now_ms_is_an_integer_clock() -> None:
    t = now_ms()
    assert isinstance(t, int) and abs(t - time.time() * 1000) < 5000


def test_epoch_start_ms() -> None:
    assert epoch_start_ms(100, 30) == 3_000_000
    assert epoch_start_ms(2, 5, t0=1000) == 1_010_000
    assert epoch_at_ms(epoch_start_ms(59666667, 30), 30) == 59666667
    assert epoch_at_ms(epoch_start_ms(59666667, 30) - 1, 30) == 59666666


@pytest.mark.parametrize("bad", [1.5, "100", None, True])
def test_epoch_at_ms_takes_integers_only(bad: object) -> None:
    with pytest.raises(SLK1Error):
        epoch_at_ms(bad, 30)  # type: ignore[arg-type]


def test_t0_in_the_future_is_refused() -> None:
    now = 1_790_000_000_000
    assert check_t0(0, now) == 0
    assert check_t0(1_790_000_000, now) == 1_790_000_000  # exactly now: not in the future
    with pytest.raises(SLK1Error, match="future"):
        check_t0(1_790_000_001, now)
    with pytest.raises(SLK1Error):
        check_t0(-1, now)
    with pytest.raises(SLK1Error):
        check_t0(1.5, now)  # type: ignore[arg-type]


@pytest.mark.parametrize("key_id", ["a", "dev-0001", "k7Q2-alice-iphone", "A.b_c~d-9", "x" * 64, "k" + "0" * 20])
def test_key_id_charset_accepted(key_id: str) -> None:
    assert check_key_id(key_id) == key_id


@pytest.mark.parametrize(
    "key_id", ["", "x" * 65, "has space", "a/b", "a+b", "a%20", "a:b", "a@b", "é", "a\n", "dev-0001\n", "a=b", "a&b"]
)
def test_key_id_charset_refused(key_id: str) -> None:
    with pytest.raises(SLK1Error):
        check_key_id(key_id)
    with pytest.raises(SLK1Error):
        device_secret(SECRET, key_id)


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
    assert epoch_at_ms(1_000_000, 30, t0=1000) == 0
    assert epoch_at_ms(1_029_999, 30, t0=1000) == 0
    assert epoch_at_ms(1_030_000, 30, t0=1000) == 1
    with pytest.raises(SLK1Error, match="before the epoch origin"):
        epoch_at_ms(999_999, 30, t0=1000)


@pytest.mark.parametrize("period", [4, 61, 0, -5])
def test_period_bounds(period: int) -> None:
    with pytest.raises(SLK1Error, match="period"):
        epoch_at_ms(100_000, period)


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
