"""The store on real databases: SQLite always, PostgreSQL when SECURELINK_TEST_DATABASE_URL is set."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from support.driver import not_run

from asterisk_securelink.core.slk1 import Direction
from asterisk_securelink.store.store import DuplicateError, Store


async def test_add_device_creates_epoch_rows_and_audit(store: Store) -> None:
    d = await store.add_device("Alice", "15550001", "PJSIP/1001", "kid-1", "test")
    assert d.status == "provisioned" and d.fork_enabled
    for direction in Direction:
        row = await store.key_epoch(d.id, direction)
        assert row is not None and row.last_epoch == -1
    events = await store.list_audit()
    assert [(e.action, e.device_id) for e in events] == [("device.add", d.id)]
    with pytest.raises(DuplicateError):
        await store.add_device("Eve", "15550002", None, "kid-1", "test")
    assert len(await store.list_devices()) == 1  # nothing half-written
    assert len(await store.list_audit()) == 1


async def test_spend_is_single_use_and_monotonic(store: Store) -> None:
    d = await store.add_device("A", "1555", None, "kid", "t")
    assert await store.spend(d.id, Direction.INBOUND, 100, "call-1", 0)
    assert not await store.spend(d.id, Direction.INBOUND, 100, "call-2", 0)  # replay
    assert await store.spend(d.id, Direction.INBOUND, 100, "call-1", 0)  # same call re-presented
    assert not await store.spend(d.id, Direction.INBOUND, 99, "call-3", 0)  # earlier epochs are spent too
    assert not await store.spend(d.id, Direction.INBOUND, 100, None, 0)
    assert await store.spend(d.id, Direction.OUTBOUND, 100, None, 0)  # directions are separate
    assert await store.spend(d.id, Direction.INBOUND, 101, "call-4", 1)
    row = await store.key_epoch(d.id, Direction.INBOUND)
    assert row is not None and row.last_epoch == 101 and row.drift == 1


async def test_outbound_epochs_at_most_current_plus_one(store: Store) -> None:
    d = await store.add_device("A", "1555", None, "kid", "t")
    assert await store.next_outbound_epoch(d.id, 50, "c1") == 50
    assert await store.next_outbound_epoch(d.id, 50, "c2") == 51
    assert await store.next_outbound_epoch(d.id, 50, "c3") is None  # rate limited
    assert await store.next_outbound_epoch(d.id, 52, "c4") == 52


async def test_rotation_resets_spent_epochs(store: Store) -> None:
    d = await store.add_device("A", "1555", None, "kid", "t")
    await store.spend(d.id, Direction.INBOUND, 100, "c", 0)
    d2 = await store.update_device(d.id, "device.rotate", "t", key_id="kid-2")
    assert d2.key_id == "kid-2" and d2.updated_at >= d.updated_at
    row = await store.key_epoch(d.id, Direction.INBOUND)
    assert row is not None and row.last_epoch == -1


async def test_incremental_device_listing(store: Store) -> None:
    a = await store.add_device("A", "1555", None, "k1", "t")
    await asyncio.sleep(0.01)
    b = await store.add_device("B", "1556", None, "k2", "t")
    assert [d.id for d in await store.list_devices(since=b.updated_at)] == [b.id]
    assert [d.id for d in await store.list_devices(since=a.updated_at)] == [a.id, b.id]


async def test_audit_is_append_only_in_the_database(store: Store) -> None:
    await store.audit("test", "ok", "t")
    for statement in ("UPDATE audit_events SET result = 'forged'", "DELETE FROM audit_events"):
        with pytest.raises((IntegrityError, DBAPIError), match="append-only"):
            async with store.engine.begin() as conn:
                await conn.execute(text(statement))
    assert [e.result for e in await store.list_audit()] == ["ok"]


async def test_no_column_can_hold_a_device_secret(store: Store) -> None:
    from asterisk_securelink.store.models import Device

    names = {c.name for c in Device.__table__.columns}
    assert not {n for n in names if "secret" in n or n in ("key", "seed")}
    assert await store.schema_revision() is not None


@pytest.fixture(params=["fast", "generic"])
def spend_path(request: pytest.FixtureRequest, store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The driver's own path (`store.spend`: SQLite's one-hand-off transaction, PostgreSQL's one statement on
    asyncpg), proven taken by counting its calls, and the generic Core path every database has."""
    from asterisk_securelink.store import spend

    if request.param == "generic":
        monkeypatch.setattr(spend, "run_together", not_run)
        monkeypatch.setattr(spend, "run_on_asyncpg", not_run)
        yield "generic"
        return
    name = "_sqlite_check_and_spend" if store.engine.dialect.name == "sqlite" else "_pg_check_and_spend"
    fast = getattr(spend, name)
    calls: list[int] = []

    def counted(*args: object) -> object:
        calls.append(1)
        return fast(*args)

    monkeypatch.setattr(spend, name, counted)
    yield "fast"
    assert calls, f"check_and_spend did not take {name}"


