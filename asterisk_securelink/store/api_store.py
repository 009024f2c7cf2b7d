"""The device API's `DeviceDirectory` over the store (`deviceapi.ports`), shared by every node on the database.

Each decision that must hold across nodes is one atomic statement: redeeming a code is one conditional UPDATE
(unused, unexpired, the device still has the code's key_id and may enroll); a nonce is one INSERT .. ON CONFLICT
that only replaces an expired row; a voucher is released by one conditional UPDATE (not yet released, not expired).
Device secrets are derived, never stored; call keys are stored sealed (`deviceapi.vouchers`); codes as SHA-256.

The calls a claim makes (`by_key_id`, `nonce_insert_if_absent`, `claim`) and the call hooks' `add_voucher` and
`end_call` are SQLAlchemy Core statements (no ORM session) on a few connections this object keeps checked out of the
store's pool on PostgreSQL (`_Lanes`, eight, in autocommit: no call pays a pool checkout, a pre-ping or BEGIN/ROLLBACK),
or checked out per call on SQLite (its pool holds one connection, which the store's other writers need; the driver
opens the transaction at the write, committed right after it). Each call is one statement, or reads followed by the
one conditional statement that decides, so none needs a wider transaction. `close()` returns the kept connections;
so does the store's `close()` (the engine's dispose). Nothing is cached: a suspended, revoked or rotated device, a
used nonce, a released voucher are seen by the next request on any node. Measured in `docs/benchmarks.md`, "Device
API claims under load".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, bindparam, delete, event, exists, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from asterisk_securelink.core.slk1 import device_secret
from asterisk_securelink.deviceapi.ports import (
    ACTOR,
    ApiEvent,
    ClaimOutcome,
    ClaimResult,
    DeviceParams,
    DeviceView,
    EnrollResult,
)
from asterisk_securelink.deviceapi.vouchers import Presentation, RowIdentity, VoucherError, VoucherKeys
from asterisk_securelink.lifecycle import SPENDABLE
from asterisk_securelink.store.api_models import ActivationCode, ApiNonce, CallVoucher
from asterisk_securelink.store.models import AuditEvent, Device, utcnow
from asterisk_securelink.store.store import Store, StoreError, audit_fields

log = logging.getLogger(__name__)

PG_LANES = 8  # connections kept for the hot statements on PostgreSQL (SQLite: none, see the module's docstring)

ENROLLABLE = SPENDABLE  # provisioned, registered: a suspended or revoked device cannot enroll
AuditSink = Callable[[dict[str, Any]], None]  # enqueues one audit event (`AuditWriter.record`); never blocks
Observer = Callable[[ApiEvent], None]  # metrics, AMI: told of every API event after it is audited

# the hot statements, built once (bound parameters; SQLAlchemy caches their compiled form)
_DEVICE_BY_KEY_ID = select(Device.id, Device.key_id, Device.status, Device.fork_enabled).where(
    Device.key_id == bindparam("key_id")
)
_VOUCHER_COLUMNS = (
    CallVoucher.id, CallVoucher.call_id, CallVoucher.device_id, CallVoucher.direction, CallVoucher.literal_prefix,
    CallVoucher.significant_len, CallVoucher.match_tag, CallVoucher.sealed, CallVoucher.created_ms,
    CallVoucher.expires_ms, CallVoucher.released_ms, CallVoucher.idempotency_key,
)  # fmt: skip
_VOUCHERS_OF = (
    select(*_VOUCHER_COLUMNS)
    .where(CallVoucher.device_id == bindparam("device_id"))
    .order_by(CallVoucher.created_ms.desc())
)
_VOUCHERS_BY_ID = select(*_VOUCHER_COLUMNS).where(CallVoucher.id.in_(bindparam("ids", expanding=True)))
_RELEASE = (
    update(CallVoucher)
    .where(
        CallVoucher.id == bindparam("voucher_id"),
        CallVoucher.released_ms.is_(None),
        CallVoucher.expires_ms > bindparam("now_ms"),
    )
    .values(released_ms=bindparam("released_ms"), idempotency_key=bindparam("idem"))
)
_ADD_VOUCHER = insert(CallVoucher)
_END_CALL = delete(CallVoucher).where(CallVoucher.call_id == bindparam("call_id"))


class ApiStore:
    """`DeviceDirectory` for the device API server, plus what the CLI (codes) and the call hooks (vouchers) need."""

    def __init__(
        self,
        store: Store,
        master_key: bytes,
        params: DeviceParams,
        *,
        audit: AuditSink,
        clock_s: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.params = params
        self._master = master_key
        self.keys = VoucherKeys(master_key)
        self._audit_sink = audit
        self.observers: list[Observer] = []
        self.clock_s = clock_s
        pg = store.engine.dialect.name == "postgresql"
        self._lanes = _Lanes(store.engine, PG_LANES if pg else 0)
        upsert: Any = postgresql.insert if pg else sqlite.insert
        stmt = upsert(ApiNonce).values(key_id=bindparam("key_id"), nonce=bindparam("nonce"),
                                       expires=bindparam("expires"))  # fmt: skip
        self._nonce_insert = stmt.on_conflict_do_update(
            index_elements=[ApiNonce.key_id, ApiNonce.nonce],
            set_={"expires": stmt.excluded.expires},
            where=ApiNonce.expires < bindparam("now_s"),
        )

    def __repr__(self) -> str:
        return "ApiStore(<master key hidden>)"

    async def close(self) -> None:
        """Return the connections it keeps to the store's pool (before `Store.close()`; that closes them too)."""
        await self._lanes.close()

    # -- DeviceDirectory ---------------------------------------------------------------------------------------
    async def by_key_id(self, key_id: str) -> DeviceView | None:
        """Read on every request (no cache): a suspension, revocation or rotation holds from the next request."""
        async with self._lanes.connection() as c:
            row = (await c.execute(_DEVICE_BY_KEY_ID, {"key_id": key_id})).first()
        if row is None:
            return None
        return DeviceView(int(row.id), str(row.key_id), str(row.status), bool(row.fork_enabled), self.params)

    def secret_of(self, key_id: str) -> bytes:
        return device_secret(self._master, key_id)

    async def nonce_insert_if_absent(self, key_id: str, nonce: str, expires: int) -> bool:
        """One statement: insert, or take over a row whose time has passed (a purge that has not run yet)."""
        values = {"key_id": key_id, "nonce": nonce, "expires": expires, "now_s": int(self.clock_s())}
        async with self._lanes.connection() as c:
            result = await c.execute(self._nonce_insert, values)
        return _rowcount(result) == 1

    async def redeem_code(self, code_hash: str, now_ms: int) -> EnrollResult | None:
        enrollable = exists().where(
            Device.id == ActivationCode.device_id,
            Device.key_id == ActivationCode.key_id,
            Device.status.in_(ENROLLABLE),
        )
        stmt = (
            update(ActivationCode)
            .where(
                ActivationCode.code_hash == code_hash,
                ActivationCode.used_ms.is_(None),
                ActivationCode.expires_ms > now_ms,
                enrollable,
            )
            .values(used_ms=now_ms)
            .execution_options(synchronize_session=False)
        )
        async with self.store.transaction() as s:
            if _rowcount(await s.execute(stmt)) != 1:
                return None
            q = select(Device.id, Device.key_id).join(ActivationCode, ActivationCode.device_id == Device.id)
            row = (await s.execute(q.where(ActivationCode.code_hash == code_hash))).one()
        key_id = str(row.key_id)
        return EnrollResult(int(row.id), key_id, self.secret_of(key_id), self.params)

    async def set_fork(self, device_id: int, enabled: bool, actor: str) -> None:
        """The device's fork toggle and its audit event (`device.fork`, with `actor`), in one transaction; the
        audit row is what `fork_set_by` reads back."""
        async with self.store.transaction() as s:
            device = await s.get(Device, device_id, with_for_update=True)
            if device is None:
                raise StoreError(f"no device with id {device_id}")
            device.fork_enabled = enabled
            device.updated_at = utcnow()
            fields = audit_fields("device.fork", "ok", actor, device_id=device_id, detail={"fork": _on(enabled)})
            s.add(AuditEvent(**fields))

    async def claim(self, device_id: int, presented: str, now_ms: int, idempotency_key: str | None) -> ClaimResult:
        """One connection: the device's vouchers (one read), the match in memory, then one conditional UPDATE per
        live unreleased match (newest first) until one releases; only if none did, a fresh read of the live matches
        says repeat (same Idempotency-Key) or already claimed."""
        async with self._lanes.connection() as c:
            rows = list(await c.execute(_VOUCHERS_OF, {"device_id": device_id}))
            matching = [v for v in rows if self._matches(v, device_id, presented)]
            live = [v for v in matching if v.expires_ms > now_ms]
            if not live:
                others_live = any(v.expires_ms > now_ms for v in rows)
                reason = "expired" if matching else "wrong_number" if others_live else "no_call"
                return ClaimResult(ClaimOutcome.NOT_FOUND, reason)
            tried = False
            for v in live:  # newest first
                if v.released_ms is None:
                    tried = True
                    if await _release(c, v.id, now_ms, idempotency_key):
                        return self._answer(v, ClaimOutcome.RELEASED, "")
            if tried:  # another request (any node) released it between the read and the UPDATE: read it again
                by_id = {r.id: r for r in await c.execute(_VOUCHERS_BY_ID, {"ids": [v.id for v in live]})}
                live = [by_id[v.id] for v in live if v.id in by_id]
        # every live voucher of that number was released before (now, or by a racing request)
        for v in live:
            if idempotency_key and v.idempotency_key == idempotency_key and v.expires_ms > now_ms:
                return self._answer(v, ClaimOutcome.REPEATED, "")
        if not live:  # hung up between the two reads
            return ClaimResult(ClaimOutcome.NOT_FOUND, "ended")
        return ClaimResult(ClaimOutcome.ALREADY_CLAIMED, "released_before", live[0].call_id)

    def audit(self, event: ApiEvent) -> None:
        fields = audit_fields(
            event.action,
            event.result,
            ACTOR,
            device_id=event.device_id,
            call_id=event.call_id,
            source=event.source,
            detail=dict(event.detail) or None,
        )
        self._audit_sink(fields)
        for observer in self.observers:
            try:
                observer(event)
            except Exception as exc:  # noqa: BLE001 - metrics and AMI never break an answer
                log.warning("device api: event observer failed (%s)", type(exc).__name__)

    # -- vouchers (the call hooks) -----------------------------------------------------------------------------
    async def add_voucher(
        self,
        call_key_id: str,
        call_id: str,
        device_id: int,
        direction: str,
        presentation: Presentation,
        call_key: bytes,
        now_ms: int,
        ttl_s: int,
    ) -> None:
        """Keep `call_key` sealed for release to `device_id` from `now_ms` for `ttl_s` (or until `end_call`)."""
        row = RowIdentity(call_key_id, call_id, device_id, direction, now_ms)
        values = {
            "id": call_key_id, "call_id": call_id, "device_id": device_id, "direction": direction,
            "literal_prefix": presentation.literal_prefix, "significant_len": presentation.significant_len,
            "match_tag": presentation.tag, "sealed": self.keys.seal(call_key, row), "created_ms": now_ms,
            "expires_ms": now_ms + ttl_s * 1000, "released_ms": None, "idempotency_key": None,
        }  # fmt: skip
        async with self._lanes.connection() as c:
            await c.execute(_ADD_VOUCHER, values)

    async def end_call(self, call_id: str) -> int:
        """The call hung up: its vouchers can no longer be claimed, and their sealed copies are deleted."""
        async with self._lanes.connection() as c:
            return _rowcount(await c.execute(_END_CALL, {"call_id": call_id}))

    async def purge(self, now_ms: int) -> dict[str, int]:
        """Delete expired vouchers (sealed copies), nonces past their time, and codes that can no longer be used."""
        async with self._lanes.connection() as c:
            vouchers = await c.execute(delete(CallVoucher).where(CallVoucher.expires_ms <= now_ms))
            nonces = await c.execute(delete(ApiNonce).where(ApiNonce.expires < now_ms // 1000))
            codes = await c.execute(delete(ActivationCode).where(ActivationCode.expires_ms <= now_ms))
        return {"vouchers": _rowcount(vouchers), "nonces": _rowcount(nonces), "codes": _rowcount(codes)}

    # -- helpers -----------------------------------------------------------------------------------------------
    def _matches(self, v: Row[*tuple[Any, ...]], device_id: int, presented: str) -> bool:
        kept = Presentation(v.literal_prefix, v.significant_len, v.match_tag)
        return self.keys.matches(device_id, presented, kept, self.params.trunk)

    def _answer(self, v: Row[*tuple[Any, ...]], outcome: ClaimOutcome, reason: str) -> ClaimResult:
        row = RowIdentity(v.id, v.call_id, v.device_id, v.direction, v.created_ms)
        try:
            key = self.keys.open(v.sealed, row)
        except VoucherError:
            log.error("device api: voucher %s of call %s does not open (master key changed?)", v.id, v.call_id)
            return ClaimResult(ClaimOutcome.NOT_FOUND, "unsealable", v.call_id)
        return ClaimResult(outcome, reason, v.call_id, v.id, key)


class _Lanes:
    """A few connections kept checked out of the engine's pool, in autocommit, each used by one task at a time
    (SQLAlchemy connections are not shared between tasks). A connection that failed or was cancelled mid-statement
    is dropped (its state is unknown) and the next use opens another; the engine's dispose closes them all. With
    `size` 0 every use checks a connection out of the pool and commits when done."""

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self._engine = engine
        self._keep = size > 0
        self._free: asyncio.LifoQueue[AsyncConnection | None] = asyncio.LifoQueue()
        for _ in range(size):
            self._free.put_nowait(None)  # opened on first use
        self._open: set[AsyncConnection] = set()
        event.listen(engine.sync_engine, "engine_disposed", self._disposed)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        if not self._keep:
            async with self._engine.begin() as conn:
                yield conn
            return
        c = await self._free.get()
        try:
            if c is None or c.closed or c.invalidated:
                c = await self._engine.connect()
                self._open.add(c)
                await c.execution_options(isolation_level="AUTOCOMMIT")
            yield c
            await c.commit()  # ends SQLAlchemy's transaction; in autocommit nothing reaches the database
        except BaseException:
            if c is not None:
                self._drop(c)
            c = None
            raise
        finally:
            self._free.put_nowait(c)

    def _drop(self, c: AsyncConnection) -> None:
        self._open.discard(c)
        task = asyncio.get_running_loop().create_task(c.invalidate())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a dead connection may fail to close

    async def close(self) -> None:
        while self._open:
            await self._open.pop().close()

    def _disposed(self, _engine: Engine) -> None:
        """`Store.close()` without `ApiStore.close()` first: close the kept connections (inside the dispose's
        greenlet, so the driver's close can be awaited); nothing is left open (an aiosqlite thread would keep the
        process from exiting)."""
        while self._open:
            self._open.pop().sync_connection.invalidate()  # type: ignore[union-attr]


# -- activation codes (the CLI: `securelink device add|rotate --activation`) -------------------------------------
async def add_code(store: Store, device_id: int, key_id: str, code_hash: str, now_ms: int, ttl_s: int,
                   actor: str) -> None:  # fmt: skip
    """Store a new code's hash (valid `ttl_s` from `now_ms`), audited `device.activation`, one transaction."""
    async with store.transaction() as s:
        s.add(ActivationCode(code_hash=code_hash, device_id=device_id, key_id=key_id, created_ms=now_ms,
                             expires_ms=now_ms + ttl_s * 1000))  # fmt: skip
        fields = audit_fields("device.activation", "ok", actor, device_id=device_id, detail={"ttl_s": ttl_s})
        s.add(AuditEvent(**fields))


async def expire_codes(store: Store, device_id: int, now_ms: int) -> int:
    """Every unused, unexpired code of the device stops working now (a new code or a re-enrollment replaces them)."""
    stmt = (
        update(ActivationCode)
        .where(ActivationCode.device_id == device_id, ActivationCode.used_ms.is_(None),
               ActivationCode.expires_ms > now_ms)
        .values(expires_ms=now_ms)
    )  # fmt: skip
    async with store.transaction() as s:
        return _rowcount(await s.execute(stmt))


async def fork_set_by(store: Store, device_id: int) -> tuple[str, datetime] | None:
    """Who set the device's fork toggle last (the actor of its latest `device.fork` audit event: `cli`, `device`)
    and when; None when it was never changed."""
    q = (
        select(AuditEvent.actor, AuditEvent.created_at)
        .where(AuditEvent.device_id == device_id, AuditEvent.action == "device.fork")
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    async with store.sessions() as s:
        row = (await s.execute(q)).first()
    return None if row is None else (str(row.actor or "-"), row.created_at)


async def _release(c: AsyncConnection, voucher_id: str, now_ms: int, idempotency_key: str | None) -> bool:
    """The one statement that decides a release: not yet released, not expired."""
    values = {"voucher_id": voucher_id, "now_ms": now_ms, "released_ms": now_ms, "idem": idempotency_key}
    return _rowcount(await c.execute(_RELEASE, values)) == 1


def _on(enabled: bool) -> str:
    return "on" if enabled else "off"


def _rowcount(result: Any) -> int:
    return int(result.rowcount)
