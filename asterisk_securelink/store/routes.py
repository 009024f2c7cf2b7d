"""The routing guard's counters in the shared store (CALLING.md, "Where an admitted call goes", "Several nodes"):
per device at most `max_concurrent` routed calls at once and `max_per_day` in a rolling 24 h, held across nodes.

- **A lease** is a routed call in progress (call-through or callback), held by the node that placed it. The node
  renews its leases every 30 s (`renew`); a lease not renewed for `LEASE_STALE_MS` no longer counts, so a crashed node
  does not hold a device's slots, and a node that starts again deletes what it held (`reclaim`).
- **A spend** is a routed call counted against the rolling day; spends older than a day are purged.
- **`reserve`** decides in one transaction holding the device's lock (`store.locks`): it counts the device's live
  leases and spends of the day and, under both limits, inserts the lease and the spend. Two nodes reserving for one
  device decide one after the other, so together they never exceed either limit. The same call id reserving again
  is the same reservation (nothing added).

Times are unix ms passed in by the caller (no clock here). Nothing stored is secret. Statements are SQLAlchemy Core,
built once.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import BindParameter

from asterisk_securelink.store.driver import NOT_RUN, immediate, positional, run_fast
from asterisk_securelink.store.lanes import rowcount
from asterisk_securelink.store.locks import devices_locked
from asterisk_securelink.store.models import Device
from asterisk_securelink.store.route_models import LEASE_KINDS, CallLease, RouteSpend
from asterisk_securelink.store.store import Store, StoreError

LEASE_STALE_MS = 90_000  # a lease not renewed for this long no longer counts (renewed every 30 s)
RENEW_EVERY_S = 30  # how often a node should call `renew`
DAY_MS = 86_400_000  # the rolling day of `max_per_day`
CONCURRENT_RETRY_S = RENEW_EVERY_S  # Retry-After for a concurrency refusal: a call's end cannot be foreseen
MAX_NODE = 64  # the column's length
MAX_CALL_ID = 128
# A reservation's commit does not wait for the disk (`store.driver.immediate`, `not_durable`): it is on every admitted
# call's path, and a power cut before the next durable commit (the next spend) loses at most the places taken since,
# i.e. calls the cut ended anyway no longer count in their device's rolling day. Other nodes see it at once.
RESERVE_DURABLE = False

Limit = Literal["concurrent", "daily"]


@dataclass(frozen=True)
class Reservation:
    ok: bool
    limit: Limit | None = None  # which limit refused it
    retry_after_s: int = 0  # refused: when trying again may succeed (whole seconds, at least 1)


# -- the statements, built once ------------------------------------------------------------------------------------
L = CallLease
S = RouteSpend
_DEVICE: BindParameter[int] = bindparam("b_device", type_=Integer())
_CALL = bindparam("b_call", type_=String())
_NODE = bindparam("b_node", type_=String())
_NOW = bindparam("now_ms", type_=BigInteger())
_LIVE_SINCE = bindparam("live_since", type_=BigInteger())  # a lease renewed after this is live
_DAY_SINCE = bindparam("day_since", type_=BigInteger())  # a spend after this is in the rolling day

_STATE = select(
    exists().where(L.call_id == _CALL).label("leased"),
    exists().where(S.device_id == _DEVICE, S.call_id == _CALL, S.at_ms > _DAY_SINCE).label("spent"),
    select(func.count()).where(L.device_id == _DEVICE, L.renewed_ms > _LIVE_SINCE).scalar_subquery().label("live"),
    select(func.count()).where(S.device_id == _DEVICE, S.at_ms > _DAY_SINCE).scalar_subquery().label("day"),
    # the spend whose leaving the rolling day frees a place: the max_per_day-th newest
    select(S.at_ms)
    .where(S.device_id == _DEVICE, S.at_ms > _DAY_SINCE)
    .order_by(S.at_ms.desc())
    .limit(1)
    .offset(bindparam("nth", type_=Integer()))
    .scalar_subquery()
    .label("nth"),
)
_FIND_DEVICE = select(Device.id).where(Device.id == _DEVICE)
_ADD_LEASE = insert(L)
_ADD_SPEND = insert(S).values(device_id=_DEVICE, call_id=_CALL, at_ms=_NOW)  # its id: the database's

# PostgreSQL (`_pg_reserve`), two statements instead of five: the device's lock (`store.locks`' lock, for one device)
# with the transaction's `synchronous_commit` off (`driver.not_durable`, as `set_config`), then `_STATE` with the
# lease and the spend taken in the same statement, by `_decide`'s rules as SQL. READ COMMITTED gives the second
# statement a snapshot taken after the lock, so it counts what the device's last holder of the lock committed.
_LOCK_DEVICE = (
    select(Device.id, func.set_config("synchronous_commit", "off", True))
    .where(Device.id == _DEVICE)
    .with_for_update(key_share=True)
)
_ST = _STATE.cte("st")
_TAKES = and_(
    not_(_ST.c.leased),
    _ST.c.live < bindparam("max_concurrent", type_=Integer()),
    or_(_ST.c.spent, _ST.c.day < bindparam("max_per_day", type_=Integer())),
)
_TOOK_LEASE = (
    insert(L)
    .from_select(
        ["call_id", "device_id", "kind", "node", "started_ms", "renewed_ms"],
        select(_CALL, _DEVICE, bindparam("b_kind", type_=String()), _NODE, _NOW, _NOW).where(_TAKES),
    )
    .returning(L.call_id)
    .cte("took_lease")
)
_TOOK_SPEND = (
    insert(S)
    .from_select(["device_id", "call_id", "at_ms"], select(_DEVICE, _CALL, _NOW).where(_TAKES, not_(_ST.c.spent)))
    .returning(S.id)
    .cte("took_spend")
)
_STATE_AND_TAKE = select(_ST).add_cte(_TOOK_LEASE, _TOOK_SPEND)
_RELEASE = delete(L).where(L.call_id == _CALL)
_RENEW = update(L).where(L.node == _NODE).values(renewed_ms=_NOW)
_RECLAIM = delete(L).where(L.node == _NODE)
_LIVE = select(func.count()).where(
    L.device_id == _DEVICE, L.kind == bindparam("b_kind", type_=String()), L.renewed_ms > _LIVE_SINCE
)
_PURGE_SPENDS = delete(S).where(S.at_ms <= _DAY_SINCE)
_PURGE_LEASES = delete(L).where(L.renewed_ms <= _LIVE_SINCE)


def _ceil_s(ms: int) -> int:
    return max(1, -(-ms // 1000))


class _State(NamedTuple):
    """What `_STATE` reads of a device and a call under the device's lock."""

    leased: bool  # the call holds a lease already
    spent: bool  # the call is counted in the rolling day already
    live: int  # the device's live leases
    day: int  # its spends in the rolling day
    nth: int | None  # the max_per_day-th newest of them


