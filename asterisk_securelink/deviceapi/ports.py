"""What the device API needs from the rest of the product: one protocol, `DeviceDirectory`, and its value types.

The server holds no state of its own but the redeem limiter; everything shared between nodes (devices, activation
codes, nonces, vouchers, the audit) is behind this protocol, implemented over the store. Implementations must keep
secrets, codes and call keys out of logs and exception messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol

from asterisk_securelink.core.provisioning import DeviceParams as DeviceParams  # re-exported: the store imports it here

REVOKED: Final = "revoked"
ACTOR: Final = "device"  # the audit actor of everything a device does through the API


@dataclass(frozen=True)
class DeviceView:
    """A device as its current key_id finds it (a rotated-away key_id finds nothing)."""

    device_id: int
    key_id: str
    status: str  # provisioned | registered | suspended | revoked
    fork: bool
    params: DeviceParams


@dataclass(frozen=True, repr=False)
class EnrollResult:
    """What a redeemed activation code gives: the device's secret, once."""

    device_id: int
    key_id: str
    secret: bytes
    params: DeviceParams

    def __repr__(self) -> str:  # never show the secret
        return f"EnrollResult(device_id={self.device_id}, key_id={self.key_id!r}, secret=<hidden>)"


class ClaimOutcome(StrEnum):
    RELEASED = "released"  # 200: first release of this voucher
    REPEATED = "repeated"  # 200: the same claim again with the same Idempotency-Key: the same answer
    ALREADY_CLAIMED = "already_claimed"  # 409: released before, and this is not a repeat (a cloned secret?)
    NOT_FOUND = "not_found"  # 404: no live call of this device presented that number


@dataclass(frozen=True, repr=False)
class ClaimResult:
    outcome: ClaimOutcome
    reason: str = ""  # for the audit: why not found (no_call, expired, wrong_number, ...); never a key
    call_id: str | None = None
    call_key_id: str | None = None
    call_key: bytes | None = None  # 32 bytes, for RELEASED and REPEATED

    def __repr__(self) -> str:  # never show the call key
        return f"ClaimResult({self.outcome.value}, reason={self.reason!r}, call_key_id={self.call_key_id!r})"


@dataclass(frozen=True)
class ApiEvent:
    """One audit event of the API (columns of the audit table; `actor` is always `device`)."""

    action: str  # device.enroll | voucher.claim
    result: str  # ok | not_found | released | repeated | already_claimed
    device_id: int | None = None
    call_id: str | None = None
    source: str | None = None  # the client address
    detail: Mapping[str, str] = field(default_factory=dict)


class DeviceDirectory(Protocol):
    async def by_key_id(self, key_id: str) -> DeviceView | None:
        """The device whose *current* key_id this is, whatever its status (a revoked device included)."""
        ...

    def secret_of(self, key_id: str) -> bytes:
        """The device secret for any well-formed key_id, known or not (derived mode: HMAC of the master key), so
        that an unknown key_id costs the same work as a known one. Called before `by_key_id`'s answer is used."""
        ...

    async def nonce_insert_if_absent(self, key_id: str, nonce: str, expires: int) -> bool:
        """Atomically store (key_id, nonce) until `expires` (unix s) in the store all nodes share; False if it was
        already there (a replay). Expired rows may be purged any time after `expires`."""
        ...

    async def redeem_code(self, code_hash: str, now_ms: int) -> EnrollResult | None:
        """One atomic conditional update: the code with this hash, unused and unexpired at `now_ms`, becomes used.
        None for unknown, used and expired codes alike (and for a device that can no longer enroll)."""
        ...

    async def set_fork(self, device_id: int, enabled: bool, actor: str) -> None:
        """Set the device's fork toggle; audited in the same transaction with `actor`."""
        ...

    async def claim(self, device_id: int, presented: str, now_ms: int, idempotency_key: str | None) -> ClaimResult:
        """Release the voucher of this device's live call that presented `presented` (SLK1 1.1 comparison), once;
        a repeat with the same non-empty `idempotency_key` gets the same answer."""
        ...

    def audit(self, event: ApiEvent) -> None:
        """Record an audit event without blocking (e.g. `AuditWriter.record`)."""
        ...
