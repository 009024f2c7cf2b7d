"""Which commits wait for the disk (docs/decisions.md): the spend and every other write are durable; the lease
reservation and the audit batches, on every admitted call's path, commit without waiting, on SQLite
(`synchronous=NORMAL` for that transaction alone) and on PostgreSQL (`synchronous_commit` off, `SET LOCAL`)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.pg import migrated_pg_database, pg_admin_url

from asterisk_securelink.core.slk1 import Direction
from asterisk_securelink.store import audit_rows, driver, routes
from asterisk_securelink.store.driver import immediate, run_on_asyncpg, run_on_driver
from asterisk_securelink.store.routes import RouteLeases
from asterisk_securelink.store.store import Store, audit_fields

NOW = 1_790_000_000_000
FULL, NORMAL = 2, 1  # what `PRAGMA synchronous` reads


def _synchronous(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA synchronous").fetchone()[0])


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "d.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    return conn


def test_a_durable_transaction_commits_at_full(db: sqlite3.Connection) -> None:
    with immediate(db):
        assert _synchronous(db) == FULL
        db.execute("INSERT INTO t VALUES (1)")
    assert [r[0] for r in db.execute("SELECT x FROM t")] == [1]
    assert not db.in_transaction


def test_a_transaction_that_need_not_be_durable_commits_at_normal_and_full_comes_back(db: sqlite3.Connection) -> None:
    with immediate(db, durable=False):
        assert _synchronous(db) == NORMAL
        db.execute("INSERT INTO t VALUES (1)")
    assert _synchronous(db) == FULL
    assert [r[0] for r in db.execute("SELECT x FROM t")] == [1]


def test_full_comes_back_when_the_block_raises_and_nothing_is_kept(db: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.IntegrityError), immediate(db, durable=False):
        db.execute("INSERT INTO t VALUES (1)")
        db.execute("INSERT INTO t VALUES (1)")
    assert _synchronous(db) == FULL
    assert not db.in_transaction
    assert list(db.execute("SELECT x FROM t")) == []


# -- the store's own paths -------------------------------------------------------------------------------------
async def _statements(store: Store, work: Any) -> list[str]:
    """The SQL the store's one SQLite connection ran during `await work()`."""
    seen: list[str] = []
    await run_on_driver(store.engine, lambda conn: conn.set_trace_callback(seen.append))
    try:
        await work()
    finally:
        await run_on_driver(store.engine, lambda conn: conn.set_trace_callback(None))
    return seen


def _begins_at(statements: list[str]) -> list[str]:
    """The `synchronous` setting each BEGIN ran under ("FULL" or "NORMAL")."""
    level, out = "FULL", []
    for sql in statements:
        if sql.upper().startswith("PRAGMA SYNCHRONOUS="):
            level = sql.split("=", 1)[1].strip().upper()
        elif sql.upper().startswith("BEGIN"):
            out.append(level)
    return out


async def test_on_sqlite_the_spend_waits_for_the_disk_and_the_reservation_and_audit_do_not(sqlite_store: Store) -> None:
    store = sqlite_store
    dev = await store.add_device("Dev", "+15550000001", None, "dev-0001", "test")
    assert await run_on_driver(store.engine, _synchronous) == FULL  # every connection starts durable

    spent = await _statements(store, lambda: store.check_and_spend(dev.id, "dev-0001", Direction.INBOUND, 7, "n/1", 0))
    leases = RouteLeases(store, "node-a")
    reserved = await _statements(
        store, lambda: leases.reserve(dev.id, "n/1", "through", NOW, max_concurrent=1, max_per_day=5)
    )
    row = audit_fields("verify.inbound", "admitted", "asterisk", device_id=dev.id)
    audited = await _statements(store, lambda: audit_rows.insert_audit(store.engine, [row]))

    assert _begins_at(spent) == ["FULL"]
    assert _begins_at(reserved) == ["NORMAL"]
    assert _begins_at(audited) == ["NORMAL"]
    assert await run_on_driver(store.engine, _synchronous) == FULL  # and FULL again after them
    assert (await store.key_epoch(dev.id, Direction.INBOUND)) is not None
    assert len(await store.list_audit(action="verify.inbound")) == 1


on_postgresql = pytest.mark.skipif(pg_admin_url() is None, reason="SECURELINK_TEST_DATABASE_URL not set")


@pytest.fixture
async def pg_store() -> AsyncIterator[Store]:
    async with migrated_pg_database() as url:
        s = Store.from_url(url)
        try:
            yield s
        finally:
            await s.close()


@on_postgresql
async def test_on_postgresql_not_durable_is_this_transaction_alone(pg_store: Store) -> None:
    store = pg_store

    async def inside_and_after(conn: Any) -> tuple[str, str]:
        async with conn.transaction():
            await driver.not_durable(conn)
            inside = await conn.fetchval("SELECT current_setting('synchronous_commit')")
        return str(inside), str(await conn.fetchval("SELECT current_setting('synchronous_commit')"))

    assert await run_on_asyncpg(store.engine, inside_and_after) == ("off", "on")


class _Watched:
    """An asyncpg connection that notes `synchronous_commit` after each `fetchrow` (what `_pg_reserve` sends)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.seen: list[str] = []

    def transaction(self) -> Any:
        return self.conn.transaction()

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        row = await self.conn.fetchrow(sql, *args)
        self.seen.append(str(await self.conn.fetchval("SELECT current_setting('synchronous_commit')")))
        return row


@on_postgresql
async def test_on_postgresql_the_reservation_and_audit_commit_without_waiting(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = pg_store
    calls: list[str] = []
    watched: list[_Watched] = []

    async def counted(conn: Any) -> None:
        calls.append(str(await conn.fetchval("SELECT txid_current_if_assigned() IS NULL")))
        await driver.not_durable(conn)

    reserve = routes._pg_reserve

    async def watched_reserve(conn: Any, *args: Any) -> Any:
        watched.append(_Watched(conn))
        return await reserve(watched[-1], *args)

    monkeypatch.setattr(routes, "_pg_reserve", watched_reserve)
    monkeypatch.setattr(audit_rows, "not_durable", counted)
    dev = await store.add_device("Dev", "+15550000001", None, "dev-0001", "test")
    got = await RouteLeases(store, "node-a").reserve(dev.id, "n/1", "through", NOW, max_concurrent=1, max_per_day=5)
    row = audit_fields("verify.inbound", "admitted", "asterisk", device_id=dev.id)
    await audit_rows.insert_audit(store.engine, [row])
    assert got.ok
    assert [w.seen for w in watched] == [["off", "off"]]  # from its first statement (the lock) to its commit
    assert calls == ["True"]  # the audit batch: first in its transaction

    async def setting(conn: Any) -> str:
        return str(await conn.fetchval("SELECT current_setting('synchronous_commit')"))

    assert await run_on_asyncpg(store.engine, setting) == "on"  # that transaction alone
