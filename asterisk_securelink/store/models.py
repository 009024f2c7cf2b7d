"""The database schema (SQLAlchemy 2.0 typed models). Alembic migrations in `alembic/` create it.

No column holds a device secret: a device's secret is derived from the master key (kept outside the database) and
its `key_id`. Per-call keys are stored only encrypted to the escrow public key.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from asterisk_securelink.lifecycle import STATUSES


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones: stored as naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DIRECTIONS = ("inbound", "outbound")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (
        CheckConstraint(f"status IN {STATUSES!r}", name="status"),
        Index("ix_devices_updated_at", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    display_name: Mapped[str] = mapped_column(String(128))
    mobile_number: Mapped[str] = mapped_column(String(20), index=True)  # E.164: '+' and digits (SLK1 1.1)
    desk_endpoint: Mapped[str | None] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="provisioned")
    revoke_reason: Mapped[str | None] = mapped_column(String(256))
    fork_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    registered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # where an admitted call goes (CALLING.md): each None falls back to the desk endpoint, then `[routing]`
    context: Mapped[str | None] = mapped_column(String(80))  # dialplan context the destination is dialled in
    callerid: Mapped[str | None] = mapped_column(String(128))  # CALLERID(all) form: '"Alice" <1001>'
    home: Mapped[str | None] = mapped_column(String(64))  # disa | hangup | extension:EXTEN


class KeyIdRecord(Base):
    """Every key_id ever issued, kept after its device rotated away from it: a key_id is never reused (SLK1.md),
    since its secret is derived from it. No foreign key: the tombstone outlives the device row."""

    __tablename__ = "key_ids"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # set when a rotation replaced it


class Setting(Base):
    """Installation values the database remembers, e.g. the period and t0 the devices' keys were made with."""

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KeyEpoch(Base):
    """Single-use state per (device, direction): every epoch <= last_epoch is spent."""

    __tablename__ = "key_epochs"
    __table_args__ = (CheckConstraint(f"direction IN {DIRECTIONS!r}", name="direction"),)

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    direction: Mapped[str] = mapped_column(String(8), primary_key=True)
    last_epoch: Mapped[int] = mapped_column(BigInteger, default=-1)
    last_call_id: Mapped[str | None] = mapped_column(String(128))
    drift: Mapped[int] = mapped_column(Integer, default=0)  # accepted epoch - platform's current epoch
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CallKey(Base):
    """A per-call key, escrowed: only its encryption to the escrow public key is stored."""

    __tablename__ = "call_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the key id set on the channels
    call_id: Mapped[str] = mapped_column(String(128), index=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
    direction: Mapped[str] = mapped_column(String(8))
    key_version: Mapped[str] = mapped_column(String(64))  # fingerprint of the escrow public key used
    enc: Mapped[bytes] = mapped_column(LargeBinary)  # ephemeral X25519 public key
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)  # AES-256-GCM ciphertext + tag
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class CallRecord(Base):
    """One keyed call, either direction. Never holds a key: `caller` is NULL when the caller number was the key."""

    __tablename__ = "call_records"
    __table_args__ = (Index("ix_call_records_device_id_started_at", "device_id", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(String(128), unique=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
    direction: Mapped[str] = mapped_column(String(8))
    verdict: Mapped[str | None] = mapped_column(String(16))
    legs: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of legs
    answered_by: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hangup_cause: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str | None] = mapped_column(String(16))  # dtmf, intent, ani, dnis, callback, ...
    caller: Mapped[str | None] = mapped_column(String(32))  # as delivered; "withheld"; NULL when it was the key
    destination: Mapped[str | None] = mapped_column(String(20))  # the number dialled onward
    node: Mapped[str | None] = mapped_column(String(64))  # the node that handled the call


class AuditEvent(Base):
    """Append-only (a trigger refuses UPDATE and DELETE). Never holds a secret or a presented key. On PostgreSQL
    `created_at` is the database's clock at insert (migration 0009); the writer's time is `reported_at`."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(32))  # verify, device.add, device.revoke, key.show, ...
    result: Mapped[str | None] = mapped_column(String(16))  # a verdict, or ok/failed for admin actions
    device_id: Mapped[int | None] = mapped_column(Integer, index=True)  # no FK: the audit outlives rows
    direction: Mapped[str | None] = mapped_column(String(8))
    mode: Mapped[str | None] = mapped_column(String(8))
    call_id: Mapped[str | None] = mapped_column(String(128))
    channel: Mapped[str | None] = mapped_column(String(128))
    subject: Mapped[str | None] = mapped_column(String(64))  # caller number, only when it is not the key
    source: Mapped[str | None] = mapped_column(String(128))
    actor: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)  # JSON
    # on PostgreSQL a trigger sets created_at from the database's clock and keeps what the writer sent here
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LockoutSource(Base):
    """Failed key-alone guesses per source (trunk) and hour: the guess budget (`core.lockout`), shared by every
    node. A guess is counted by one atomic UPSERT; rows older than `core.lockout.BUDGET_HOURS` are purged."""

    __tablename__ = "lockout_sources"

    subject: Mapped[str] = mapped_column(String(128), primary_key=True)
    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # unix ms // 3600000
    guesses: Mapped[int] = mapped_column(Integer, default=0)


class LockoutDevice(Base):
    """Failed two-factor guesses in a row against one device (the device a caller's registered number picks), for
    its progressive backoff. No foreign key: a deleted device's row is simply purged."""

    __tablename__ = "lockout_devices"

    device_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_ms: Mapped[int] = mapped_column(BigInteger, index=True)  # unix ms of the latest counted failure
