"""The store: a thin async layer over the SQLAlchemy models. Policy lives in `core` and `lifecycle`; the one piece
of it enforced here is the single-use spend, which must be one atomic statement (it re-checks the device's key id
and a spendable status, `lifecycle.SPENDABLE`, in the same UPDATE).

Every admin change writes its audit event in the same transaction, so a change never lands without its record
(and a failed change leaves neither).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, event, func, select, text, update
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from asterisk_securelink.core.slk1 import Direction, check_key_id
from asterisk_securelink.errors import SecureLinkError
from asterisk_securelink.lifecycle import SPENDABLE, DeviceStatus
from asterisk_securelink.store import spend
from asterisk_securelink.store.audit_rows import AUDIT_COLUMNS, insert_audit
from asterisk_securelink.store.driver import SQLITE_SYNCHRONOUS, keep_idle
from asterisk_securelink.store.models import (
    AuditEvent,
    CallKey,
    CallRecord,
    Device,
    KeyEpoch,
    KeyIdRecord,
    Setting,
    utcnow,
)
from asterisk_securelink.store.spend import SpendResult


class StoreError(SecureLinkError, RuntimeError):
    pass


class DuplicateError(StoreError):
    pass


@dataclass(frozen=True)
class DeviceRow:
    """A detached, immutable view of a device row (safe to hand across tasks)."""

    id: int
    display_name: str
    mobile_number: str
    desk_endpoint: str | None
    key_id: str
    status: str
    revoke_reason: str | None
    fork_enabled: bool
    created_at: datetime
    updated_at: datetime
    registered_at: datetime | None
    revoked_at: datetime | None
    context: str | None = None  # the routing identity (calling.identity), when the device has its own
    callerid: str | None = None
    home: str | None = None  # where a call without a destination goes (core.tollguard.parse_home)

    @classmethod
    def of(cls, d: Device) -> DeviceRow:
        return cls(
            d.id, d.display_name, d.mobile_number, d.desk_endpoint, d.key_id, d.status, d.revoke_reason,
            d.fork_enabled, d.created_at, d.updated_at, d.registered_at, d.revoked_at, d.context, d.callerid, d.home,
        )  # fmt: skip

    def public(self) -> dict[str, Any]:
        """What the CLI and audit may show: everything here is non-secret (key_id is an identifier)."""
        return {
            "id": self.id,
            "name": self.display_name,
            "mobile_number": self.mobile_number,
            "desk_endpoint": self.desk_endpoint,
            "key_id": self.key_id,
            "status": self.status,
            "revoke_reason": self.revoke_reason,
            "fork": self.fork_enabled,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "registered_at": self.registered_at.isoformat() if self.registered_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "context": self.context,
            "callerid": self.callerid,
            "home": self.home,
        }


SQLITE_POOL_TIMEOUT = 30.0  # seconds a statement waits for the one SQLite connection (the busy timeout's twin)


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if url.startswith("sqlite"):
        # One connection per process: SQLite has one writer anyway, and writers on several connections of one process
        # wait for each other in SQLite's busy handler (sleeps of up to 100 ms each), where one connection makes them
        # queue in order on the event loop instead. Other processes (the CLI) still wait in the busy handler.
        kwargs.setdefault("pool_size", 1)
        kwargs.setdefault("max_overflow", 0)
        kwargs.setdefault("pool_timeout", SQLITE_POOL_TIMEOUT)
        # No rollback at each check-in (a hand-off to aiosqlite's thread; every user ends its own transaction, and
        # `_end_open_transaction` catches one left open: docs/decisions.md, "The hot path's writes")
        kwargs.setdefault("pool_reset_on_return", None)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "checkin")
        def _end_open_transaction(dbapi_conn: DBAPIConnection | None, _record: ConnectionPoolEntry) -> None:
            driver = getattr(dbapi_conn, "driver_connection", None)
            if dbapi_conn is not None and getattr(driver, "in_transaction", False):  # read without a hand-off
                dbapi_conn.rollback()

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")  # durable commits, stated (`driver.immediate`)
            cur.close()

        keep_idle(engine)  # hot transactions skip the check-out while the connection is unused (`driver.run_on_driver`)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Store:
        return cls(make_engine(url, **kwargs))

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    # -- schema --------------------------------------------------------------------------------------------
    async def schema_revision(self) -> str | None:
        """The Alembic revision the database is at, or None when it was never migrated."""
        try:
            async with self.engine.connect() as conn:
                row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
        except Exception:  # noqa: BLE001 - no table means not migrated; the caller reports it
            return None
        return str(row[0]) if row else None

    # -- devices ---------------------------------------------------------------------------------------------
    async def add_device(
        self,
        display_name: str,
        mobile_number: str,
        desk_endpoint: str | None,
        key_id: str,
        actor: str,
        routing: Mapping[str, str | None] | None = None,
    ) -> DeviceRow:
        """`key_id` must never have been issued before (`KeyIdRecord`): else `DuplicateError`. `routing`: the
        device's own context / callerid / home (checked by the caller; another name is a TypeError), audited."""
        check_key_id(key_id)
        routing = {k: v for k, v in (routing or {}).items() if v is not None}
        now = utcnow()
        try:
            async with self.transaction() as s:
                device = Device(
                    display_name=display_name, mobile_number=mobile_number, desk_endpoint=desk_endpoint,
                    key_id=key_id, status="provisioned", fork_enabled=True, created_at=now, updated_at=now, **routing,
                )  # fmt: skip
                s.add(device)
                await s.flush()
                s.add(KeyIdRecord(key_id=key_id, device_id=device.id, created_at=now))
                for direction in Direction:
                    s.add(KeyEpoch(device_id=device.id, direction=direction.value, last_epoch=-1, updated_at=now))
                detail = {"name": display_name, **routing}
                s.add(_audit("device.add", "ok", actor, device_id=device.id, detail=detail))
        except IntegrityError:
            raise DuplicateError("that key_id was issued before (key ids are never reused)") from None
        return DeviceRow.of(device)

    async def get_device(self, ref: str | int) -> DeviceRow | None:
        """By numeric id, or by key_id."""
        async with self.sessions() as s:
            if isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit()):
                if not 0 < int(ref) < 2**63:  # beyond any row id (and SQLite's INTEGER)
                    return None
                device = await s.get(Device, int(ref))
            else:
                device = (await s.execute(select(Device).where(Device.key_id == ref))).scalar_one_or_none()
            return DeviceRow.of(device) if device else None

    async def list_devices(self, since: datetime | None = None) -> list[DeviceRow]:
        """All devices, or those changed at or after `since` (for incremental index refreshes)."""
        q = select(Device).order_by(Device.id)
        if since is not None:
            q = q.where(Device.updated_at >= since)
        async with self.sessions() as s:
            return [DeviceRow.of(d) for d in (await s.execute(q)).scalars()]

    async def update_device(
        self, device_id: int, action: str, actor: str, detail: dict[str, Any] | None = None, **values: Any
    ) -> DeviceRow:
        """Change columns of one device and audit it, in one transaction. A new `key_id` is a rotation: see
        `_rotate_in` (a key_id issued before is a `DuplicateError`)."""
        now = utcnow()
        new_key_id = values.pop("key_id", None)
        try:
            async with self.transaction() as s:
                device = await s.get(Device, device_id, with_for_update=True)
                if device is None:
                    raise StoreError(f"no device with id {device_id}")
                for name, value in values.items():
                    setattr(device, name, value)
                device.updated_at = now
                if new_key_id is not None:
                    await _rotate_in(s, device, new_key_id, now)
                s.add(_audit(action, "ok", actor, device_id=device_id, detail=detail))
        except IntegrityError:
            raise DuplicateError("that key_id was issued before (key ids are never reused)") from None
        return DeviceRow.of(device)

    async def rotate_all(
        self, new_key_id: Callable[[], str], settings: Mapping[str, str], actor: str
    ) -> list[tuple[str, DeviceRow]]:
        """Rotate every device that is not revoked and record `settings` (the period and t0 the new keys are made
        with), in one transaction. Returns (old key_id, device) pairs."""
        now = utcnow()
        rotated: list[tuple[str, DeviceRow]] = []
        try:
            async with self.transaction() as s:
                q = select(Device).where(Device.status != DeviceStatus.REVOKED.value).order_by(Device.id)
                for device in (await s.execute(q)).scalars().all():
                    old = device.key_id
                    await _rotate_in(s, device, new_key_id(), now)
                    device.rotated_at = device.updated_at = now
                    s.add(_audit("device.rotate", "ok", actor, device_id=device.id, detail={"old_key_id": old}))
                    rotated.append((old, DeviceRow.of(device)))
                await _put_settings(s, settings, now)
                s.add(_audit("settings.keys", "ok", actor, detail={**settings, "rotated": len(rotated)}))
        except IntegrityError:
            raise DuplicateError("a new key_id was issued before (key ids are never reused)") from None
        return rotated

    async def count_live_devices(self) -> int:
        """Devices whose keys still count (every status but revoked)."""
        async with self.sessions() as s:
            q = select(func.count(Device.id)).where(Device.status != DeviceStatus.REVOKED.value)
            return int((await s.execute(q)).scalar_one())

    async def count_lookup_devices(self) -> int:
        """`D` of the strength figure (SLK1.md revision 2): the devices whose keys are looked up, provisioned and
        registered; a suspended or revoked device is out of the lookup (`lifecycle.SPENDABLE`)."""
        async with self.sessions() as s:
            q = select(func.count(Device.id)).where(Device.status.in_(SPENDABLE))
            return int((await s.execute(q)).scalar_one())

    # -- settings --------------------------------------------------------------------------------------------
    async def settings(self) -> dict[str, str]:
        async with self.sessions() as s:
            return {row.name: row.value for row in (await s.execute(select(Setting))).scalars()}

    async def record_settings(self, values: Mapping[str, str], actor: str) -> None:
        for attempt in (1, 2):  # two nodes starting at once may both insert: the second try updates
            try:
                async with self.transaction() as s:
                    await _put_settings(s, values, utcnow())
                    s.add(_audit("settings.keys", "ok", actor, detail=dict(values)))
                return
            except IntegrityError:
                if attempt == 2:
                    raise

    # -- single use ------------------------------------------------------------------------------------------
    async def spend(self, device_id: int, direction: Direction, epoch: int, call_id: str | None, drift: int) -> bool:
        """Atomically spend `epoch` and every earlier one. True when this call may use it.

        One conditional UPDATE decides: its row count is 1 for exactly one of any number of racing nodes.
        A re-presentation by the same call (SIP retransmission, second Stasis entry) is not a second use.
        """
        async with self.engine.begin() as conn:
            return await spend.spend_in(conn, device_id, None, direction, epoch, call_id, drift)

    async def check_and_spend(
        self, device_id: int, key_id: str, direction: Direction, epoch: int, call_id: str | None, drift: int
    ) -> SpendResult:
        """The verifier's last step, in one transaction: read the device and, if it still has `key_id` and a status
        that may use keys (provisioned, registered), spend like `spend`. The UPDATE itself re-checks key id and
        status, so a device revoked or rotated by another node after the read is not admitted."""
        return await spend.check_and_spend(self.engine, device_id, key_id, direction, epoch, call_id, drift)

    async def next_outbound_epoch(self, device_id: int, current: int, call_id: str | None) -> int | None:
        """Claim the outbound epoch to present: max(current, last + 1), at most current + 1 (SLK1.md).

        Returns None when the device was already presented current and current + 1 (rate limited).
        Atomic: a conditional UPDATE per candidate epoch, so two nodes never present the same key.
        """
        for epoch in (current, current + 1):
            if await self.spend(device_id, Direction.OUTBOUND, epoch, None, epoch - current):
                return epoch
        return None

    async def key_epoch(self, device_id: int, direction: Direction) -> KeyEpoch | None:
        async with self.sessions() as s:
            return await s.get(KeyEpoch, (device_id, direction.value))

    # -- escrowed call keys and call records -------------------------------------------------------------------
    async def add_call_key(self, row: CallKey, actor: str) -> None:
        async with self.transaction() as s:
            s.add(row)
            s.add(
                _audit(
                    "escrow.store", "ok", actor, device_id=row.device_id, call_id=row.call_id,
                    direction=row.direction, detail={"key_id": row.id, "key_version": row.key_version},
                )
            )  # fmt: skip

    async def get_call_keys(self, call_id: str) -> list[CallKey]:
        async with self.sessions() as s:
            q = (
                select(CallKey)
                .where((CallKey.call_id == call_id) | (CallKey.id == call_id))
                .order_by(CallKey.created_at)
            )
            return list((await s.execute(q)).scalars())

    async def count_call_keys(self) -> int:
        async with self.sessions() as s:
            return int((await s.execute(select(func.count(CallKey.id)))).scalar_one())

    async def list_call_keys(self, limit: int = 1000) -> list[CallKey]:
        async with self.sessions() as s:
            q = select(CallKey).order_by(CallKey.created_at.desc()).limit(limit)
            return list(reversed((await s.execute(q)).scalars().all()))

    async def purge_call_keys(self, now: datetime, actor: str) -> int:
        async with self.transaction() as s:
            result = await s.execute(delete(CallKey).where(CallKey.expires_at <= now))
            count = _rowcount(result)
            s.add(_audit("escrow.purge", "ok", actor, detail={"deleted": count}))
            return count

    async def add_call_record(self, row: CallRecord) -> None:
        async with self.transaction() as s:
            s.add(row)

    async def list_call_records(
        self,
        since: datetime | None = None,
        limit: int = 1000,
        *,
        device_id: int | None = None,
        direction: str | None = None,
    ) -> list[CallRecord]:
        """The newest `limit` records (started at or after `since`, of one device, one direction), oldest first."""
        q = select(CallRecord).order_by(CallRecord.started_at.desc(), CallRecord.id.desc()).limit(limit)
        if since is not None:
            q = q.where(CallRecord.started_at >= since)
        if device_id is not None:
            q = q.where(CallRecord.device_id == device_id)
        if direction is not None:
            q = q.where(CallRecord.direction == direction)
        async with self.sessions() as s:
            return list(reversed((await s.execute(q)).scalars().all()))

    async def purge_call_records(self, before: datetime) -> int:
        """Delete the records of calls started before `before` (`[calling] record_days`)."""
        async with self.engine.begin() as conn:
            return _rowcount(await conn.execute(delete(CallRecord).where(CallRecord.started_at < before)))

    # -- audit -------------------------------------------------------------------------------------------------
    async def audit(self, action: str, result: str | None, actor: str | None = None, **fields: Any) -> None:
        async with self.transaction() as s:
            s.add(_audit(action, result, actor, **fields))

    async def audit_many(self, events: Sequence[dict[str, Any]]) -> None:
        """One INSERT of many rows (`audit_fields` dicts), one transaction (`store.audit_rows`)."""
        await insert_audit(self.engine, events)

    async def list_audit(
        self, since: datetime | None = None, limit: int = 1000, action: str | None = None
    ) -> list[AuditEvent]:
        # by when each event happened: a verdict is queued (and inserted) after admin changes it caused
        q = select(AuditEvent).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(limit)
        if since is not None:
            q = q.where(AuditEvent.created_at >= since)
        if action is not None:
            q = q.where(AuditEvent.action == action)
        async with self.sessions() as s:
            return list(reversed((await s.execute(q)).scalars().all()))


