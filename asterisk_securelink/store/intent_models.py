"""The intents' tables (CALLING.md, "Intent"; same `Base` as `store.models`; migration 0007 creates them).

An intent holds no secret: the call itself carries none (that is why the racing spoofer needs the noise records and
cancel on conflict). Times are unix milliseconds, the platform's clock, passed in by the caller.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from asterisk_securelink.store.models import Base


class CallIntent(Base):
    """One intent: live while unexpired, unspent and uncancelled. Spent by one conditional UPDATE (`store.intents`);
    kept after it expires for the rate limit's rolling minute, then purged."""

    __tablename__ = "call_intents"
    __table_args__ = (
        # admit's pick, the rate limit's window, the replace and the conflict cancel: all per device
        Index("ix_call_intents_device_id_created_ms", "device_id", "created_ms"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # intent_id, uuid4
    call_id: Mapped[str] = mapped_column(String(36), unique=True)  # the call id the phone sees, uuid4
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    access_number: Mapped[str] = mapped_column(String(20))  # E.164, from `[calling] access_numbers`
    destination: Mapped[str | None] = mapped_column(String(20))  # [0-9]{1,20}, or none (the device's home)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    expires_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    spent_ms: Mapped[int | None] = mapped_column(BigInteger)
    spent_channel: Mapped[str | None] = mapped_column(String(128))  # the channel the intent admitted
    cancelled_ms: Mapped[int | None] = mapped_column(BigInteger)  # replaced, or cancelled on conflict
    idempotency_key: Mapped[str | None] = mapped_column(String(128))


class IntentNoise(Base):
    """A call from a device's registered number that found no live intent (a spoofer probing, or a person calling
    without the app). An intent requested within `[calling] intent_quiet` of one is refused (409 `use_dtmf`)."""

    __tablename__ = "intent_noise"
    __table_args__ = (Index("ix_intent_noise_device_id_at_ms", "device_id", "at_ms"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(128))  # the call that wrote it (cleared if admitted by DTMF)
    at_ms: Mapped[int] = mapped_column(BigInteger, index=True)