async def test_an_sqlite_connection_returned_inside_a_transaction_is_rolled_back(tmp_path: Path) -> None:
    """The pool does not roll back at every check-in (a hand-off each time); a transaction left open still ends
    there, so the next user neither sees its writes nor waits for its lock."""
    from asterisk_securelink.store.driver import run_on_driver

    sqlite_store = Store.from_url(f"sqlite+aiosqlite:///{tmp_path / 'reset.sqlite3'}")
    try:
        async with sqlite_store.engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")

        def left_open(db: sqlite3.Connection) -> bool:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (1)")
            return bool(db.in_transaction)

        assert await run_on_driver(sqlite_store.engine, left_open) is True
        async with sqlite_store.engine.begin() as conn:  # would wait 30 s for the write lock if it were still held
            assert (await conn.exec_driver_sql("SELECT count(*) FROM t")).scalar_one() == 0
            await conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        async with sqlite_store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("SELECT x FROM t")).scalars().all() == [2]
    finally:
        await sqlite_store.close()


async def test_the_sqlite_spend_runs_on_the_driver_thread(tmp_path: Path) -> None:
    """The one-hand-off path exists for aiosqlite (an SQLite store whatever database the other tests use)."""
    from asterisk_securelink.store import driver

    sqlite_store = Store.from_url(f"sqlite+aiosqlite:///{tmp_path / 'spend.sqlite3'}")
    try:
        async with sqlite_store.engine.connect() as conn:
            assert driver.on_driver_thread(await conn.get_raw_connection()) is not None  # not the silent fallback
    finally:
        await sqlite_store.close()


async def test_check_and_spend_only_for_the_current_key_id_and_a_usable_status(store: Store, spend_path: str) -> None:
    d = await store.add_device("A", "15550001", None, "kid-a", "t")
    r = await store.check_and_spend(d.id, "kid-a", Direction.INBOUND, 100, "c1", 0)
    assert r.spent and r.device is not None and r.device.status == "provisioned"
    assert (await store.check_and_spend(d.id, "kid-a", Direction.INBOUND, 100, "c1", 0)).spent  # the same call again
    assert not (await store.check_and_spend(d.id, "kid-a", Direction.INBOUND, 100, "c9", 0)).spent  # another call
    r = await store.check_and_spend(d.id, "kid-old", Direction.INBOUND, 101, "c2", 0)  # rotated meanwhile
    assert not r.spent and r.device is not None and r.device.key_id == "kid-a"
    await store.update_device(d.id, "device.revoke", "t", status="revoked")
    r = await store.check_and_spend(d.id, "kid-a", Direction.INBOUND, 102, "c3", 0)
    assert not r.spent and r.device is not None and r.device.status == "revoked"
    assert (await store.check_and_spend(d.id + 999, "kid-a", Direction.INBOUND, 103, "c4", 0)).device is None
    epoch = await store.key_epoch(d.id, Direction.INBOUND)
    assert epoch is not None and epoch.last_epoch == 100  # none of the refused attempts spent anything


