"""What the device API needs from the rest of the product: one protocol, `DeviceDirectory`, and its value types.

The server holds no state of its own (its enrollment limits are `store.enroll_limits`, shared); everything shared
between nodes (devices, activation codes, nonces, vouchers, intents, the audit) is behind this protocol, implemented
over the store, and so is what the platform offers (`offer`: the provisioning by the phone's version; `intents`: the
intent settings), since the directory is what the composition root hands the server. Implementations must keep
secrets, codes and call keys out of logs and exception messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol

from asterisk_securelink.core.provisioning import Offer as Offer
from asterisk_securelink.core.tollguard import Policy
from asterisk_securelink.errors import SecureLinkError

REVOKED: Final = "revoked"
ROTATED: Final = "rotated"  # the 403 error code of a request signed with a key_id a rotation retired
SUSPENDED: Final = "suspended"
PROVISIONED: Final = "provisioned"  # enrolled, never admitted until its first verified call registers it
ACTOR: Final = "device"  # the audit actor of everything a device does through the API


@dataclass(frozen=True)
class DeviceView:
    """A device as its current key_id finds it (a rotated-away key_id finds nothing: `DeviceDirectory.retired`)."""

    device_id: int
    key_id: str
    status: str  # provisioned | registered | suspended | revoked
    fork: bool
    home: str | None = None  # the device's own `home` (CALLING.md); None: `[routing] home`


@dataclass(frozen=True, repr=False)
class EnrollResult:
    """What a redeemed activation code gives: the device's secret, once."""

    device_id: int
    key_id: str
    secret: bytes

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
class IntentSettings:
    """`[calling]` as the intent route needs it (CALLING.md, "Intent"). `offered`: access numbers and `intent = on`."""

    access_numbers: tuple[str, ...] = ()  # E.164; the route picks one with a CSPRNG
    on: bool = False
    ttl_s: int = 30
    quiet_s: int = 120
    per_minute: int = 10
    policy: Policy | None = None  # the guard's destination rules (`[routing]`); None: every destination passes
    home: str = "disa"  # `[routing] home`, where a call without a destination goes

    @property
    def offered(self) -> bool:
        return self.on and bool(self.access_numbers)


class IntentOutcome(StrEnum):
    CREATED = "created"  # 201
    REPEATED = "repeated"  # 201: the same Idempotency-Key while the intent lives: the same intent
    RATE_LIMITED = "rate_limited"  # 429 with Retry-After
    USE_DTMF = "use_dtmf"  # 409: a call from the device's number matched no intent within intent_quiet


@dataclass(frozen=True)
class IntentResult:
    outcome: IntentOutcome
    intent_id: str = ""  # created, repeated
    call_id: str = ""
    access_number: str = ""  # the number to dial (a repeat: the one first chosen)
    expires_ms: int = 0
    retry_after_s: int = 0  # rate_limited


class CallbackOutcome(StrEnum):
    PLACED = "placed"  # 202 {"call_id"}: the PBX is calling the phone
    BUSY = "busy"  # 409: a callback of this device is live
    DENIED = "denied"  # 403: the guard refuses the destination
    RATE_LIMITED = "rate_limited"  # 429 with Retry-After: max_concurrent or max_per_day reached
    NO_ROUTE = "no_route"  # 409: no context / caller ID for this device
    UNAVAILABLE = "unavailable"  # 503: no Stasis app, the store or ARI failed


@dataclass(frozen=True)
class CallbackResult:
    outcome: CallbackOutcome
    call_id: str = ""  # placed (also set on refusals decided after a call id was drawn)
    retry_after_s: int = 0  # rate_limited
    reason: str = ""  # for the audit: why refused (the guard's reason, ...)


class Callbacks(Protocol):
    """`POST /v1/calls/callback` (CALLING.md, "Callback"): implemented by the Stasis app (`calling.callback`).
    The route checked the device's status and the destination's form; the rest is decided here, when the request
    arrives. Never raises for a refusal; raising is answered 503 `unavailable`."""

    async def request(self, device_id: int, destination: str, now_ms: int) -> CallbackResult: ...


class DirectoryUnavailable(SecureLinkError):
    """The shared store did not answer (503 `unavailable`). The message names no secret."""


@dataclass(frozen=True)
class ApiEvent:
    """One audit event of the API (columns of the audit table; `actor` is always `device`)."""

    action: str  # device.enroll | voucher.claim | intent.create | callback.request
    result: str  # ok | not_found | released | repeated | already_claimed | created | placed | refused
    device_id: int | None = None
    call_id: str | None = None
    source: str | None = None  # the client address
    detail: Mapping[str, str] = field(default_factory=dict)


class DeviceDirectory(Protocol):
    @property
    def offer(self) -> Offer:
        """The provisioning parameters this platform gives a phone, by the version it speaks."""
        ...

    @property
    def intents(self) -> IntentSettings:
        """The intent settings (`[calling]`); `offered` False: the route answers 409 `use_dtmf`."""
        ...

    async def by_key_id(self, key_id: str) -> DeviceView | None:
        """The device whose *current* key_id this is, whatever its status (a revoked device included)."""
        ...

    async def retired(self, key_id: str) -> bool:
        """Whether a rotation retired this key_id (it was a device's, and that device has another one now). Asked
        only for a key_id `by_key_id` did not find; the request is then checked with its old secret and answered
        403 `rotated`."""
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

    async def claim_by_call_id(
        self, device_id: int, call_id: str, now_ms: int, idempotency_key: str | None
    ) -> ClaimResult:
        """The same release for a call the platform named to this device (an intent's or a callback's call_id); a
        call of another device is not found, as if it did not exist."""
        ...

    async def create_intent(
        self, device_id: int, access_number: str, destination: str | None, now_ms: int, idempotency_key: str | None
    ) -> IntentResult:
        """A new intent of the device for `access_number` (replacing its live one), valid `intents.ttl_s`; or the
        same intent again for the same non-empty `idempotency_key`; or rate_limited / use_dtmf. The caller checked
        the device's status, the destination and the settings. Raises DirectoryUnavailable when the store fails."""
        ...

    def audit(self, event: ApiEvent) -> None:
        """Record an audit event without blocking (e.g. `AuditWriter.record`)."""
        ...
