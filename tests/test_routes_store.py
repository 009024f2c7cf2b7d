"""The routing guard's counters in the shared store (`store.routes.RouteLeases`) on SQLite and PostgreSQL: the
concurrency and rolling-day limits, the same call reserving again, stale leases, renew / reclaim / live / purge of
one node, and two nodes reserving at once never going past either limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from support.driver import generic_path_forbidden, not_run

from asterisk_securelink.store.route_models import CallLease, RouteSpend
from asterisk_securelink.store.routes import (
    CONCURRENT_RETRY_S,
    DAY_MS,
    LEASE_STALE_MS,
    Reservation,
    RouteLeases,
)
from asterisk_securelink.store.store import DeviceRow, Store, StoreError

NOW = 1_790_000_000_000


@pytest.fixture(autouse=True, params=["fast", "generic"])
def reserve_path(request: pytest.FixtureRequest, db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test on both ways `reserve` runs: in the driver's own terms (`store.driver`: one function on aiosqlite's
    thread, one coroutine on asyncpg), whose use is proven by taking the generic path away, and the generic Core
    path."""
    from asterisk_securelink.store import routes

    if request.param == "generic":
        monkeypatch.setattr(routes, "run_fast", not_run)
    else:
        monkeypatch.setattr(routes, "devices_locked", generic_path_forbidden("reserved"))
    return str(request.param)


@pytest.fixture
async def leases(store: Store) -> RouteLeases:
    return RouteLeases(store, "node-a")


@pytest.fixture
async def two(db_url: str) -> AsyncIterator[tuple[RouteLeases, RouteLeases]]:
    """Two nodes: each its own Store (engine, pool) on the one database."""
    sa, sb = Store.from_url(db_url), Store.from_url(db_url)
    try:
        yield RouteLeases(sa, "node-a"), RouteLeases(sb, "node-b")
    finally:
        await sa.close()
        await sb.close()


async def device(store: Store, i: int = 1) -> DeviceRow:
    return await store.add_device(f"Dev {i}", f"+1555000000{i}", None, f"dev-000{i}", "test")


async def reserve(
    r: RouteLeases, dev: DeviceRow, call: str, at: int = NOW, kind: str = "through", conc: int = 2, day: int = 50
) -> Reservation:
    return await r.reserve(dev.id, call, kind, at, max_concurrent=conc, max_per_day=day)


async def lease_rows(store: Store) -> dict[str, tuple[int, str, str, int, int]]:
    async with store.sessions() as s:
        q = select(CallLease.call_id, CallLease.device_id, CallLease.kind, CallLease.node, CallLease.started_ms,
                   CallLease.renewed_ms)  # fmt: skip
        return {str(r[0]): (int(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5])) for r in await s.execute(q)}


async def spend_rows(store: Store) -> list[tuple[int, str, int]]:
    async with store.sessions() as s:
        q = select(RouteSpend.device_id, RouteSpend.call_id, RouteSpend.at_ms).order_by(RouteSpend.id)
        return [(int(d), str(c), int(t)) for d, c, t in (await s.execute(q)).all()]


# -- reserve ---------------------------------------------------------------------------------------------------
async def test_a_reservation_takes_a_lease_and_a_spend(store: Store, leases: RouteLeases) -> None:
    dev = await device(store)
    assert await reserve(leases, dev, "call-1", kind="callback") == Reservation(True, None, 0)
    assert await lease_rows(store) == {"call-1": (dev.id, "callback", "node-a", NOW, NOW)}
    assert await spend_rows(store) == [(dev.id, "call-1", NOW)]


async def test_the_concurrency_limit_holds_until_a_call_is_released(store: Store, leases: RouteLeases) -> None:
    dev, other = await device(store, 1), await device(store, 2)
    assert (await reserve(leases, dev, "c1")).ok and (await reserve(leases, dev, "c2", kind="callback")).ok
    assert await reserve(leases, dev, "c3") == Reservation(False, "concurrent", CONCURRENT_RETRY_S)
    assert (await reserve(leases, other, "o1")).ok  # another device's calls are its own
    assert set(await lease_rows(store)) == {"c1", "c2", "o1"} and len(await spend_rows(store)) == 3  # refusal: none
    assert await leases.release("c1") is True
    assert await leases.release("c1") is False  # released already
    assert (await reserve(leases, dev, "c3")).ok


