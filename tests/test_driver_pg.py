"""`store.driver.run_on_asyncpg` on a real PostgreSQL: errors as SQLAlchemy raises them on the generic path, and a
connection whose state is unknown never reaches the next user."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine
from support.pg import migrated_pg_database, pg_admin_url

from asterisk_securelink.store.driver import NOT_RUN, run_on_asyncpg
from asterisk_securelink.store.store import make_engine

pytestmark = pytest.mark.skipif(pg_admin_url() is None, reason="SECURELINK_TEST_DATABASE_URL not set")


@pytest.fixture
async def engine() -> AsyncIterator[AsyncEngine]:
    async with migrated_pg_database() as url:
        e = make_engine(url)
        async with e.begin() as c:
            await c.exec_driver_sql("CREATE TABLE t (x integer PRIMARY KEY)")
        try:
            yield e
        finally:
            await e.dispose()


async def backend(conn: Any) -> int:
    return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def rows(conn: Any) -> int:
    assert not conn.is_in_transaction()
    return int(await conn.fetchval("SELECT count(*) FROM t"))


async def test_a_constraint_is_sqlalchemys_integrity_error_and_the_connection_is_kept(engine: AsyncEngine) -> None:
    first = await run_on_asyncpg(engine, backend)

    async def twice(conn: Any) -> None:
        async with conn.transaction():
            await conn.execute("INSERT INTO t VALUES (1)")
            await conn.execute("INSERT INTO t VALUES (1)")

    with pytest.raises(IntegrityError) as caught:
        await run_on_asyncpg(engine, twice)
    assert type(caught.value.orig).__name__ == "UniqueViolationError"
    assert await run_on_asyncpg(engine, backend) == first  # rolled back by its own transaction: back in the pool
    assert await run_on_asyncpg(engine, rows) == 0


async def test_a_missing_table_is_a_programming_error(engine: AsyncEngine) -> None:
    async def missing(conn: Any) -> None:
        await conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(ProgrammingError):
        await run_on_asyncpg(engine, missing)


async def test_a_transaction_left_open_is_never_handed_on(engine: AsyncEngine) -> None:
    first = await run_on_asyncpg(engine, backend)

    async def left_open(conn: Any) -> None:
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO t VALUES (2)")
        raise RuntimeError("a bug between two statements")

    with pytest.raises(RuntimeError):
        await run_on_asyncpg(engine, left_open)
    assert await run_on_asyncpg(engine, backend) != first  # that connection was dropped
    assert await run_on_asyncpg(engine, rows) == 0  # and its insert never committed


async def test_a_statement_cancelled_half_way_drops_its_connection(engine: AsyncEngine) -> None:
    first = await run_on_asyncpg(engine, backend)

    async def slow(conn: Any) -> None:
        async with conn.transaction():
            await conn.execute("INSERT INTO t VALUES (3)")
            await conn.execute("SELECT pg_sleep(5)")

    task = asyncio.create_task(run_on_asyncpg(engine, slow))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await run_on_asyncpg(engine, backend) != first
    assert await run_on_asyncpg(engine, rows) == 0


async def test_a_lost_server_is_an_operational_error(engine: AsyncEngine) -> None:
    async def killed(conn: Any) -> None:
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    with pytest.raises(OperationalError):
        await run_on_asyncpg(engine, killed)
    assert await run_on_asyncpg(engine, rows) == 0  # the next use gets a working connection


async def test_another_driver_is_not_run(tmp_path: Any) -> None:
    sqlite = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        assert await run_on_asyncpg(sqlite, backend) is NOT_RUN
    finally:
        await sqlite.dispose()


async def test_kept_connections_are_reused_and_one_the_server_closed_is_replaced_unseen(engine: AsyncEngine) -> None:
    first = await run_on_asyncpg(engine, backend)
    assert await run_on_asyncpg(engine, backend) == first  # kept: no check-out, no new session
    async with engine.connect() as other:  # the server ends that session while it is idle (a restart, an admin)
        await other.exec_driver_sql(f"SELECT pg_terminate_backend({first})")
    await asyncio.sleep(0.2)
    assert await run_on_asyncpg(engine, rows) == 0  # no error for the call that comes next
    assert await run_on_asyncpg(engine, backend) != first
