"""The end of routed calls written together (`store.ends.CallEndWriter`), on SQLite and PostgreSQL: each call's lease
released, its record written, its vouchers ended; calls ending at once share a transaction; one that cannot be
written fails alone and nothing else is lost."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from support.driver import generic_path_forbidden, not_run

from asterisk_securelink.store.api_models import CallVoucher
from asterisk_securelink.store.ends import CallEndWriter, record_values
from asterisk_securelink.store.routes import RouteLeases
from asterisk_securelink.store.store import Store

NOW = 1_790_000_000_000


@pytest.fixture(autouse=True, params=["fast", "generic"])
def commit_path(request: pytest.FixtureRequest, db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a group is written: in the driver's own terms (`store.driver`: one function on aiosqlite's thread,
    one coroutine on asyncpg), whose use is proven by taking the generic path away, and the generic Core path."""
    from asterisk_securelink.store import ends

    if request.param == "generic":
        monkeypatch.setattr(ends, "run_fast", not_run)
    else:
        monkeypatch.setattr(CallEndWriter, "_generic", generic_path_forbidden("call ends written"))
    return str(request.param)


def record(call_id: str, device_id: int, **extra: Any) -> dict[str, Any]:
    return {"call_id": call_id, "device_id": device_id, "direction": "inbound", "method": "dtmf",
            "verdict": "admitted", "caller": "+15550001111", "destination": "2001", "legs": [], **extra}  # fmt: skip


async def setup(store: Store, calls: list[str]) -> tuple[int, RouteLeases]:
    """A device whose `calls` each hold a lease and a voucher."""
    dev = await store.add_device("Alice", "+15550001111", None, "ends-dev", "test")
    leases = RouteLeases(store, "node-a")
    for call_id in calls:
        got = await leases.reserve(dev.id, call_id, "through", NOW, max_concurrent=1000, max_per_day=1000)
        assert got.ok
    async with store.engine.begin() as c:
        for n, call_id in enumerate(calls):
            await c.execute(insert(CallVoucher), {
                "id": f"v-{n}", "call_id": call_id, "device_id": dev.id, "direction": "inbound", "literal_prefix": "",
                "significant_len": 10, "match_tag": "t", "sealed": b"x", "created_ms": NOW, "expires_ms": NOW + 60_000,
            })  # fmt: skip
    return dev.id, leases


async def vouchers(store: Store) -> set[str]:
    async with store.engine.connect() as c:
        return set((await c.execute(select(CallVoucher.call_id))).scalars())


async def test_calls_ending_together_share_a_transaction_and_each_is_written(store: Store) -> None:
    calls = [f"ch-{i}" for i in range(40)]
    device, leases = await setup(store, calls)
    writer = CallEndWriter(store.engine)
    await asyncio.gather(*(writer.end(c, record(c, device), release=True) for c in calls))
    assert 1 <= writer.transactions <= 2  # the first may go alone; the rest queued meanwhile go in one
    assert sorted(r.call_id for r in await store.list_call_records()) == sorted(calls)
    assert await leases.live(device, "through", NOW) == 0
    assert await vouchers(store) == set()


async def test_one_end_that_cannot_be_written_fails_alone(store: Store) -> None:
    calls = ["ch-a", "ch-dup", "ch-b"]
    device, leases = await setup(store, calls)
    writer = CallEndWriter(store.engine)
    await writer.end("ch-dup", record("ch-dup", device), release=False)  # its record exists: a second one fails
    got = await asyncio.gather(*(writer.end(c, record(c, device), release=True) for c in calls),
                               return_exceptions=True)  # fmt: skip
    assert got[0] is None and got[2] is None and isinstance(got[1], IntegrityError | sqlite3.IntegrityError)
    assert sorted(r.call_id for r in await store.list_call_records()) == ["ch-a", "ch-b", "ch-dup"]
    assert await leases.live(device, "through", NOW) == 1  # ch-dup's: its end was refused as a whole
    assert await vouchers(store) == set()  # ch-dup's went with its first end


async def test_an_end_without_a_record_releases_and_ends_vouchers(store: Store) -> None:
    device, leases = await setup(store, ["ch-1", "ch-2"])
    writer = CallEndWriter(store.engine)
    await writer.end("ch-1", None, release=True)
    assert await leases.live(device, "through", NOW) == 1 and await vouchers(store) == {"ch-2"}
    assert await store.list_call_records() == []


async def test_a_caller_cancelled_while_waiting_does_not_cancel_the_write(store: Store) -> None:
    device, leases = await setup(store, ["ch-1"])
    writer = CallEndWriter(store.engine)
    waiting = asyncio.create_task(writer.end("ch-1", record("ch-1", device), release=True))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await writer.close()
    assert [r.call_id for r in await store.list_call_records()] == ["ch-1"]
    assert await leases.live(device, "through", NOW) == 0


def test_record_values_clip_each_column_and_never_take_more() -> None:
    row = record_values(record("c" * 200, 7, caller="9" * 40, destination="1" * 30, hangup_cause="x" * 80,
                               node="n" * 70, method="m" * 20, legs=[{"channel": "PJSIP/a"}]))  # fmt: skip
    assert (len(row["call_id"]), len(row["caller"]), len(row["destination"])) == (128, 32, 20)
    assert (len(row["hangup_cause"]), len(row["node"]), len(row["method"])) == (64, 64, 16)
    assert row["legs"] == '[{"channel": "PJSIP/a"}]' and row["started_at"] is not None and row["ended_at"] is not None
    assert record_values({"call_id": "x"})["direction"] == "outbound"