async def test_the_daily_limit_is_a_rolling_day(store: Store, leases: RouteLeases) -> None:
    dev = await device(store)
    for i in range(3):
        assert (await reserve(leases, dev, f"c{i}", at=NOW + i * 1000, day=3)).ok
        await leases.release(f"c{i}")
    at = NOW + 10_000
    assert await reserve(leases, dev, "c3", at=at, day=3) == Reservation(False, "daily", (DAY_MS - 10_000) // 1000)
    assert await reserve(leases, dev, "c3", at=NOW + DAY_MS - 1, day=3) == Reservation(False, "daily", 1)
    assert (await reserve(leases, dev, "c3", at=NOW + DAY_MS, day=3)).ok  # the first spend left the day
    assert not (await reserve(leases, dev, "c4", at=NOW + DAY_MS, day=3)).ok  # c1, c2, c3 in the day
    assert await reserve(leases, dev, "c5", at=NOW + DAY_MS, conc=0) == Reservation(
        False, "concurrent", CONCURRENT_RETRY_S
    )
    assert await reserve(leases, dev, "c5", at=NOW + DAY_MS, day=0) == Reservation(False, "daily", DAY_MS // 1000)


async def test_a_spend_stamped_later_by_another_clock_counts(store: Store, leases: RouteLeases) -> None:
    dev = await device(store)
    assert (await reserve(leases, dev, "c1", at=NOW + 5000, day=1)).ok  # a node whose clock is 5 s ahead
    assert await reserve(leases, dev, "c2", at=NOW, day=1) == Reservation(False, "daily", DAY_MS // 1000 + 5)


async def test_the_same_call_reserving_again_adds_nothing(store: Store, leases: RouteLeases) -> None:
    dev = await device(store)
    assert (await reserve(leases, dev, "c1", conc=1, day=1)).ok
    assert (await reserve(leases, dev, "c1", at=NOW + 5000, conc=1, day=1)).ok  # at both limits: still its place
    assert await lease_rows(store) == {"c1": (dev.id, "through", "node-a", NOW, NOW)}
    assert len(await spend_rows(store)) == 1
    await leases.release("c1")
    # released, then again (a retry of the same call): a lease again, not a second spend of the day
    assert (await reserve(leases, dev, "c1", at=NOW + 6000, conc=1, day=1)).ok
    assert set(await lease_rows(store)) == {"c1"} and len(await spend_rows(store)) == 1
    assert await reserve(leases, dev, "c2", at=NOW + 7000, conc=5, day=1) == Reservation(
        False, "daily", (DAY_MS - 7000) // 1000
    )


async def test_a_stale_lease_does_not_count_and_renewing_keeps_it_live(store: Store, leases: RouteLeases) -> None:
    dev = await device(store)
    assert (await reserve(leases, dev, "c1", conc=1)).ok
    assert not (await reserve(leases, dev, "c2", at=NOW + LEASE_STALE_MS - 1, conc=1)).ok
    assert await leases.renew(NOW + 30_000) == 1
    assert not (await reserve(leases, dev, "c2", at=NOW + LEASE_STALE_MS, conc=1)).ok  # renewed at +30 s
    assert await leases.live(dev.id, "through", NOW + 30_000 + LEASE_STALE_MS - 1) == 1
    assert await leases.live(dev.id, "through", NOW + 30_000 + LEASE_STALE_MS) == 0
    assert (await reserve(leases, dev, "c2", at=NOW + 30_000 + LEASE_STALE_MS, conc=1)).ok  # a crashed node's


async def test_reserve_refuses_what_it_cannot_count(store: Store, leases: RouteLeases) -> None:
    dev = await device(store)
    with pytest.raises(StoreError):
        await leases.reserve(dev.id + 100, "c1", "through", NOW, max_concurrent=2, max_per_day=50)
    for kind, call in (("dtmf", "c1"), ("through", ""), ("through", "x" * 129)):
        with pytest.raises(ValueError):
            await leases.reserve(dev.id, call, kind, NOW, max_concurrent=2, max_per_day=50)
    with pytest.raises(ValueError):
        await leases.reserve(dev.id, "c1", "through", NOW, max_concurrent=-1, max_per_day=50)
    with pytest.raises(ValueError):
        RouteLeases(store, "")
    assert await lease_rows(store) == {} and await spend_rows(store) == []


# -- one node's leases -----------------------------------------------------------------------------------------
async def test_renew_reclaim_and_live_concern_this_node(two: tuple[RouteLeases, RouteLeases]) -> None:
    a, b = two
    dev = await device(a.store)
    assert (await reserve(a, dev, "a1")).ok and (await reserve(b, dev, "b1", kind="callback")).ok
    assert await a.live(dev.id, "through", NOW) == 1 and await a.live(dev.id, "callback", NOW) == 1
    assert await a.live(dev.id + 1, "through", NOW) == 0
    assert await a.renew(NOW + 60_000) == 1
    rows = await lease_rows(a.store)
    assert rows["a1"][4] == NOW + 60_000 and rows["b1"][4] == NOW  # b's lease is b's to renew
    assert (
        await b.live(dev.id, "callback", NOW + LEASE_STALE_MS) == 0
        and await b.live(dev.id, "through", NOW + LEASE_STALE_MS) == 1
    )
    assert await b.reclaim() == 1  # node b starts again: what it held is gone
    assert set(await lease_rows(a.store)) == {"a1"}
    assert await b.reclaim() == 0
    assert await b.release("a1") is True  # a call may end wherever: release is by call id


async def test_purge_deletes_spends_past_the_day_and_stale_leases(store: Store, leases: RouteLeases) -> None:
    dev = await device(store)
    assert (await reserve(leases, dev, "old")).ok and (await reserve(leases, dev, "new", at=NOW + 60_000)).ok
    assert await leases.purge(NOW + LEASE_STALE_MS - 1) == {"spends": 0, "leases": 0}
    assert await leases.purge(NOW + LEASE_STALE_MS) == {"spends": 0, "leases": 1}
    assert set(await lease_rows(store)) == {"new"}
    assert await leases.purge(NOW + DAY_MS) == {"spends": 1, "leases": 1}
    assert await spend_rows(store) == [(dev.id, "new", NOW + 60_000)]


# -- several nodes -------------------------------------------------------------------------------------------------
async def test_two_nodes_reserving_at_once_keep_the_concurrency_limit(two: tuple[RouteLeases, RouteLeases]) -> None:
    a, b = two
    dev = await device(a.store)
    results = await asyncio.gather(*(reserve(n, dev, f"c{i}", conc=2) for i, n in enumerate((a, b) * 15)))
    assert [r.ok for r in results].count(True) == 2
    assert {r.limit for r in results if not r.ok} == {"concurrent"}
    assert len(await lease_rows(a.store)) == 2 and len(await spend_rows(a.store)) == 2


async def test_two_nodes_reserving_at_once_keep_the_daily_limit(two: tuple[RouteLeases, RouteLeases]) -> None:
    a, b = two
    dev = await device(a.store)

    async def call(n: RouteLeases, i: int) -> bool:
        r = await reserve(n, dev, f"c{i}", at=NOW + i, conc=3, day=7)
        if r.ok:
            await asyncio.sleep(0)
            await n.release(f"c{i}")
        return r.ok

    oks = await asyncio.gather(*(call(n, i) for i, n in enumerate((a, b) * 20)))
    spends = await spend_rows(a.store)
    assert len(spends) == oks.count(True) <= 7
    assert oks.count(True) >= 3  # the first three at least: nothing refused them
    later = await asyncio.gather(
        *(reserve(n, dev, f"d{i}", at=NOW + 100, conc=50, day=7) for i, n in enumerate((a, b) * 5))
    )
    assert len(await spend_rows(a.store)) == 7 and [r.ok for r in later].count(True) == 7 - len(spends)
