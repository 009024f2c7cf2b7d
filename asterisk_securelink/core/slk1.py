"""SLK1: the synchronized key algorithm, exactly as `SLK1.md` defines it.

Pure functions, no I/O. A phone-side implementation written from the spec must produce the same numbers, so
everything here follows the spec to the byte: the message layout, the 64-bit reduction (not RFC 4226's 31-bit
truncation) and the right-to-left placeholder rendering of `formats.NumberFormat`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from enum import StrEnum
from typing import Final

from asterisk_securelink.core.formats import NumberFormat

MIN_PERIOD: Final = 5
MAX_PERIOD: Final = 60
DEFAULT_PERIOD: Final = 30
MIN_SECRET_LEN: Final = 16
MASTER_KEY_LEN: Final = 32

_PREFIX: Final = b"SLK1\x00"
_DEVICE_LABEL: Final = b"SLK1-device\x00"


class Direction(StrEnum):
    """Which leg a key is for. Keys of one direction never validate in the other."""

    INBOUND = "inbound"  # device -> platform
    OUTBOUND = "outbound"  # platform -> device


class SLK1Error(ValueError):
    """Invalid SLK1 parameters. Messages never contain secret material."""


def check_period(period: int) -> int:
    if isinstance(period, bool) or not isinstance(period, int) or not MIN_PERIOD <= period <= MAX_PERIOD:
        raise SLK1Error(f"period must be a whole number of seconds in {MIN_PERIOD}..{MAX_PERIOD}, got {period!r}")
    return period


def epoch_at(unix_time: float, period: int = DEFAULT_PERIOD, t0: int = 0) -> int:
    """`floor((unix_time - t0) / period)`; times before `t0` are refused (the spec requires e >= 0)."""
    check_period(period)
    if not math.isfinite(unix_time):
        raise SLK1Error("time must be a finite number")
    e = math.floor((unix_time - t0) / period)
    if e < 0:
        raise SLK1Error("time is before the epoch origin t0")
    return e


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
    if not 0 <= epoch < 2**64:
        raise SLK1Error("epoch must fit in an unsigned 64-bit integer")
    d = Direction(direction)
    msg = _PREFIX + d.value.encode("ascii") + b"\x00" + epoch.to_bytes(8, "big")
    mac = hmac.new(secret, msg, hashlib.sha256).digest()
    return int.from_bytes(mac[:8], "big")


def derive_key(secret: bytes, direction: Direction | str, epoch: int, fmt: NumberFormat) -> str:
    """The rendered key of `epoch` for `direction`, e.g. '6141638475' or '+12677638475'."""
    return fmt.render(key_index(secret, direction, epoch) % fmt.size)


def device_secret(master_key: bytes, key_id: str) -> bytes:
    """Derived mode: `HMAC-SHA256(master_key, b"SLK1-device" || 0x00 || key_id)`, key_id as ASCII."""
    if len(master_key) != MASTER_KEY_LEN:
        raise SLK1Error(f"master key must be exactly {MASTER_KEY_LEN} bytes")
    return hmac.new(master_key, _DEVICE_LABEL + key_id_bytes(key_id), hashlib.sha256).digest()


def key_id_bytes(key_id: str) -> bytes:
    """A key_id is printable ASCII without spaces, 1..64 characters (it travels in a URI and a database)."""
    if not 1 <= len(key_id) <= 64 or not all(33 <= ord(c) <= 126 for c in key_id):
        raise SLK1Error("key_id must be 1..64 printable ASCII characters without spaces")
    return key_id.encode("ascii")