def _decide(state: _State, max_concurrent: int, max_per_day: int, now_ms: int) -> Reservation | None:
    """The refusal, or None: take the place (nothing to add when the call holds a lease already)."""
    if state.leased:
        return None
    if state.live >= max_concurrent:
        return Reservation(False, "concurrent", CONCURRENT_RETRY_S)
    if not state.spent and state.day >= max_per_day:
        oldest = int(state.nth) if state.nth is not None and max_per_day > 0 else now_ms
        return Reservation(False, "daily", _ceil_s(oldest + DAY_MS - now_ms))
    return None


def _sqlite_reserve(
    db: sqlite3.Connection, dialect: Dialect, values: dict[str, Any], lease: dict[str, Any], spend: dict[str, Any],
    limits: tuple[int, int, int],
) -> Reservation | None:  # fmt: skip
    """`reserve` as one SQLite transaction on the driver's thread (`store.driver`): `BEGIN IMMEDIATE` is the lock
    (`store.locks`); not durable (`RESERVE_DURABLE`). None: no such device."""
    with immediate(db, durable=RESERVE_DURABLE):
        if positional(_FIND_DEVICE, dialect).execute(db, values).fetchone() is None:
            return None
        state = _State(*positional(_STATE, dialect).execute(db, values).fetchone())
        refused = _decide(state, *limits)
        if refused is None and not state.leased:
            positional(_ADD_LEASE, dialect).execute(db, lease)
            if not state.spent:
                positional(_ADD_SPEND, dialect).execute(db, spend)
    return refused or Reservation(True)


async def _pg_reserve(
    conn: Any, dialect: Dialect, values: dict[str, Any], lease: dict[str, Any], spend: dict[str, Any],
    limits: tuple[int, int, int],
) -> Reservation | None:  # fmt: skip
    """`reserve` as one PostgreSQL transaction on asyncpg (`store.driver`), four round trips (BEGIN, the lock,
    `_STATE_AND_TAKE`, COMMIT): the device's row `FOR NO KEY UPDATE` is the lock (`store.locks`), taken before the
    read; not durable (`RESERVE_DURABLE`). None: no such device."""
    async with conn.transaction():
        if await positional(_LOCK_DEVICE, dialect).fetchrow(conn, values) is None:
            return None
        limit_values = {**values, "max_concurrent": limits[0], "max_per_day": limits[1], "b_kind": lease["kind"],
                        "b_node": lease["node"]}  # fmt: skip
        state = _State(*await positional(_STATE_AND_TAKE, dialect).fetchrow(conn, limit_values))
    return _decide(state, *limits) or Reservation(True)


