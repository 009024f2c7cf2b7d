"""The device API's `DeviceDirectory` over the store (`deviceapi.ports`), shared by every node on the database.

Each decision that must hold across nodes is one atomic statement: redeeming a code is one conditional UPDATE
(unused, unexpired, the device still has the code's key_id and may enroll); a nonce is one INSERT .. ON CONFLICT
that only replaces an expired row; a voucher is released by one conditional UPDATE (not yet released, not expired).
Device secrets are derived, never stored; call keys are stored sealed (`callkeys.vouchers`); codes as SHA-256.
Intents are the shared `store.intents.IntentStore`'s (`create_intent` delegates to it).

The calls a claim makes (`by_key_id`, `nonce_insert_if_absent`, then `claim`, which is the per-call keys' own
`callkeys.store.VoucherStore`) are SQLAlchemy Core statements (no ORM session) run by `store.statements`: on SQLite
on the driver's thread, its writes in the group commit of the hot writes; on PostgreSQL on the process's
`store.lanes.Lanes` (kept connections in autocommit). Each call is one statement, or reads followed
by the one conditional statement that decides, so none needs a wider transaction. Nothing is cached: a suspended,
revoked or rotated device, a used nonce, a released voucher are seen by the next request on any node. Measured in
`docs/benchmarks.md`, "Device API claims under load".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, delete, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from asterisk_securelink.core.provisioning import DeviceParams
from asterisk_securelink.core.slk1 import device_secret
from asterisk_securelink.deviceapi.ports import (
    ApiEvent,
    ClaimResult,
    DeviceView,
    DirectoryUnavailable,
    EnrollResult,
    IntentOutcome,
    IntentResult,
    IntentSettings,
    Offer,
)
from asterisk_securelink.lifecycle import SPENDABLE
from asterisk_securelink.store import statements
from asterisk_securelink.store.api_models import ActivationCode, ApiNonce
from asterisk_securelink.store.enroll_limits import EnrollLimits
from asterisk_securelink.store.intents import CreateOutcome, CreateResult
from asterisk_securelink.store.lanes import Lanes, lanes_for, rowcount
from asterisk_securelink.store.models import AuditEvent, Device, KeyIdRecord, utcnow
from asterisk_securelink.store.store import Store, StoreError, audit_fields

log = logging.getLogger(__name__)

ENROLLABLE = SPENDABLE  # provisioned, registered: a suspended or revoked device cannot enroll
# L1 (issue 22): what one node deletes or takes over "because its time has passed" waits this much longer, so a
# node whose clock runs ahead of the others (by less than this) never frees a nonce another node would still
# accept a replay of, nor deletes a voucher or a code another node would still honour (`docs/security.md`, "L1")
CLOCK_MARGIN_S = 300


class Vouchers(Protocol):
    """The per-call keys' store half (`callkeys.store.VoucherStore`): the release a claim asks for, and the purge."""

    async def claim(self, device_id: int, presented: str, now_ms: int, idempotency_key: str | None) -> ClaimResult: ...

    async def claim_by_call_id(
        self, device_id: int, call_id: str, now_ms: int, idempotency_key: str | None
    ) -> ClaimResult: ...

    async def purge(self, now_ms: int) -> int: ...


class Intents(Protocol):
    """The intents' store half (`store.intents.IntentStore`): the create the intent route asks for."""

    async def create(
        self,
        device_id: int,
        access_number: str,
        destination: str | None,
        now_ms: int,
        ttl_s: int,
        idempotency_key: str | None,
        *,
        quiet_s: int,
        per_minute: int = 10,
    ) -> CreateResult: ...


_OUTCOMES = {
    CreateOutcome.CREATED: IntentOutcome.CREATED,
    CreateOutcome.REPEATED: IntentOutcome.REPEATED,
    CreateOutcome.RATE_LIMITED: IntentOutcome.RATE_LIMITED,
    CreateOutcome.USE_DTMF: IntentOutcome.USE_DTMF,
}

EventSink = Callable[[ApiEvent], None]  # `Notifier.api_event`: the audit row, metrics, AMI; never blocks

# the hot statements, built once (bound parameters; SQLAlchemy caches their compiled form)
_DEVICE_BY_KEY_ID = select(Device.id, Device.key_id, Device.status, Device.fork_enabled, Device.home).where(
    Device.key_id == bindparam("key_id")
)
_RETIRED = select(KeyIdRecord.key_id).where(
    KeyIdRecord.key_id == bindparam("key_id"), KeyIdRecord.retired_at.is_not(None)
)