async def test_check_and_spend_reads_the_routing_fields_with_the_device(store: Store, spend_path: str) -> None:
    """What an admitted call is routed on comes from the spend's own read (`calling.onward` reads nothing again)."""
    routing = {"context": "from-desk", "callerid": '"Al" <2222>', "home": "extension:*97"}
    d = await store.add_device("A", "15550001", "PJSIP/1001", "kid-r", "t", routing)
    bare = await store.add_device("B", "15550002", None, "kid-s", "t")
    r = await store.check_and_spend(d.id, "kid-r", Direction.INBOUND, 100, "c1", 0)
    assert r.spent and r.device is not None
    assert (r.device.desk_endpoint, r.device.context, r.device.callerid, r.device.home) == (
        "PJSIP/1001", "from-desk", '"Al" <2222>', "extension:*97")  # fmt: skip
    r = await store.check_and_spend(bare.id, "kid-s", Direction.INBOUND, 100, "c2", 0)
    assert r.device is not None and (r.device.desk_endpoint, r.device.context, r.device.home) == (None, None, None)


async def test_the_spend_update_itself_rechecks_key_id_and_status(store: Store) -> None:
    """What another node changes between the verifier's read and its UPDATE: the UPDATE's own guard refuses."""
    from asterisk_securelink.store.spend import spend_in as _spend_in

    d = await store.add_device("A", "15550001", None, "kid-a", "t")
    await store.update_device(d.id, "device.suspend", "t", status="suspended")
    async with store.transaction() as s:
        assert not await _spend_in(s, d.id, "kid-a", Direction.INBOUND, 100, "c1", 0)  # suspended
    await store.update_device(d.id, "device.resume", "t", status="registered")
    async with store.transaction() as s:
        assert not await _spend_in(s, d.id, "kid-b", Direction.INBOUND, 100, "c1", 0)  # another key id
        assert await _spend_in(s, d.id, "kid-a", Direction.INBOUND, 100, "c1", 0)


async def test_a_key_id_is_never_reused_not_even_after_a_rotation(store: Store) -> None:
    """SLK1.md: reusing a key_id would bring back the old device's secret, so a rotated one stays a tombstone."""
    from asterisk_securelink.core.slk1 import SLK1Error

    a = await store.add_device("A", "+15550001111", None, "kid-a", "t")
    await store.update_device(a.id, "device.rotate", "t", key_id="kid-a2")
    with pytest.raises(DuplicateError, match="never reused"):
        await store.add_device("B", "+15550002222", None, "kid-a", "t")  # the retired key id
    b = await store.add_device("B", "+15550002222", None, "kid-b", "t")
    with pytest.raises(DuplicateError):
        await store.update_device(b.id, "device.rotate", "t", key_id="kid-a")  # nor by rotating onto it
    unchanged = await store.get_device(b.id)
    assert unchanged is not None and unchanged.key_id == "kid-b"
    for bad in ("kid a", "kid/a", "", "k" * 65, "ключ"):
        with pytest.raises(SLK1Error):
            await store.add_device("C", "+15550003333", None, bad, "t")
    assert [d.key_id for d in await store.list_devices()] == ["kid-a2", "kid-b"]


async def test_rotate_all_rotates_every_device_but_revoked_and_records_the_settings(store: Store) -> None:
    a = await store.add_device("A", "+15550001111", None, "kid-a", "t")
    b = await store.add_device("B", "+15550002222", None, "kid-b", "t")
    c = await store.add_device("C", "+15550003333", None, "kid-c", "t")
    await store.update_device(c.id, "device.revoke", "t", status="revoked")
    await store.spend(a.id, Direction.INBOUND, 100, "x", 0)
    assert await store.count_live_devices() == 2
    fresh = iter(["kid-a-2", "kid-b-2"])
    rotated = await store.rotate_all(lambda: next(fresh), {"keys.period": "10", "keys.t0": "0"}, "t")
    assert [(old, d.id, d.key_id) for old, d in rotated] == [("kid-a", a.id, "kid-a-2"), ("kid-b", b.id, "kid-b-2")]
    assert all(d.updated_at == d.updated_at and d.key_id != old for old, d in rotated)
    revoked = await store.get_device(c.id)
    assert revoked is not None and revoked.key_id == "kid-c"
    row = await store.key_epoch(a.id, Direction.INBOUND)
    assert row is not None and row.last_epoch == -1  # the new key has no spent epochs
    assert await store.settings() == {"keys.period": "10", "keys.t0": "0"}
    actions = [e.action for e in await store.list_audit()]
    assert actions.count("device.rotate") == 2 and actions[-1] == "settings.keys"
    reuse = iter(["kid-x", "kid-a"])  # the second new id was issued before: nothing of the batch lands
    with pytest.raises(DuplicateError):
        await store.rotate_all(lambda: next(reuse), {"keys.period": "30", "keys.t0": "0"}, "t")
    assert [d.key_id for d in await store.list_devices()] == ["kid-a-2", "kid-b-2", "kid-c"]
    assert (await store.settings())["keys.period"] == "10"