class RouteLeases:
    """The guard's store half for one node (`node`: this node's name, as the leases record it)."""

    def __init__(self, store: Store, node: str) -> None:
        if not node or len(node) > MAX_NODE:
            raise ValueError(f"a node name is 1..{MAX_NODE} characters")
        self.store = store
        self.node = node

    async def reserve(
        self, device_id: int, call_id: str, kind: str, now_ms: int, *, max_concurrent: int, max_per_day: int
    ) -> Reservation:
        """Take a place for call `call_id` of `device_id`: a lease held by this node and a spend of the rolling day,
        both or neither. Refused (`limit` "concurrent" or "daily") when the device has `max_concurrent` live leases
        or `max_per_day` spends after now - 24 h (one stamped later than `now_ms` by another node's clock counts
        too: the limit holds whatever order the nodes' clocks put the spends in). A call id that holds a lease
        already is ok again, nothing added; one whose lease was released takes a lease again without a second
        spend. `StoreError` for no such device."""
        if kind not in LEASE_KINDS:
            raise ValueError(f"lease kind must be one of {', '.join(LEASE_KINDS)}, not {kind!r}")
        if not call_id or len(call_id) > MAX_CALL_ID:
            raise ValueError(f"a call id is 1..{MAX_CALL_ID} characters")
        if max_concurrent < 0 or max_per_day < 0:
            raise ValueError("max_concurrent and max_per_day must not be negative")
        values = {
            "b_device": device_id, "b_call": call_id, "now_ms": now_ms, "live_since": now_ms - LEASE_STALE_MS,
            "day_since": now_ms - DAY_MS, "nth": max(0, max_per_day - 1),
        }  # fmt: skip
        lease = {"call_id": call_id, "device_id": device_id, "kind": kind, "node": self.node, "started_ms": now_ms,
                 "renewed_ms": now_ms}  # fmt: skip
        spend = {"b_device": device_id, "b_call": call_id, "now_ms": now_ms}
        limits = (max_concurrent, max_per_day, now_ms)
        engine = self.store.engine
        got = await run_fast(
            engine, _sqlite_reserve, _pg_reserve, engine.dialect, values, lease, spend, limits, together=True
        )
        if got is not NOT_RUN:
            if got is None:
                raise StoreError(f"no device with id {device_id}")
            return cast(Reservation, got)
        async with devices_locked(engine, [device_id]) as (c, found):
            if not found:
                raise StoreError(f"no device with id {device_id}")
            state = _State(*(await c.execute(_STATE, values)).one())
            refused = _decide(state, *limits)
            if refused is not None:
                return refused
            if not state.leased:
                await c.execute(_ADD_LEASE, lease)
                if not state.spent:
                    await c.execute(_ADD_SPEND, spend)
        return Reservation(True)

    async def release(self, call_id: str) -> bool:
        """The call ended: its lease goes (whichever node holds it). False when it held none."""
        async with self.store.engine.begin() as c:
            return rowcount(await c.execute(_RELEASE, {"b_call": call_id})) > 0

    async def renew(self, now_ms: int) -> int:
        """Mark every lease this node holds renewed at `now_ms` (every `RENEW_EVERY_S`); how many."""
        async with self.store.engine.begin() as c:
            return rowcount(await c.execute(_RENEW, {"b_node": self.node, "now_ms": now_ms}))

    async def reclaim(self) -> int:
        """Delete every lease this node holds (at its start: no call of a previous run is still in progress)."""
        async with self.store.engine.begin() as c:
            return rowcount(await c.execute(_RECLAIM, {"b_node": self.node}))

    async def live(self, device_id: int, kind: str, now_ms: int) -> int:
        """The device's live leases of `kind` (e.g. a callback in progress: `busy`)."""
        values = {"b_device": device_id, "b_kind": kind, "live_since": now_ms - LEASE_STALE_MS}
        async with self.store.engine.connect() as c:
            return int((await c.execute(_LIVE, values)).scalar_one())

    async def purge(self, now_ms: int) -> dict[str, int]:
        """Delete spends that left the rolling day and stale leases (of any node)."""
        values = {"day_since": now_ms - DAY_MS, "live_since": now_ms - LEASE_STALE_MS}
        async with self.store.engine.begin() as c:
            spends = rowcount(await c.execute(_PURGE_SPENDS, values))
            leases = rowcount(await c.execute(_PURGE_LEASES, values))
        return {"spends": spends, "leases": leases}
