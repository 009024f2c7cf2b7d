"""Vouchers at rest (`docs/device-api.md`, "Vouchers"): how a per-call key is sealed for release and how a claimed
number finds its call. Pure.

* The call key is sealed with AES-256-GCM under `HMAC-SHA256(master_key, "securelink-voucher-seal-v1")`, with the
  row's identity (key id, call id, device, direction, creation time) as associated data: a sealed copy moved into
  another row does not open. The database alone opens nothing.
* The presented number is kept as a `Presentation`: the literal prefix that may stand before its significant part,
  the significant part's length K, and a keyed hash of (device, significant digits) under
  `HMAC-SHA256(master_key, "securelink-voucher-match-v1")`. A claimed number matches by SLK1 1.1's rules
  (`core.compare`): its last K digits hash to the same tag (constant-time compare), and what stands before them is a
  trunk prefix followed by a suffix of the literal prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from asterisk_securelink.core.compare import country_code_of, prefix_ok
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.numbers import Kind, classify, key_digits
from asterisk_securelink.errors import VerificationError

SEAL_LABEL: Final = b"securelink-voucher-seal-v1"
MATCH_LABEL: Final = b"securelink-voucher-match-v1"
NONCE_LEN: Final = 12
CALL_KEY_LEN: Final = 32


class VoucherError(VerificationError, ValueError):
    """A sealed voucher that does not open (wrong row, wrong master key, damaged). Never holds key material."""


@dataclass(frozen=True)
class Presentation:
    """How a call's number is kept and compared: `literal_prefix` + a significant part of `significant_len` digits,
    known only by its `tag`."""

    literal_prefix: str
    significant_len: int
    tag: str


@dataclass(frozen=True)
class RowIdentity:
    """What a sealed copy is bound to."""

    key_id: str
    call_id: str
    device_id: int
    direction: str
    created_ms: int

    def aad(self) -> bytes:
        parts = (self.key_id, self.call_id, str(self.device_id), self.direction, str(self.created_ms))
        return b"securelink-voucher-v1\x00" + "\x00".join(parts).encode("utf-8")


class VoucherKeys:
    """The two keys derived from the master key. Holds no other state."""

    def __init__(self, master_key: bytes) -> None:
        self._seal = AESGCM(hmac.new(master_key, SEAL_LABEL, hashlib.sha256).digest())
        self._match = hmac.new(master_key, MATCH_LABEL, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "VoucherKeys(<hidden>)"

    def seal(self, call_key: bytes, row: RowIdentity) -> bytes:
        if len(call_key) != CALL_KEY_LEN:
            raise VoucherError("a call key is 32 bytes")
        nonce = os.urandom(NONCE_LEN)
        return nonce + self._seal.encrypt(nonce, call_key, row.aad())

    def open(self, sealed: bytes, row: RowIdentity) -> bytes:
        try:
            key = self._seal.decrypt(sealed[:NONCE_LEN], sealed[NONCE_LEN:], row.aad())
        except (InvalidTag, ValueError):
            raise VoucherError("the sealed voucher does not open for this row") from None
        if len(key) != CALL_KEY_LEN:
            raise VoucherError("the sealed voucher does not hold a call key")
        return key

    def tag(self, device_id: int, significant: str) -> str:
        return hmac.new(self._match, f"{device_id}\x00{significant}".encode(), hashlib.sha256).hexdigest()

    # -- what a call presented -----------------------------------------------------------------------------------
    def of_key(self, device_id: int, fmt: NumberFormat, rendered_key: str) -> Presentation:
        """A key the format rendered (outbound: the caller ID the PBX presented)."""
        digits = key_digits(rendered_key)
        return self._presentation(device_id, fmt.literal_prefix, fmt.significant(digits))

    def of_delivered(self, device_id: int, fmt: NumberFormat, delivered_digits: str) -> Presentation:
        """A key as the network delivered it, already matched by 1.1's rules (inbound: the admitted ANI or DNIS):
        its last K digits are the key's significant part."""
        k = fmt.significant_length
        if len(delivered_digits) < k:
            raise VoucherError("the delivered number is shorter than the key's significant part")
        return self._presentation(device_id, fmt.literal_prefix, delivered_digits[-k:])

    def of_number(self, device_id: int, e164: str) -> Presentation:
        """An E.164 number (`outbound.present_number`): the country code is the literal prefix, the national number
        the significant part, as SLK1 1.1 compares registered numbers."""
        digits = key_digits(e164)
        cc = country_code_of(digits) or ""
        return self._presentation(device_id, cc, digits[len(cc) :])

    def _presentation(self, device_id: int, literal_prefix: str, significant: str) -> Presentation:
        if not significant.isascii() or not significant.isdigit():
            raise VoucherError("a significant part is digits")
        return Presentation(literal_prefix, len(significant), self.tag(device_id, significant))

    def matches(self, device_id: int, claimed: str, kept: Presentation, trunk_prefixes: Sequence[str]) -> bool:
        """Does the number a phone claims with (as it saw or dialed it) name this presentation? SLK1 1.1's rules."""
        p = classify(claimed)
        if p.kind is not Kind.DIGITS or kept.significant_len < 1:
            return False
        digits, k = p.digits, kept.significant_len
        tail = digits[-k:]
        same = hmac.compare_digest(self.tag(device_id, tail), kept.tag)
        head_ok = prefix_ok(digits[: max(0, len(digits) - k)], kept.literal_prefix, trunk_prefixes)
        return same and head_ok and len(digits) >= k
