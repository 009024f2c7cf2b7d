"""The device API's tables (same `Base` as `store.models`; migration 0006 creates them).

None holds a secret, a code or a call key in clear: an activation code is stored as its SHA-256, a nonce is a random
string the phone chose, and a voucher's call key is sealed (AES-256-GCM under a key derived from the master key,
bound to its row: `callkeys.vouchers`). The number a voucher was presented with is kept only as a keyed hash of its
significant part. Times are unix milliseconds (seconds for nonces), the platform's clock.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from asterisk_securelink.store.models import Base


class ActivationCode(Base):
    """A one-time activation code (`securelink device add|rotate --activation`). Redeemed by one conditional UPDATE
    (unused, unexpired, and the device still has `key_id` and a status that may enroll)."""

    __tablename__ = "activation_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex SHA-256 of the normalized code
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    key_id: Mapped[str] = mapped_column(String(64))  # the device's key_id when the code was made
    created_ms: Mapped[int] = mapped_column(BigInteger)
    expires_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    used_ms: Mapped[int | None] = mapped_column(BigInteger)


class ApiNonce(Base):
    """(key_id, nonce) of every verified request, kept until `expires` (TS + 61 s), shared by every node."""

    __tablename__ = "api_nonces"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires: Mapped[int] = mapped_column(BigInteger, index=True)  # unix seconds


class CallVoucher(Base):
    """A per-call key held for release to the call's device (`POST /v1/calls/claim`), until `expires_ms`
    (creation + voucher_ttl, cut short at hangup), then deleted; the escrow copy (`call_keys`) is separate."""

    __tablename__ = "call_vouchers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the call key id (SECURELINK_CALL_KEY_ID)
    call_id: Mapped[str] = mapped_column(String(128), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    direction: Mapped[str] = mapped_column(String(8))
    literal_prefix: Mapped[str] = mapped_column(String(20))  # what may stand before the significant part
    significant_len: Mapped[int] = mapped_column(Integer)
    match_tag: Mapped[str] = mapped_column(String(64))  # keyed hash of (device, significant digits)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM nonce + ciphertext + tag
    created_ms: Mapped[int] = mapped_column(BigInteger)
    expires_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    released_ms: Mapped[int | None] = mapped_column(BigInteger)
    idempotency_key: Mapped[str | None] = mapped_column(String(128))


class EnrollLimit(Base):
    """Enrollment attempts of one client network (`store.enroll_limits`), shared by every node: the time at which
    its allowance is whole again (GCRA's theoretical arrival time), advanced by one atomic UPSERT per attempt."""

    __tablename__ = "enroll_limits"

    network: Mapped[str] = mapped_column(String(64), primary_key=True)  # an IPv4 address or an IPv6 /64
    tat_ms: Mapped[int] = mapped_column(BigInteger, index=True)  # unix ms
