"""The routing guard's tables (CALLING.md, "Where an admitted call goes", "Several nodes"; same `Base` as
`store.models`; migration 0008 creates them): the leases of calls in progress and the spends of the rolling day.

No foreign keys: a lease or a spend is purged by time, and a deleted device's rows simply age out. Times are unix
milliseconds, the platform's clock, passed in by the caller (`store.routes`).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from asterisk_securelink.store.models import Base

LEASE_KINDS = ("through", "callback")


class CallLease(Base):
    """A routed call in progress, held by `node`: live while `renewed_ms` is within `store.routes.LEASE_STALE_MS`
    (the node renews its leases; a crashed node's leases go stale and stop counting)."""

    __tablename__ = "call_leases"

    call_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    device_id: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(16))  # through | callback
    node: Mapped[str] = mapped_column(String(64))
    started_ms: Mapped[int] = mapped_column(BigInteger)
    renewed_ms: Mapped[int] = mapped_column(BigInteger)


class RouteSpend(Base):
    """One routed call counted against the device's `max_per_day` (a rolling 24 h); purged after a day."""

    __tablename__ = "route_spends"
    __table_args__ = (Index("ix_route_spends_device_id_at_ms", "device_id", "at_ms"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    device_id: Mapped[int] = mapped_column(Integer)
    call_id: Mapped[str] = mapped_column(String(128))
    at_ms: Mapped[int] = mapped_column(BigInteger)
