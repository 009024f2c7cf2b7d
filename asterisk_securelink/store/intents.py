"""Intents in the shared store (CALLING.md, "Intent", "The racing spoofer", "Several nodes"): every node sees the same
intents and noise records, and each decision that must hold across nodes is taken in the database.

- **The spend** is one conditional UPDATE: the newest live intent (unexpired, unspent, uncancelled, its device still
  spendable) of the caller's devices for exactly the dialled access number is marked spent by the channel. Its own
  WHERE decides, so of two nodes racing one intent exactly one gets the row back (PostgreSQL re-checks the condition
  on the row it waited for; SQLite has one writer). The same channel asking again gets the same intent (a second
  Stasis entry is not a second use).
- **A miss** writes the noise records and applies cancel on conflict in the same transaction as a second try of the
  spend, with the devices' rows locked (PostgreSQL: `FOR NO KEY UPDATE`; SQLite: `BEGIN IMMEDIATE`). `create` takes
  the same lock, so an intent is created either before that lookup (which then finds or cancels it) or after the
  noise record (which then refuses it): never in between.
- **Create** is one transaction under that lock: a repeat (same device, same Idempotency-Key, intent still live), the
  quiet window, the rate limit (one read), then the device's live intent cancelled and the new one inserted. So two
  nodes never leave a device with two live intents or grant an eleventh intent in a minute.

On PostgreSQL the spend first runs alone on a kept connection in autocommit (`store.lanes`): an admitted call costs
one round trip; only a miss opens the locked transaction. Statements are SQLAlchemy Core, built once. Times are unix
ms passed in by the caller (no clock here). Nothing stored is secret: a call by intent carries no key.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Integer, String, bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import BindParameter

from asterisk_securelink.lifecycle import SPENDABLE
from asterisk_securelink.store import statements
from asterisk_securelink.store.intent_models import CallIntent, IntentNoise
from asterisk_securelink.store.lanes import Lanes, rowcount
from asterisk_securelink.store.locks import devices_locked
from asterisk_securelink.store.models import Device
from asterisk_securelink.store.store import Store, StoreError

RATE_WINDOW_MS = 60_000  # "at most N intents per device per minute", a rolling minute
MAX_IDEMPOTENCY_KEY = 128  # the column's length


class CreateOutcome(StrEnum):
    CREATED = "created"
    REPEATED = "repeated"  # the same Idempotency-Key while the intent lives: the same intent, not counted again
    RATE_LIMITED = "rate_limited"  # 429, Retry-After: retry_after_s
    USE_DTMF = "use_dtmf"  # 409: a noise record of this device within intent_quiet


@dataclass(frozen=True)
class Intent:
    intent_id: str
    call_id: str  # the call id the phone sees
    device_id: int
    access_number: str
    destination: str | None
    created_ms: int
    expires_ms: int


@dataclass(frozen=True)
class CreateResult:
    outcome: CreateOutcome
    intent: Intent | None = None  # created or repeated
    retry_after_s: int = 0  # rate_limited
    replaced: tuple[str, ...] = ()  # created: the intent ids it replaced (they stop matching)
    noise_ms: int | None = None  # use_dtmf: the latest noise record (for the audit)


@dataclass(frozen=True)
class Conflict:
    """An intent a missed call cancelled (cancel on conflict): live for another access number (`spent_channel`
    None), or already spent, within its ttl, by `spent_channel` (the call to hang up; `SecureLinkIntentRaced`)."""

    intent_id: str
    call_id: str
    device_id: int
    access_number: str
    spent_channel: str | None

    @property
    def raced(self) -> bool:
        return self.spent_channel is not None


@dataclass(frozen=True)
class AdmitResult:
    intent: Intent | None  # admitted: spent by this channel (or by it before)
    conflicts: tuple[Conflict, ...] = ()  # a miss: the intents it cancelled
    noise: tuple[int, ...] = ()  # a miss: the devices a noise record was written for

    @property
    def admitted(self) -> bool:
        return self.intent is not None

    @property
    def raced(self) -> tuple[Conflict, ...]:
        return tuple(c for c in self.conflicts if c.raced)


# -- the statements, built once ------------------------------------------------------------------------------------
CI = CallIntent
NR = IntentNoise
_IDS: BindParameter[list[int]] = bindparam("ids", expanding=True)
_NOW = bindparam("now_ms", type_=BigInteger())
_CHANNEL = bindparam("b_channel", type_=String())
_DEVICE: BindParameter[int] = bindparam("b_device", type_=Integer())
_COLUMNS = (CI.id, CI.call_id, CI.device_id, CI.access_number, CI.destination, CI.created_ms, CI.expires_ms)

_P = aliased(CallIntent, name="pick")  # an alias, so the pick is not correlated to the UPDATE's own row
_PICK = (
    select(_P.id)
    .where(
        _P.device_id.in_(_IDS),
        _P.access_number == bindparam("access"),
        _P.expires_ms > _NOW,
        _P.cancelled_ms.is_(None),
        or_(_P.spent_ms.is_(None), _P.spent_channel == _CHANNEL),
        exists().where(Device.id == _P.device_id, Device.status.in_(SPENDABLE)),
    )
    .order_by(_P.created_ms.desc())
    .limit(1)
    .scalar_subquery()
)
# the spend: the WHERE repeats the pick's conditions on the row itself, so a node that waited for the row (another
# node spent it meanwhile) re-checks them and updates nothing
_SPEND = (
    update(CI)
    .where(
        CI.id == _PICK,
        CI.expires_ms > _NOW,
        CI.cancelled_ms.is_(None),
        or_(CI.spent_ms.is_(None), CI.spent_channel == _CHANNEL),
    )
    .values(spent_ms=func.coalesce(CI.spent_ms, _NOW), spent_channel=_CHANNEL)
    .returning(*_COLUMNS)
)
_NOISE = insert(NR).from_select(
    ["device_id", "channel", "at_ms"], select(Device.id, _CHANNEL, _NOW).where(Device.id.in_(_IDS))
)
_CONFLICT = (
    update(CI)
    .where(
        CI.device_id.in_(_IDS),
        CI.cancelled_ms.is_(None),
        CI.expires_ms > _NOW,
        or_(CI.spent_ms.is_not(None), CI.access_number != bindparam("access")),
        or_(CI.spent_channel.is_(None), CI.spent_channel != _CHANNEL),
    )
    .values(cancelled_ms=_NOW)
    .returning(CI.id, CI.call_id, CI.device_id, CI.access_number, CI.spent_channel)
)


def _live(table: Any) -> tuple[Any, ...]:
    return (table.expires_ms > _NOW, table.spent_ms.is_(None), table.cancelled_ms.is_(None))


_STATE = select(
    select(CI.id)
    .where(CI.device_id == _DEVICE, CI.idempotency_key == bindparam("idem"), *_live(CI))
    .order_by(CI.created_ms.desc())
    .limit(1)
    .scalar_subquery()
    .label("repeat"),
    select(func.max(NR.at_ms))
    .where(NR.device_id == _DEVICE, NR.at_ms > bindparam("quiet_since", type_=BigInteger()))
    .scalar_subquery()
    .label("noise"),
    # the nth newest intent of the window: while it is in the window, the device is at its limit
    select(CI.created_ms)
    .where(CI.device_id == _DEVICE, CI.created_ms > bindparam("rate_since", type_=BigInteger()))
    .order_by(CI.created_ms.desc())
    .limit(1)
    .offset(bindparam("nth", type_=Integer()))
    .scalar_subquery()
    .label("nth"),
)
_BY_ID = select(*_COLUMNS).where(CI.id == bindparam("intent_id"))
_REPLACE = update(CI).where(CI.device_id == _DEVICE, *_live(CI)).values(cancelled_ms=_NOW).returning(CI.id)
_ADD = insert(CI)
_CLEAR_NOISE = delete(NR).where(NR.device_id == _DEVICE, NR.channel == _CHANNEL)
_PURGE_INTENTS = delete(CI).where(CI.expires_ms <= _NOW, CI.created_ms <= bindparam("rate_since", type_=BigInteger()))
_PURGE_NOISE = delete(NR).where(NR.at_ms <= bindparam("quiet_since", type_=BigInteger()))


def _intent(row: Any) -> Intent:
    return Intent(str(row.id), str(row.call_id), int(row.device_id), str(row.access_number), row.destination,
                  int(row.created_ms), int(row.expires_ms))  # fmt: skip


def _retry_after_s(nth_created_ms: int, now_ms: int) -> int:
    """Whole seconds until the nth newest intent leaves the rolling minute (at least 1)."""
    return max(1, -(-(nth_created_ms + RATE_WINDOW_MS - now_ms) // 1000))


class IntentStore:
    """The intents' store half: `create` (the device API's `POST /v1/calls/intent`), `admit` and `clear_noise` (the
    access entry), `purge` (housekeeping). One per process, on the store and the process's `Lanes`."""

    def __init__(self, store: Store, lanes: Lanes) -> None:
        self.store = store
        self._lanes = lanes
        self._pg = store.engine.dialect.name == "postgresql"

    def _locked(self, device_ids: Sequence[int]) -> AbstractAsyncContextManager[tuple[AsyncConnection, list[int]]]:
        """The devices' lock (`store.locks.devices_locked`)."""
        return devices_locked(self.store.engine, device_ids)

    # -- the device API ------------------------------------------------------------------------------------------
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
    ) -> CreateResult:
        """A new intent for `device_id`, replacing its live one; or the same intent again (the same non-empty
        `idempotency_key` while it lives); or `use_dtmf` (a noise record within `quiet_s`); or `rate_limited` (at
        most `per_minute` intents a rolling minute; refusals and repeats are not counted). Checks nothing of the
        device's status, the access number or the destination: the caller has. `StoreError` for no such device."""
        if idempotency_key is not None and len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise ValueError(f"an Idempotency-Key is at most {MAX_IDEMPOTENCY_KEY} characters")
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        idem = idempotency_key or None
        async with self._locked([device_id]) as (c, found):
            if not found:
                raise StoreError(f"no device with id {device_id}")
            values = {
                "b_device": device_id, "idem": idem, "now_ms": now_ms, "quiet_since": now_ms - quiet_s * 1000,
                "rate_since": now_ms - RATE_WINDOW_MS, "nth": per_minute - 1,
            }  # fmt: skip
            state = (await c.execute(_STATE, values)).one()
            if idem is not None and state.repeat is not None:
                row = (await c.execute(_BY_ID, {"intent_id": state.repeat})).one()
                return CreateResult(CreateOutcome.REPEATED, _intent(row))
            if state.noise is not None:
                return CreateResult(CreateOutcome.USE_DTMF, noise_ms=int(state.noise))
            if state.nth is not None:
                return CreateResult(CreateOutcome.RATE_LIMITED, retry_after_s=_retry_after_s(int(state.nth), now_ms))
            replaced = tuple(str(i) for i in (await c.execute(_REPLACE, values)).scalars())
            intent = Intent(str(uuid.uuid4()), str(uuid.uuid4()), device_id, access_number, destination, now_ms,
                            now_ms + ttl_s * 1000)  # fmt: skip
            row_values = {
                "id": intent.intent_id, "call_id": intent.call_id, "device_id": device_id,
                "access_number": access_number, "destination": destination, "created_ms": now_ms,
                "expires_ms": intent.expires_ms, "spent_ms": None, "spent_channel": None, "cancelled_ms": None,
                "idempotency_key": idem,
            }  # fmt: skip
            await c.execute(_ADD, row_values)
        return CreateResult(CreateOutcome.CREATED, intent, replaced=replaced)

    # -- the access entry ----------------------------------------------------------------------------------------
    async def admit(self, device_ids: Sequence[int], access_number: str, channel: str, now_ms: int) -> AdmitResult:
        """Spend the live intent of one of `device_ids` (the devices whose registered number the caller number is)
        for exactly `access_number`, by `channel`. On a miss, in the same transaction: a noise record for each of
        those devices, and cancel on conflict (their live intents for another access number, and those already
        spent by another channel within their ttl: `AdmitResult.raced` names the channel to hang up)."""
        ids = sorted(set(device_ids))
        if not ids:
            return AdmitResult(None)
        values = {"ids": ids, "access": access_number, "b_channel": channel, "now_ms": now_ms}
        if self._pg:  # the hit alone, one round trip in autocommit; the UPDATE's own WHERE decides
            async with self._lanes.connection() as c:
                row = (await c.execute(_SPEND, values)).first()
            if row is not None:
                return AdmitResult(_intent(row))
        async with self._locked(ids) as (c, found):
            row = (await c.execute(_SPEND, values)).first()  # again under the lock (an intent created just now)
            if row is not None:
                return AdmitResult(_intent(row))
            if not found:
                return AdmitResult(None)
            await c.execute(_NOISE, {**values, "ids": found})
            conflicts = tuple(
                Conflict(str(r.id), str(r.call_id), int(r.device_id), str(r.access_number), r.spent_channel)
                for r in await c.execute(_CONFLICT, {**values, "ids": found})
            )
        return AdmitResult(None, conflicts, tuple(found))

    async def clear_noise(self, device_id: int, channel: str) -> int:
        """The call on `channel` was admitted by DTMF: the noise record it wrote for `device_id` goes."""
        return await statements.write(self._lanes, _CLEAR_NOISE, {"b_device": device_id, "b_channel": channel})

    # -- housekeeping --------------------------------------------------------------------------------------------
    async def purge(self, now_ms: int, quiet_s: int) -> dict[str, int]:
        """Delete intents that expired and left the rate limit's minute, and noise records older than `quiet_s` (the
        longest quiet window in use)."""
        async with self._lanes.connection() as c:
            intents = await c.execute(_PURGE_INTENTS, {"now_ms": now_ms, "rate_since": now_ms - RATE_WINDOW_MS})
            noise = await c.execute(_PURGE_NOISE, {"quiet_since": now_ms - quiet_s * 1000})
        return {"intents": rowcount(intents), "noise": rowcount(noise)}
