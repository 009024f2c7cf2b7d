"""Whole SQLite transactions on aiosqlite's own connection thread.

Through SQLAlchemy on aiosqlite every statement, fetch, cursor and commit is one hand-off between the event loop and
the driver's thread, and each waits for the GIL behind whatever the loop is doing: the profile of issue 24 found a
third of the event loop's busy time in those hand-offs (`aiosqlite.Connection._execute`). A hot transaction written
as one function and run here costs one hand-off. `qmark` compiles a Core statement once into the SQL and argument
order that function runs, so the statements stay the Core ones (one source for both paths) and their column types
still convert the values (e.g. `UTCDateTime`).

When the driver is not aiosqlite as known, `run_on_driver` returns `NOT_RUN` and the caller takes its generic path
(slower, same result).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

NOT_RUN: Final = object()  # `run_on_driver`: the driver is not aiosqlite as known


def on_driver_thread(raw: Any) -> Callable[..., Any] | None:
    """`run(fn, *args)`: call `fn(sqlite3_connection, *args)` on aiosqlite's connection thread and await it; None when
    the driver is not aiosqlite as known."""
    driver = getattr(raw, "driver_connection", None)
    execute = getattr(driver, "_execute", None)
    if driver is None or execute is None or not hasattr(type(driver), "_conn"):
        return None

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        return await execute(lambda: fn(driver._conn, *args))

    return run


async def run_on_driver(engine: AsyncEngine, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(sqlite3_connection, *args)` on the thread of a connection checked out of `engine`'s pool (it begins and
    ends its own transaction), or `NOT_RUN`."""
    async with engine.connect() as conn:
        run = on_driver_thread(await conn.get_raw_connection())
        if run is None:
            return NOT_RUN
        return await run(fn, *args)


@dataclass(frozen=True)
class Qmark:
    """A Core statement as SQLite runs it: `sql` with `?` placeholders, filled by `args(values)` in order, each value
    converted by its column type's bind processor."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    fixed: Mapping[str, Any]  # the statement's own values (e.g. a LIMIT's), taken when `values` lacks them

    def args(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        got = (values[n] if n in values else self.fixed[n] for n in self.names)
        return tuple(v if p is None else p(v) for p, v in zip(self.processors, got, strict=True))

    def execute(self, db: sqlite3.Connection, values: Mapping[str, Any]) -> sqlite3.Cursor:
        return db.execute(self.sql, self.args(values))

    def executemany(self, db: sqlite3.Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        db.executemany(self.sql, [self.args(r) for r in rows])


@functools.cache
def qmark(statement: ClauseElement, dialect: Dialect) -> Qmark:
    """`statement` (no expanding parameters) compiled for SQLite, once per statement and dialect."""
    compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
    names = tuple(compiled.positiontup or ())
    binds = {b.key: b for b in compiled.binds.values()}
    processors = tuple(binds[n].type.bind_processor(dialect) if n in binds else None for n in names)
    fixed = {name: value for name, value in compiled.params.items() if value is not None}  # unbound ones: KeyError
    return Qmark(str(compiled), names, processors, fixed)