async def test_settings_are_recorded_and_replaced(store: Store) -> None:
    assert await store.settings() == {}
    await store.record_settings({"keys.period": "30", "keys.t0": "0"}, "t")
    await store.record_settings({"keys.period": "10"}, "t")
    assert await store.settings() == {"keys.period": "10", "keys.t0": "0"}


async def test_migration_0003_rewrites_registered_numbers_to_e164_and_keeps_what_it_cannot(tmp_path: Path) -> None:
    from sqlalchemy import insert

    from asterisk_securelink.store.migrations import upgrade
    from asterisk_securelink.store.models import Device, KeyIdRecord, utcnow

    made: list[str] = []

    async def at_0002_with(numbers: list[str]) -> Store:
        made.append(f"sqlite+aiosqlite:///{tmp_path / f'm{len(made)}.sqlite3'}")
        await upgrade(made[-1], "0002")
        s = Store.from_url(made[-1])
        now = utcnow()
        rows = [
            {"id": i, "display_name": f"D{i}", "mobile_number": n, "key_id": f"kid-{i}", "status": "registered",
             "fork_enabled": True, "created_at": now, "updated_at": now}
            for i, n in enumerate(numbers, 1)
        ]  # fmt: skip
        async with s.engine.begin() as conn:
            await conn.execute(insert(Device), rows)
        return s

    legacy = ["15550001111", "5550002222", "447700900123", "0301234567", "+4930123456"]
    store = await at_0002_with(legacy)
    try:
        notes = await upgrade(str(store.engine.url), default_country_code="1")
        numbers = [d.mobile_number for d in await store.list_devices()]
        assert numbers == ["+15550001111", "+15550002222", "+1447700900123", "0301234567", "+4930123456"]
        assert any("0301234567" in n and "kept unchanged" in n for n in notes)
        assert any("3 registered number(s) rewritten" in n for n in notes)  # the 5th was E.164
        async with store.sessions() as s:
            rows = (await s.execute(select(KeyIdRecord.key_id))).scalars().all()
        assert sorted(rows) == [f"kid-{i}" for i in range(1, 6)]  # every issued key id is now a tombstone too
        with pytest.raises(DuplicateError):
            await store.add_device("Again", "+15550009999", None, "kid-1", "t")
    finally:
        await store.close()
    store = await at_0002_with(legacy)
    try:  # without a default country code, 1.0's `--number MSISDN`: the digits are the international number
        notes = await upgrade(str(store.engine.url))
        numbers = [d.mobile_number for d in await store.list_devices()]
        assert numbers == ["+15550001111", "+5550002222", "+447700900123", "0301234567", "+4930123456"]
        from alembic import command
        from asterisk_securelink.store.migrations import alembic_config

        await asyncio.to_thread(command.downgrade, alembic_config(str(store.engine.url)), "0002")  # 1.0: digits
        async with store.engine.connect() as conn:  # the columns of 0002 only: the model has later ones
            q = select(Device.mobile_number).order_by(Device.id)
            assert list((await conn.execute(q)).scalars())[:3] == legacy[:3]
    finally:
        await store.close()
