"""`store.driver.run_on_driver` on SQLite: a hot transaction takes the engine's one connection straight from the pool
while nobody has it checked out, and otherwise waits its turn like any other user."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from asterisk_securelink.store import driver
from asterisk_securelink.store.driver import immediate, run_on_driver, run_together
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


# -- `run_together`: the group commit --------------------------------------------------------------------------------


def _put(db: sqlite3.Connection, x: int, durable: bool = True, pause: float = 0.0) -> int:
    """A hot write as the store's are written (`immediate`): insert `x`; the rows seen. `pause`: hold the connection
    that long first (what a slow write or an fsync does), so that the writes after it wait and go together."""
    time.sleep(pause)
    with immediate(db, durable=durable):
        db.execute("INSERT INTO t VALUES (?)", (x,))
        return int(db.execute("SELECT count(*) FROM t").fetchone()[0])


def _fails(db: sqlite3.Connection, x: int) -> int:
    with immediate(db):
        db.execute("INSERT INTO t VALUES (?)", (x,))
        raise ValueError("refused by its own rule")


async def _traced(store: Store) -> list[str]:
    seen: list[str] = []
    await run_on_driver(store.engine, lambda db: db.set_trace_callback(seen.append))
    return seen


async def _rows(store: Store) -> list[int]:
    async with store.engine.connect() as conn:
        return list((await conn.exec_driver_sql("SELECT x FROM t ORDER BY x")).scalars().all())


async def _behind_a_slow_one(store: Store, *writes: Any) -> tuple[Any, list[Any]]:
    """A write that holds the connection 0.3 s, and `writes` (fn, *args) submitted while it does: what each
    returned or raised."""
    first = asyncio.create_task(run_together(store.engine, _put, 1, True, 0.3))
    await asyncio.sleep(0.1)  # it is on the connection's thread now
    rest = await asyncio.gather(*(run_together(store.engine, *w) for w in writes), return_exceptions=True)
    return await first, rest


async def test_writes_that_arrive_while_one_is_written_are_committed_together(store: Store) -> None:
    statements = await _traced(store)
    first, rest = await _behind_a_slow_one(store, *((_put, x) for x in range(2, 12)))
    assert first == 1
    assert rest == list(range(2, 12))  # each its own result, in the order they came
    assert await _rows(store) == list(range(1, 12))
    assert statements.count("BEGIN IMMEDIATE") == 2  # the slow one alone, then the ten in one transaction
    assert statements.count("COMMIT") == 2
    assert _writes(store).groups == 1


async def test_one_at_a_time_each_write_is_its_own_transaction(store: Store) -> None:
    statements = await _traced(store)
    assert [await run_together(store.engine, _put, x) for x in (1, 2, 3)] == [1, 2, 3]
    assert statements.count("BEGIN IMMEDIATE") == 3
    assert not any(s.startswith("SAVEPOINT") for s in statements)
    assert _writes(store).groups == 0


async def test_a_write_that_raises_in_a_group_fails_alone(store: Store) -> None:
    first, rest = await _behind_a_slow_one(store, (_put, 2), (_fails, 3), (_put, 4))
    assert first == 1
    assert rest[0] == 2 and rest[2] == 3  # the failed one's row was rolled back before the next counted
    assert isinstance(rest[1], ValueError) and str(rest[1]) == "refused by its own rule"
    assert await _rows(store) == [1, 2, 4]
    assert _writes(store).groups == 1


async def test_a_group_that_cannot_commit_is_written_again_one_at_a_time(store: Store) -> None:
    """A deferred foreign key is checked at the commit: the group's commit fails, nothing of it is written, and
    each write runs again alone, so only the one that breaks the rule fails."""
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        await conn.exec_driver_sql("INSERT INTO parent VALUES (1)")
        await conn.exec_driver_sql(
            "CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )
    await run_on_driver(store.engine, lambda db: db.execute("PRAGMA foreign_keys=ON"))

    def child(db: sqlite3.Connection, p: int) -> int:
        with immediate(db):
            db.execute("INSERT INTO child VALUES (?)", (p,))
        return p

    statements = await _traced(store)
    first, rest = await _behind_a_slow_one(store, (child, 1), (child, 2), (_put, 5))
    assert first == 1
    assert rest[0] == 1 and rest[2] == 2
    assert isinstance(rest[1], sqlite3.IntegrityError)  # no parent 2: it alone fails
    assert await _rows(store) == [1, 5]
    async with store.engine.connect() as conn:
        assert (await conn.exec_driver_sql("SELECT p FROM child")).scalars().all() == [1]
    assert statements.count("BEGIN IMMEDIATE") == 5  # the slow one, the group, then each of the three alone
    assert _writes(store).groups == 0


@pytest.mark.parametrize("durables", [(False, False), (False, True)], ids=["none-durable", "one-durable"])
async def test_a_group_is_committed_once_and_waits_for_the_disk(store: Store, durables: tuple[bool, ...]) -> None:
    """SQLite cannot change `synchronous` inside a transaction: a group commits as it is (FULL), whatever its writes
    asked for, in one go (not rolled back and written again one at a time)."""
    statements = await _traced(store)
    first, rest = await _behind_a_slow_one(store, *((_put, 2 + i, d) for i, d in enumerate(durables)))
    assert (first, rest) == (1, [2, 3])
    assert _writes(store).groups == 1
    group = statements[statements.index("BEGIN IMMEDIATE", statements.index("BEGIN IMMEDIATE") + 1) :]
    assert statements.count("BEGIN IMMEDIATE") == 2
    assert [s for s in group if s.startswith("SAVEPOINT")] == ["SAVEPOINT securelink_hot"] * 2
    assert not any(s.startswith("PRAGMA synchronous") for s in group[: group.index("COMMIT")])
    assert await _rows(store) == [1, 2, 3]  # each once
    assert await run_on_driver(store.engine, lambda db: int(db.execute("PRAGMA synchronous").fetchone()[0])) == 2


async def test_a_group_that_sqlite_rolled_back_whole_answers_nobody_for_a_lost_write(store: Store) -> None:
    """A full disk or an I/O error can make SQLite roll the whole transaction back, not only the failing statement:
    the writes before it in the group are gone too. None of them is told it was written; each runs again alone."""
    tries: list[int] = []

    def full_disk_once(db: sqlite3.Connection, x: int) -> int:
        with immediate(db):
            db.execute("INSERT INTO t VALUES (?)", (x,))
            tries.append(x)
            if len(tries) == 1:
                db.rollback()  # what SQLite does itself on SQLITE_FULL
                raise sqlite3.OperationalError("database or disk is full")
        return x

    first, rest = await _behind_a_slow_one(store, (_put, 2), (full_disk_once, 3), (_put, 4))
    assert first == 1
    assert rest == [2, 3, 4]  # run again alone: the disk had room by then
    assert await _rows(store) == [1, 2, 3, 4]  # 2 was not lost, and nothing was written twice
    assert _writes(store).groups == 0


async def test_a_caller_that_stops_waiting_does_not_stop_its_write(store: Store) -> None:
    first = asyncio.create_task(run_together(store.engine, _put, 1, True, 0.3))
    await asyncio.sleep(0.1)
    waiting = asyncio.create_task(run_together(store.engine, _put, 2))
    await asyncio.sleep(0)
    waiting.cancel()
    assert await first == 1
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await run_together(store.engine, _put, 3)  # after the drained group
    assert await _rows(store) == [1, 2, 3]


async def test_writes_waiting_for_a_checked_out_connection_go_together_after_it(store: Store) -> None:
    """Nobody's transaction is entered: the writes wait for the connection, then are written in one transaction."""
    async with store.engine.connect() as conn:
        await conn.exec_driver_sql("INSERT INTO t VALUES (10)")  # another user's transaction, still open
        writes = [asyncio.create_task(run_together(store.engine, _put, x)) for x in (1, 2, 3)]
        await asyncio.sleep(0.2)
        assert not any(w.done() for w in writes)
        await conn.commit()
    assert await asyncio.gather(*writes) == [2, 3, 4]
    assert await _rows(store) == [1, 2, 3, 10]
    assert _writes(store).groups == 1


def _writes(store: Store) -> Any:
    return getattr(store.engine.sync_engine, driver._IDLE).writes  # the engine's `keep_idle` state
