"""`store.driver.run_on_driver` on SQLite: a hot transaction takes the engine's one connection straight from the pool
while nobody has it checked out, and otherwise waits its turn like any other user."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from asterisk_securelink.store.driver import run_on_driver
from asterisk_securelink.store.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store.from_url(f"sqlite+aiosqlite:///{tmp_path / 'driver.sqlite3'}")
    async with s.engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    try:
        yield s
    finally:
        await s.close()


def _add(db: sqlite3.Connection, x: int) -> int:
    """One whole transaction: insert `x`, return how many rows there are."""
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO t VALUES (?)", (x,))
    n = int(db.execute("SELECT count(*) FROM t").fetchone()[0])
    db.commit()
    return n


def _count_checkouts(store: Store) -> list[int]:
    seen: list[int] = []

    def checkout(*_args: Any) -> None:
        seen.append(1)

    event.listen(store.engine.sync_engine, "checkout", checkout)
    return seen


async def test_a_hot_transaction_takes_the_idle_connection_without_a_check_out(store: Store) -> None:
    checkouts = _count_checkouts(store)
    assert [await run_on_driver(store.engine, _add, x) for x in (1, 2, 3)] == [1, 2, 3]
    assert checkouts == []  # the connection made by the fixture was lying in the pool
    async with store.engine.connect() as conn:  # and what they wrote is there for everybody
        assert (await conn.exec_driver_sql("SELECT x FROM t ORDER BY x")).scalars().all() == [1, 2, 3]
    assert checkouts == [1]


async def test_a_hot_transaction_waits_while_the_connection_is_checked_out(store: Store) -> None:
    """A transaction of another user is never entered, committed or seen half done: the hot one runs after it."""
    async with store.engine.connect() as conn:
        await conn.exec_driver_sql("INSERT INTO t VALUES (10)")  # the driver's own transaction, still open
        hot = asyncio.create_task(run_on_driver(store.engine, _add, 20))
        await asyncio.sleep(0.2)
        assert not hot.done()
        await conn.exec_driver_sql("INSERT INTO t VALUES (11)")
        await conn.commit()
    assert await hot == 3  # after 10 and 11, committed together
    async with store.engine.connect() as conn:
        assert (await conn.exec_driver_sql("SELECT x FROM t ORDER BY x")).scalars().all() == [10, 11, 20]


async def test_a_hot_transaction_queued_first_runs_whole_before_a_later_check_out(store: Store) -> None:
    """Queued on the connection's thread before the next user's statements, it ends before they begin."""
    hot = asyncio.create_task(run_on_driver(store.engine, _add, 1))
    await asyncio.sleep(0)  # it has queued its transaction
    async with store.engine.begin() as conn:
        assert (await conn.exec_driver_sql("SELECT count(*) FROM t")).scalar_one() == 1
        await conn.exec_driver_sql("INSERT INTO t VALUES (2)")
    assert await hot == 1


async def test_a_transaction_left_open_by_a_hot_function_is_rolled_back(store: Store) -> None:
    def left_open(db: sqlite3.Connection) -> bool:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (1)")
        return bool(db.in_transaction)

    checkouts = _count_checkouts(store)
    assert await run_on_driver(store.engine, left_open) is True
    assert checkouts == []  # it took the idle path
    assert await run_on_driver(store.engine, _add, 2) == 1  # a BEGIN inside the open one would raise
    async with store.engine.begin() as conn:  # would wait 30 s for the write lock if it were still held
        assert (await conn.exec_driver_sql("SELECT x FROM t")).scalars().all() == [2]


async def test_a_hot_transaction_that_raises_leaves_the_connection_usable(store: Store) -> None:
    def fails(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (1)")
        db.execute("INSERT INTO nowhere VALUES (1)")

    with pytest.raises(sqlite3.OperationalError):
        await run_on_driver(store.engine, fails)
    assert await run_on_driver(store.engine, _add, 2) == 1


async def test_after_the_pool_closed_or_dropped_the_connection_a_new_one_is_checked_out(store: Store) -> None:
    checkouts = _count_checkouts(store)
    await store.engine.dispose()  # closes the idle connection: the next use makes one
    assert await run_on_driver(store.engine, _add, 1) == 1
    assert checkouts == [1]
    async with store.engine.connect() as conn:
        await conn.invalidate()  # closed at its check-in, not returned to the pool
    assert checkouts == [1, 1]
    assert await run_on_driver(store.engine, _add, 2) == 2
    assert checkouts == [1, 1, 1]
    assert await run_on_driver(store.engine, _add, 3) == 3  # that one was returned: idle again
    assert checkouts == [1, 1, 1]
