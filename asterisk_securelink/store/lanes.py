"""Connections kept for hot statements (`Lanes`).

On PostgreSQL a few connections stay checked out of the store's pool in autocommit, so no call pays a pool checkout,
a pre-ping or BEGIN/ROLLBACK; on SQLite (its pool holds one connection, which the store's other writers need) each use
checks a connection out and commits right after its statement (the hot single statements skip that on SQLite:
`store.statements`). Two sets per process: the device API's and the
per-call keys' (`store.api_store.ApiStore`, `callkeys.store.VoucherStore`), built by the composition root, and the
admission path's transactions on asyncpg (the spend, the lease reservation, the call ends, the audit batches), which
`store.driver.run_on_asyncpg` keeps per engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

PG_LANES = 8  # connections kept for the hot statements on PostgreSQL (SQLite: none, see the module's docstring)


def lanes_for(engine: AsyncEngine) -> Lanes:
    """PG_LANES kept connections on PostgreSQL, none on SQLite."""
    return Lanes(engine, PG_LANES if engine.dialect.name == "postgresql" else 0)


def rowcount(result: Any) -> int:
    return int(result.rowcount)


class Lanes:
    """A few connections kept checked out of the engine's pool, in autocommit, each used by one task at a time
    (SQLAlchemy connections are not shared between tasks). A connection that failed or was cancelled mid-statement
    is dropped (its state is unknown) and the next use opens another; the engine's dispose closes them all. With
    `size` 0 every use checks a connection out of the pool and commits when done."""

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self._engine = engine
        self._keep = size > 0
        self._free: asyncio.LifoQueue[AsyncConnection | None] = asyncio.LifoQueue()
        for _ in range(size):
            self._free.put_nowait(None)  # opened on first use
        self._open: set[AsyncConnection] = set()
        event.listen(engine.sync_engine, "engine_disposed", self._disposed)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        if not self._keep:
            async with self._engine.begin() as conn:
                yield conn
            return
        c = await self._free.get()
        try:
            if c is None or c.closed or c.invalidated:
                c = await self._engine.connect()
                self._open.add(c)
                await c.execution_options(isolation_level="AUTOCOMMIT")
            yield c
            await c.commit()  # ends SQLAlchemy's transaction; in autocommit nothing reaches the database
        except BaseException:
            if c is not None:
                self._drop(c)
            c = None
            raise
        finally:
            self._free.put_nowait(c)

    def _drop(self, c: AsyncConnection) -> None:
        self._open.discard(c)
        task = asyncio.get_running_loop().create_task(c.invalidate())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a dead connection may fail to close

    async def close(self) -> None:
        while self._open:
            await self._open.pop().close()

    def _disposed(self, _engine: Engine) -> None:
        """`Store.close()` without `Lanes.close()` first: close the kept connections (inside the dispose's
        greenlet, so the driver's close can be awaited); nothing is left open (an aiosqlite thread would keep the
        process from exiting)."""
        while self._open:
            self._open.pop().sync_connection.invalidate()  # type: ignore[union-attr]
