"""SLK1: the synchronized key algorithm, exactly as `SLK1.md` defines it.

Pure functions, no I/O (`now_ms` reads the clock, nothing else does). Time is integer milliseconds (1.1): no float
anywhere on the way to an epoch. A phone-side implementation written from the spec must produce the same numbers, so
everything here follows the spec to the byte: the message layout, the 64-bit reduction (not RFC 4226's 31-bit
truncation) and the right-to-left placeholder rendering of `formats.NumberFormat`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Final

from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.errors import InputError

MIN_PERIOD: Final = 5
MAX_PERIOD: Final = 60
DEFAULT_PERIOD: Final = 30
MIN_SECRET_LEN: Final = 16
MASTER_KEY_LEN: Final = 32
MAX_T_MS: Final = 2**64 - 1  # t_ms is an unsigned 64-bit integer: a later time has no key (revision 2)

_PREFIX: Final = b"SLK1\x00"
_DEVICE_LABEL: Final = b"SLK1-device\x00"


class Direction(StrEnum):
    """Which leg a key is for. Keys of one direction never validate in the other."""

    INBOUND = "inbound"  # device -> platform
    OUTBOUND = "outbound"  # platform -> device


class SLK1Error(InputError, ValueError):
    """Invalid SLK1 parameters. Messages never contain secret material."""


def check_period(period: int) -> int:
    if isinstance(period, bool) or not isinstance(period, int) or not MIN_PERIOD <= period <= MAX_PERIOD:
        raise SLK1Error(f"period must be a whole number of seconds in {MIN_PERIOD}..{MAX_PERIOD}, got {period!r}")
    return period


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SLK1Error(f"{name} must be an integer, got {type(value).__name__}")
    return value


def epoch_at_ms(t_ms: int, period: int = DEFAULT_PERIOD, t0: int = 0) -> int:
    """`(t_ms - t0*1000) div (period*1000)`, integer arithmetic only. No epoch (SLK1Error) for a time before `t0` or
    outside an unsigned 64-bit integer (`t_ms` at or above 2^64, or negative)."""
    check_period(period)
    _check_int("time (ms)", t_ms)
    _check_int("t0", t0)
    if not 0 <= t_ms <= MAX_T_MS:
        raise SLK1Error("time (ms) must fit in an unsigned 64-bit integer: no key at or after 2^64 ms")
    if t_ms < t0 * 1000:
        raise SLK1Error("time is before the epoch origin t0")
    return (t_ms - t0 * 1000) // (period * 1000)


def epoch_start_ms(epoch: int, period: int = DEFAULT_PERIOD, t0: int = 0) -> int:
    """The first millisecond of `epoch`; the epoch ends (the next one starts) at `epoch_start_ms(epoch + 1, ...)`."""
    return t0 * 1000 + epoch * period * 1000


def now_ms() -> int:
    """The wall clock as integer unix milliseconds (SLK1 1.1's `t_ms`), without a float on the way."""
    return time.time_ns() // 1_000_000


_SECONDS: Final = re.compile(r"-?[0-9]{1,15}(\.[0-9]{0,9})?")


def seconds_to_ms(text: str) -> int:
    """Unix seconds written in decimal ("1790000000.5", "1790000000") as integer milliseconds, floored.

    Exact: the text is read as a decimal, never as a float. Refused (SLK1Error): anything else (exponents, nan, inf,
    more than 9 fraction digits or 15 integer digits).
    """
    value = text.strip()
    if not _SECONDS.fullmatch(value):
        raise SLK1Error("not a unix time in seconds (digits, optionally with a fraction, e.g. 1790000000.5)")
    return int((Decimal(value) * 1000).to_integral_value(rounding=ROUND_FLOOR))


def check_t0(t0: int, now_ms: int) -> int:
    """A valid epoch origin: whole unix seconds, not negative, and never in the future (SLK1.md, "Inputs")."""
    _check_int("t0", t0)
    if t0 < 0:
        raise SLK1Error(f"t0 must be >= 0, got {t0}")
    if t0 * 1000 > now_ms:
        raise SLK1Error(f"t0 ({t0}) is in the future: an epoch origin must not be after now")
    return t0


OUTBOUND_OFFSETS: Final = (0, 1, -1)
"""Epochs of the PBX's outbound key a device accepts, relative to its own current epoch, in the order tried.

SLK1.md, "Outbound presentation": `e-1` (the call took a while, or the PBX clock is behind), `e` (the usual case) and
`e+1` (the PBX already presented `e` to this device, or its clock is ahead). Nothing else: not `e-2`, not `e+2`.
"""


def outbound_window(epoch: int) -> list[int]:
    """The epochs whose outbound key a device accepts when its own clock is at `epoch`, in the order tried.

    The one home of the outbound window: the device reference checks a received key against it and the operator's
    `securelink verify --direction outbound` looks a key up in it. Epochs before 0 do not exist and are left out.
    """
    return [epoch + d for d in OUTBOUND_OFFSETS if epoch + d >= 0]


def key_index(secret: bytes, direction: Direction | str, epoch: int) -> int:
    """The 64-bit value `v` of the spec: first 8 bytes of HMAC-SHA256(secret, msg), big-endian."""
    if len(secret) < MIN_SECRET_LEN:
        raise SLK1Error(f"secret must be at least {MIN_SECRET_LEN} bytes")
    mac = hmac.new(secret, key_message(direction, epoch), hashlib.sha256).digest()
    return int.from_bytes(mac[:8], "big")


def key_message(direction: Direction | str, epoch: int) -> bytes:
    """The HMAC message of `key_index`: "SLK1" 0x00 direction 0x00 epoch (8 bytes, big-endian)."""
    if not 0 <= epoch < 2**64:
        raise SLK1Error("epoch must fit in an unsigned 64-bit integer")
    return _PREFIX + Direction(direction).value.encode("ascii") + b"\x00" + epoch.to_bytes(8, "big")


def derive_key(secret: bytes, direction: Direction | str, epoch: int, fmt: NumberFormat) -> str:
    """The rendered key of `epoch` for `direction`, e.g. '6141638475' or '+12677638475'."""
    return fmt.render(key_index(secret, direction, epoch) % fmt.size)


def device_secret(master_key: bytes, key_id: str) -> bytes:
    """Derived mode: `HMAC-SHA256(master_key, b"SLK1-device" || 0x00 || key_id)`, key_id as ASCII."""
    if len(master_key) != MASTER_KEY_LEN:
        raise SLK1Error(f"master key must be exactly {MASTER_KEY_LEN} bytes")
    return hmac.new(master_key, _DEVICE_LABEL + check_key_id(key_id).encode("ascii"), hashlib.sha256).digest()


_KEY_ID: Final = re.compile(r"[A-Za-z0-9._~-]{1,64}")


def check_key_id(key_id: str) -> str:
    """A key_id is 1..64 characters of `[A-Za-z0-9._~-]`, case-sensitive: safe unencoded in a URI and a header."""
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise SLK1Error("key_id must be 1..64 characters of A-Z a-z 0-9 . _ ~ -")
    return key_id