class ApiStore:
    """`DeviceDirectory` for the device API server, plus what the CLI (codes) and the call hooks (vouchers) need."""

    def __init__(
        self,
        store: Store,
        master_key: bytes,
        params: DeviceParams | Offer,
        *,
        notify: EventSink,
        vouchers: Vouchers,
        lanes: Lanes | None = None,
        clock_s: Callable[[], float] = time.time,
        intents: Intents | None = None,
        intent_settings: IntentSettings | None = None,
    ) -> None:
        """`params`: what every phone is provisioned with (an `Offer` adds SLK1 1.2's for phones that speak it).
        `intents` with `intent_settings` (offered): the intent route; without them it answers 409 `use_dtmf`."""
        self.store = store
        self.offer = params if isinstance(params, Offer) else Offer(params)
        self.intents = intent_settings if intents is not None and intent_settings is not None else IntentSettings()
        self._intents = intents
        self._master = master_key
        self._notify = notify
        self.clock_s = clock_s
        self._lanes = lanes if lanes is not None else lanes_for(store.engine)
        self.vouchers = vouchers
        self.enroll_limits = EnrollLimits(
            self._lanes, store.engine.dialect.name, clock_ms=lambda: int(clock_s() * 1000)
        )
        upsert: Any = postgresql.insert if store.engine.dialect.name == "postgresql" else sqlite.insert
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
        """Return the kept connections to the store's pool (before `Store.close()`; that closes them too)."""
        await self._lanes.close()

    # -- DeviceDirectory ---------------------------------------------------------------------------------------
    async def by_key_id(self, key_id: str) -> DeviceView | None:
        """Read on every request (no cache): a suspension, revocation or rotation holds from the next request."""
        row = await statements.first(self._lanes, _DEVICE_BY_KEY_ID, {"key_id": key_id})
        if row is None:
            return None
        return DeviceView(int(row.id), str(row.key_id), str(row.status), bool(row.fork_enabled), row.home)

    async def retired(self, key_id: str) -> bool:
        """The key_id's tombstone says a rotation retired it (`store._rotate_in`); read on every request too."""
        return await statements.first(self._lanes, _RETIRED, {"key_id": key_id}) is not None

    def secret_of(self, key_id: str) -> bytes:
        return device_secret(self._master, key_id)

    async def nonce_insert_if_absent(self, key_id: str, nonce: str, expires: int) -> bool:
        """One statement: insert, or take over a row whose time passed more than CLOCK_MARGIN_S ago (a purge that
        has not run yet)."""
        now_s = int(self.clock_s()) - CLOCK_MARGIN_S  # a row is taken over only that long after its time
        values = {"key_id": key_id, "nonce": nonce, "expires": expires, "now_s": now_s}
        return await statements.write(self._lanes, self._nonce_insert, values) == 1

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
            if rowcount(await s.execute(stmt)) != 1:
                return None
            q = select(Device.id, Device.key_id).join(ActivationCode, ActivationCode.device_id == Device.id)
            row = (await s.execute(q.where(ActivationCode.code_hash == code_hash))).one()
        key_id = str(row.key_id)
        return EnrollResult(int(row.id), key_id, self.secret_of(key_id))

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
        return await self.vouchers.claim(device_id, presented, now_ms, idempotency_key)

    async def claim_by_call_id(
        self, device_id: int, call_id: str, now_ms: int, idempotency_key: str | None
    ) -> ClaimResult:
        return await self.vouchers.claim_by_call_id(device_id, call_id, now_ms, idempotency_key)

    async def create_intent(
        self, device_id: int, access_number: str, destination: str | None, now_ms: int, idempotency_key: str | None
    ) -> IntentResult:
        """`IntentStore.create` with `[calling]`'s ttl, quiet window and rate; a store that fails (or no intents
        store) is `DirectoryUnavailable` (503)."""
        if self._intents is None:
            raise DirectoryUnavailable("no intents store")
        s = self.intents
        try:
            r = await self._intents.create(device_id, access_number, destination, now_ms, s.ttl_s, idempotency_key,
                                           quiet_s=s.quiet_s, per_minute=s.per_minute)  # fmt: skip
        except (StoreError, SQLAlchemyError, OSError) as exc:
            raise DirectoryUnavailable(f"the store failed ({type(exc).__name__})") from None
        i = r.intent
        if i is None:
            return IntentResult(_OUTCOMES[r.outcome], retry_after_s=r.retry_after_s)
        return IntentResult(_OUTCOMES[r.outcome], i.intent_id, i.call_id, i.access_number, i.expires_ms)

    def audit(self, event: ApiEvent) -> None:
        """Told to the notifier: the audit row, and for claims /metrics and AMI; it never raises into an answer."""
        try:
            self._notify(event)
        except Exception as exc:  # noqa: BLE001 - an audit queue or metrics failure never breaks an answer
            log.warning("device api: event not recorded (%s)", type(exc).__name__)

    async def purge(self, now_ms: int) -> dict[str, int]:
        """Delete expired vouchers (sealed copies), nonces past their time, codes that can no longer be used and
        networks whose enrollment allowance is whole again: each CLOCK_MARGIN_S after its time by this node's
        clock (`now_ms`), so a node whose clock runs ahead deletes nothing another node still relies on."""
        before_ms = now_ms - CLOCK_MARGIN_S * 1000
        vouchers = await self.vouchers.purge(before_ms)
        async with self._lanes.connection() as c:
            nonces = await c.execute(delete(ApiNonce).where(ApiNonce.expires < before_ms // 1000))
            codes = await c.execute(delete(ActivationCode).where(ActivationCode.expires_ms <= before_ms))
        limits = await self.enroll_limits.purge(before_ms)
        return {"vouchers": vouchers, "nonces": rowcount(nonces), "codes": rowcount(codes), "enroll_limits": limits}


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
        return rowcount(await s.execute(stmt))


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


def _on(enabled: bool) -> str:
    return "on" if enabled else "off"