async def _rotate_in(s: AsyncSession, device: Device, new_key_id: str, now: datetime) -> None:
    """Give `device` a new key_id: the old one stays issued as a tombstone, the new key has no spent epochs."""
    check_key_id(new_key_id)
    await s.execute(
        update(KeyIdRecord).where(KeyIdRecord.key_id == device.key_id, KeyIdRecord.retired_at.is_(None))
        .values(retired_at=now)
    )  # fmt: skip
    s.add(KeyIdRecord(key_id=new_key_id, device_id=device.id, created_at=now))
    await s.flush()  # a key_id issued before fails here, before the device row changes
    device.key_id = new_key_id
    await s.execute(
        update(KeyEpoch)
        .where(KeyEpoch.device_id == device.id)
        .values(last_epoch=-1, last_call_id=None, drift=0, updated_at=now)
    )


async def _put_settings(s: AsyncSession, values: Mapping[str, str], now: datetime) -> None:
    for name, value in values.items():
        row = await s.get(Setting, name, with_for_update=True)
        if row is None:
            s.add(Setting(name=name, value=value, updated_at=now))
        else:
            row.value, row.updated_at = value, now


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def _audit(action: str, result: str | None, actor: str | None, **fields: Any) -> AuditEvent:
    """An audit row written in the caller's own transaction (admin changes): the values of `audit_fields`."""
    return AuditEvent(**audit_fields(action, result, actor, **fields))


def audit_fields(action: str, result: str | None, actor: str | None = None, **fields: Any) -> dict[str, Any]:
    """The column values of an audit event, for buffering before they can be written (a plain dict: this runs for
    every call, and building an ORM object for it cost more than the rest of the record)."""
    detail = fields.pop("detail", None)
    unknown = set(fields) - AUDIT_COLUMNS
    if unknown:
        raise TypeError(f"not audit columns: {', '.join(sorted(unknown))}")
    row: dict[str, Any] = dict.fromkeys(AUDIT_COLUMNS)
    row.update(fields)
    row.update(
        action=action,
        result=result,
        actor=actor,
        detail=json.dumps(detail, sort_keys=True) if detail else None,
        created_at=fields.get("created_at") or utcnow(),
    )
    return row
