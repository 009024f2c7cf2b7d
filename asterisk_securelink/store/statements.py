"""One hot Core statement at a time, the cheapest way the store's driver allows: the device API's reads and writes
(`store.api_store.ApiStore`) and the per-call keys' (`callkeys.store.VoucherStore`).

- **SQLite**: straight on aiosqlite's thread (`store.driver`): a read is one hand-off with no pool check-out
  (`run_on_driver`), a write is one durable transaction in the group commit of the hot writes (`run_together`), so
  the claims, nonces and vouchers that arrive together share one commit with each other and with the admissions'.
  Through SQLAlchemy on aiosqlite each statement was a check-out, a BEGIN, the statement, its fetch and a COMMIT,
  each a round trip to that thread while holding the engine's one connection: at 200 claims a second (five such
  transactions each) the connection was busy all the time and the claims queued for seconds (docs/benchmarks.md,
  "Issue 24, eighth round").
- **PostgreSQL** (or any other driver): on one of the process's kept connections (`Lanes.connection`), as before.

Rows are named tuples with the statement's column keys, each value converted by its column type as SQLAlchemy's
result would be, and a failure is SQLAlchemy's exception of the same kind (`IntegrityError`, `OperationalError`, ...,
without the statement's parameters), so callers see what the generic path gives them. A statement with expanding
parameters (`IN` a list) is not for this module.
"""

from __future__ import annotations

import functools
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Select

from asterisk_securelink.store.driver import (
    NOT_RUN,
    Positional,
    immediate,
    positional,
    run_on_driver,
    run_together,
    sqlite_as_sqlalchemy,
)
from asterisk_securelink.store.lanes import Lanes, rowcount


async def rows(lanes: Lanes, stmt: Select[*tuple[Any, ...]], values: Mapping[str, Any]) -> list[Any]:
    """Every row `stmt` selects."""
    engine = lanes.engine
    if engine.dialect.name == "sqlite":
        shape, p = _shape(stmt, engine.dialect), positional(stmt, engine.dialect)
        try:
            got = await run_on_driver(engine, _fetch, p, values)
        except sqlite3.Error as exc:
            raise sqlite_as_sqlalchemy(exc, p.sql) from exc
        if got is not NOT_RUN:
            return [shape(r) for r in got]
    return await _rows_on_lane(lanes, stmt, values)


async def first(lanes: Lanes, stmt: Select[*tuple[Any, ...]], values: Mapping[str, Any]) -> Any | None:
    """The first row `stmt` selects, or None."""
    found = await rows(lanes, stmt, values)
    return found[0] if found else None


async def write(lanes: Lanes, stmt: Executable, values: Mapping[str, Any]) -> int:
    """Run `stmt` (an INSERT, UPDATE or DELETE) in a transaction of its own, committed durably; the rows it
    changed."""
    engine = lanes.engine
    if engine.dialect.name == "sqlite":
        p = positional(stmt, engine.dialect)
        try:
            done = await run_together(engine, _write, p, values)
        except sqlite3.Error as exc:
            raise sqlite_as_sqlalchemy(exc, p.sql) from exc
        if done is not NOT_RUN:
            return int(done)
    return await _write_on_lane(lanes, stmt, values)


# -- the generic path: SQLAlchemy on a kept connection (a checked-out one on SQLite) -----------------------------
async def _rows_on_lane(lanes: Lanes, stmt: Select[*tuple[Any, ...]], values: Mapping[str, Any]) -> list[Any]:
    async with lanes.connection() as c:
        return list(await c.execute(stmt, values))


async def _write_on_lane(lanes: Lanes, stmt: Executable, values: Mapping[str, Any]) -> int:
    async with lanes.connection() as c:
        return rowcount(await c.execute(stmt, values))


# -- on aiosqlite's thread -----------------------------------------------------------------------------------------
def _fetch(db: sqlite3.Connection, p: Positional, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    return p.execute(db, values).fetchall()


def _write(db: sqlite3.Connection, p: Positional, values: Mapping[str, Any]) -> int:
    with immediate(db):
        return p.execute(db, values).rowcount


@functools.lru_cache(maxsize=256)  # the module's statements are built once; this bounds any made per call
def _shape(stmt: Select[*tuple[Any, ...]], dialect: Dialect) -> Callable[[tuple[Any, ...]], Any]:
    """A row of `stmt` as SQLite returns it -> a named tuple of its column keys, each value through its column type's
    result processor (e.g. a Boolean's 0/1 to False/True)."""
    columns = list(stmt.selected_columns)
    row = namedtuple("row", [c.key for c in columns])  # type: ignore[misc]
    convert = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]
    if not any(convert):
        return lambda raw: row._make(raw)
    return lambda raw: row._make(v if f is None else f(v) for f, v in zip(convert, raw, strict=True))
