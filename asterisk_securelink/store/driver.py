"""Whole hot transactions in the database driver's own terms: one hand-off per transaction on SQLite, no SQLAlchemy
execution machinery per statement on PostgreSQL.

- **SQLite** (`run_on_driver`): through SQLAlchemy on aiosqlite every statement, fetch, cursor and commit is one
  hand-off between the event loop and the driver's thread, and each waits for the GIL behind whatever the loop is
  doing: the profile of issue 24 found a third of the event loop's busy time in those hand-offs
  (`aiosqlite.Connection._execute`). A hot transaction written as one function and run here costs one hand-off.
  While the engine's one connection lies unused in the pool (`keep_idle`), it also costs no check-out: SQLAlchemy's
  check-out and check-in took ~0.4 ms of the loop's time per transaction, more than the hand-off itself.
- **PostgreSQL** (`run_on_asyncpg`): through SQLAlchemy's asyncpg adaptation a statement costs the client about three
  times the CPU it costs on asyncpg itself (measured: a lease reservation 1.14 ms against 0.44 ms of client CPU on
  one connection). A hot transaction written as one coroutine runs on the checked-out connection's asyncpg
  connection, its statements prepared and cached by asyncpg.

`positional` compiles a Core statement once per dialect into the SQL and argument order those functions run (`?` for
SQLite, `$n` for asyncpg), so the statements stay the Core ones (one source for every path) and their column types
still convert the values (e.g. `UTCDateTime`).

When the driver is not the one known, both return `NOT_RUN` and the caller takes its generic path (slower, same
result).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn, cast

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from asterisk_securelink.errors import SecureLinkError
from asterisk_securelink.store.lanes import Lanes

log = logging.getLogger(__name__)

NOT_RUN: Final = object()  # `run_on_driver`, `run_on_asyncpg`: the driver is not the one known


def on_driver_thread(raw: Any) -> Callable[..., Any] | None:
    """`run(fn, *args)`: call `fn(sqlite3_connection, *args)` on aiosqlite's connection thread and await it; None when
    the driver is not aiosqlite as known. A transaction `fn` leaves open is rolled back there, before anything else
    runs on the connection."""
    driver = getattr(raw, "driver_connection", None)
    execute = getattr(driver, "_execute", None)
    if driver is None or execute is None or not hasattr(type(driver), "_conn"):
        return None

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        return await execute(_whole, fn, driver._conn, args)

    return run


def _whole(fn: Callable[..., Any], db: sqlite3.Connection, args: tuple[Any, ...]) -> Any:
    try:
        return fn(db, *args)
    finally:
        if db.in_transaction:  # `fn` ends its own transaction; one left open must not reach the next user
            db.rollback()


async def run_on_driver(engine: AsyncEngine, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(sqlite3_connection, *args)` on the thread of `engine`'s connection (it begins and ends its own
    transaction), or `NOT_RUN`. While that connection lies unused in the pool (`keep_idle`), straight on its thread:
    queued there before any statement of a later check-out, so `fn` runs whole before it, and no check-out is paid
    (~0.4 ms of the loop's time here, more than a transaction's own work). Otherwise checked out like any other use."""
    idle: _Idle | None = getattr(engine.sync_engine, _IDLE, None)
    run = idle.usable() if idle is not None else None
    if run is not None:
        return await run(fn, *args)
    async with engine.connect() as conn:
        run = on_driver_thread(await conn.get_raw_connection())
        if run is None:
            return NOT_RUN
        return await run(fn, *args)


async def run_together(engine: AsyncEngine, fn: Callable[..., Any], *args: Any) -> Any:
    """`run_on_driver`, as a group commit: the hot transactions that arrive while one is being written on the
    engine's connection are then written together, in one transaction (one commit, one wait for the disk), each
    returning its own result or raising its own error. At one transaction at a time nothing waits. `fn` writes only
    inside `immediate` (in a group its block is a savepoint) and may run again: when a group's transaction cannot
    begin or commit, nothing of it was written, and each of its members runs again alone, so one that cannot be
    written fails alone and loses nothing else. Engines without `keep_idle`: `run_on_driver`."""
    idle: _Idle | None = getattr(engine.sync_engine, _IDLE, None)
    if idle is None:
        return await run_on_driver(engine, fn, *args)
    return await idle.writes.submit(engine, fn, args)


def settle(done: asyncio.Future[Any], exc: BaseException | None, result: Any = None) -> None:
    """Give a waiter its outcome, unless it stopped waiting (cancelled)."""
    if done.done():
        return
    if exc is None:
        done.set_result(result)
    else:
        done.set_exception(exc)
        done.exception()  # retrieved: a caller that was cancelled meanwhile leaves no "never retrieved" warning


class _Writes:
    """The hot transactions waiting while one is written on an SQLite engine's connection (`run_together`);
    `groups` counts the transactions that wrote more than one."""

    def __init__(self) -> None:
        self.groups = 0
        self._busy = False
        self._waiting: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = []
        self._drain: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, engine: AsyncEngine, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (the last one ended while a write was in flight): start afresh
            self._loop, self._busy, self._waiting = loop, False, []
        if self._busy:
            done: asyncio.Future[Any] = loop.create_future()
            self._waiting.append((fn, args, done))
            return await done
        self._busy = True  # nothing is being written: this one at once, alone, as `run_on_driver`
        try:
            return await run_on_driver(engine, fn, *args)
        finally:
            if self._waiting:  # those that came meanwhile, together
                self._drain = asyncio.create_task(self._write_waiting(engine), name="securelink-hot-writes")
            else:
                self._busy = False

    async def _write_waiting(self, engine: AsyncEngine) -> None:
        batch: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._write(engine, batch)
                batch = []
        finally:
            left, self._waiting, self._busy = [*batch, *self._waiting], [], False
            for *_, done in left:  # only when this task was stopped (the app shuts down): nothing is left waiting
                settle(done, SecureLinkError("the database writer stopped"))

    async def _write(
        self, engine: AsyncEngine, batch: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]]
    ) -> None:
        if len(batch) > 1:
            try:
                outcomes = await run_on_driver(engine, _together, [(fn, args) for fn, args, _ in batch])
            except Exception as exc:  # noqa: BLE001 - nothing was written: then each alone
                log.warning("%d database writes not committed together (%s); one at a time", len(batch),
                            type(exc).__name__)  # fmt: skip
            else:
                if outcomes is NOT_RUN:  # not aiosqlite after all: each caller takes its generic path
                    outcomes = [(True, NOT_RUN)] * len(batch)
                else:
                    self.groups += 1
                for (ok, value), (*_, done) in zip(outcomes, batch, strict=True):
                    settle(done, None if ok else value, value if ok else None)
                return
        for fn, args, done in batch:
            try:
                result = await run_on_driver(engine, fn, *args)
            except Exception as exc:  # noqa: BLE001 - handed to its own caller
                settle(done, exc)
            else:
                settle(done, None, result)


_IDLE: Final = "_securelink_idle_connection"


class _Idle:
    """The one connection of an SQLite engine's pool while it is checked in (`keep_idle`)."""

    def __init__(self) -> None:
        self._driver: Any = None  # aiosqlite's connection; None while checked out, closed, invalidated, or not made
        self._run: Callable[..., Any] | None = None
        self.writes = _Writes()

    def usable(self) -> Callable[..., Any] | None:
        """`on_driver_thread`'s `run` for the idle connection, or None (then check one out)."""
        driver = self._driver
        if driver is None or not getattr(driver, "_running", False) or getattr(driver, "_connection", None) is None:
            return None
        return self._run

    def checked_in(self, dbapi_conn: Any, _record: Any) -> None:
        self._run = on_driver_thread(dbapi_conn) if dbapi_conn is not None else None
        self._driver = getattr(dbapi_conn, "driver_connection", None) if self._run is not None else None

    def gone(self, *_args: Any) -> None:
        self._driver = self._run = None


def keep_idle(engine: AsyncEngine) -> None:
    """Lets `run_on_driver` use the connection of `engine` (SQLite on aiosqlite, a pool of one: `store.make_engine`)
    without a check-out while it is checked in. The pool's events keep track of it; they fire on the loop's thread, in
    order with the check-outs they describe, and aiosqlite runs what is queued on its thread in order."""
    sync = engine.sync_engine
    idle = _Idle()
    event.listen(sync, "checkin", idle.checked_in)
    for name in ("checkout", "close", "invalidate", "soft_invalidate", "detach"):
        event.listen(sync, name, idle.gone)
    setattr(sync, _IDLE, idle)  # an attribute of our own on SQLAlchemy's object


async def run_fast(
    engine: AsyncEngine,
    on_sqlite: Callable[..., Any],
    on_asyncpg: Callable[..., Awaitable[Any]],
    *args: Any,
    together: bool = False,
) -> Any:
    """One hot transaction in the engine's driver's own terms: `on_sqlite(sqlite3_connection, *args)` on aiosqlite's
    thread (`run_on_driver`; `together`: `run_together`, a group commit) or `await on_asyncpg(asyncpg_connection,
    *args)` (`run_on_asyncpg`); `NOT_RUN` for any other driver."""
    if engine.dialect.name == "sqlite":
        return await (run_together if together else run_on_driver)(engine, on_sqlite, *args)
    if engine.dialect.name == "postgresql":
        return await run_on_asyncpg(engine, on_asyncpg, *args)
    return NOT_RUN


SQLITE_SYNCHRONOUS: Final = "FULL"  # every SQLite connection (`store.make_engine`): commits wait for the disk


@contextlib.contextmanager
def immediate(db: sqlite3.Connection, *, durable: bool = True) -> Iterator[None]:
    """An SQLite write transaction taken before any read (`BEGIN IMMEDIATE`: the one writer's lock), committed when
    the block ends, rolled back when it raises. `durable=False`: committed without waiting for the disk
    (`synchronous=NORMAL` for this transaction alone, then FULL again): still atomic and at once visible, and made
    durable by the next durable commit (the write-ahead log is synced whole); a power cut before that loses it
    (docs/decisions.md, "Which commits wait for the disk").

    Inside a group (`run_together`) the block is a savepoint of the group's transaction instead: rolled back alone
    when it raises, committed with the group. A group always waits for the disk (SQLite cannot change `synchronous`
    inside a transaction): as durable as asked, or more."""
    if getattr(_ON_THREAD, "db", None) is db:
        db.execute("SAVEPOINT securelink_hot")
        try:
            yield
        except BaseException:
            if db.in_transaction:  # else SQLite rolled the whole group back itself (a full disk): `_together` sees it
                db.execute("ROLLBACK TO securelink_hot")
                db.execute("RELEASE securelink_hot")
            raise
        db.execute("RELEASE securelink_hot")
        return
    if not durable:
        db.execute("PRAGMA synchronous=NORMAL")
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.rollback()
            raise
        db.commit()
    finally:
        if not durable:
            db.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")


_ON_THREAD = threading.local()  # `db`: the connection whose group `_together` runs on this thread


def _together(db: sqlite3.Connection, members: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
    """`members` in one durable transaction (`run_together`): each `fn(db, *args)` in turn, its `immediate` block a
    savepoint; `[(True, result) | (False, exception)]` in their order once the group has committed. Raises, nothing
    of it committed, when the transaction cannot begin or commit, or when SQLite rolled it back whole on its own (a
    full disk, an I/O error): no member is answered for a write that is not there."""
    _ON_THREAD.db = db
    try:
        db.execute("BEGIN IMMEDIATE")
        outcomes: list[Any] = []
        for fn, args in members:
            try:
                outcomes.append((True, fn(db, *args)))
            except Exception as exc:  # noqa: BLE001 - this member's own outcome; its savepoint is rolled back
                outcomes.append((False, exc))
            if not db.in_transaction:  # the members before it were rolled back too: and a SAVEPOINT now would
                raise sqlite3.OperationalError("the group's transaction was rolled back")  # begin a new one
        db.commit()
        return outcomes
    finally:
        _ON_THREAD.db = None
        if db.in_transaction:
            db.rollback()


async def not_durable(conn: Any) -> None:
    """PostgreSQL's `durable=False` for the transaction open on asyncpg connection `conn`: its commit does not wait
    for the WAL flush (`synchronous_commit` off, this transaction alone), as `immediate` does on SQLite."""
    await conn.execute("SET LOCAL synchronous_commit TO OFF")


HOT_LANES = 4  # connections each PostgreSQL engine keeps for its hot transactions (`store.lanes.Lanes`)


async def run_on_asyncpg(engine: AsyncEngine, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """`await fn(asyncpg_connection, *args)` on one of the connections `engine` keeps for its hot transactions (no pool
    check-out, no pre-ping; `fn` begins and ends its own transaction, e.g. `async with conn.transaction()`), or
    `NOT_RUN` when the driver is not asyncpg. A connection the server closed is replaced before use. One left in a
    transaction, closed, or cancelled half way is dropped (its state is unknown); after an ordinary database error (a
    constraint) `fn`'s transaction was rolled back and the connection is kept. asyncpg's errors are raised as
    SQLAlchemy's."""
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "asyncpg":
        return NOT_RUN
    lanes = _hot_lanes(engine)
    for _ in range(HOT_LANES + 1):  # every kept connection may have been closed by a restart of the server
        try:
            return await _run_on_lane(lanes, fn, args)
        except _Stale:
            continue
    raise sa_exc.OperationalError(None, None, ConnectionError("no working connection to PostgreSQL"))


class _Stale(SecureLinkError):
    """A kept connection the server closed before this use: dropped, and the next one tried."""


async def _run_on_lane(lanes: Lanes, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
    failed: Exception
    async with lanes.connection() as conn:  # leaving it by an exception drops the connection
        driver: Any = (await conn.get_raw_connection()).driver_connection
        if driver.is_closed():
            raise _Stale
        try:
            return await fn(driver, *args)
        except Exception as exc:  # noqa: BLE001 - raised again below, translated
            if driver.is_closed() or driver.is_in_transaction():
                _raise(exc)
            failed = exc  # raised once the connection is back
    _raise(failed)


def _raise(exc: Exception) -> NoReturn:
    error = _as_sqlalchemy_error(exc)
    if error is None:
        raise exc
    raise error from exc


def _hot_lanes(engine: AsyncEngine) -> Lanes:
    """The engine's kept connections, made at its first hot transaction; its dispose closes them (`Lanes`). Held by
    the synchronous engine, which every `AsyncEngine` proxy of it shares."""
    sync = engine.sync_engine
    lanes: Lanes | None = getattr(sync, "_securelink_hot_lanes", None)
    if lanes is None:
        lanes = Lanes(engine, HOT_LANES)
        setattr(sync, "_securelink_hot_lanes", lanes)  # noqa: B010 - an attribute of our own on SQLAlchemy's object
    return lanes


def _as_sqlalchemy_error(exc: BaseException) -> sa_exc.DBAPIError | None:
    """asyncpg's error as SQLAlchemy raises it on the generic path (what callers sort errors by: a constraint, bad
    data, a missing grant, a lost connection), or None for anything else."""
    import asyncpg.exceptions as pg_errors  # only PostgreSQL stores get here

    kind: type[sa_exc.DBAPIError]
    if isinstance(exc, pg_errors.IntegrityConstraintViolationError):
        kind = sa_exc.IntegrityError
    elif isinstance(exc, pg_errors.DataError):
        kind = sa_exc.DataError
    elif isinstance(exc, pg_errors.SyntaxOrAccessError):
        kind = sa_exc.ProgrammingError
    elif isinstance(exc, pg_errors.PostgresError | pg_errors.InterfaceError | OSError):
        kind = sa_exc.OperationalError
    else:
        return None
    return kind(None, None, exc)


_SQLITE_KINDS: tuple[tuple[type[sqlite3.Error], type[sa_exc.DBAPIError]], ...] = (  # PEP 249's, narrowest first
    (sqlite3.IntegrityError, sa_exc.IntegrityError),
    (sqlite3.DataError, sa_exc.DataError),
    (sqlite3.ProgrammingError, sa_exc.ProgrammingError),
    (sqlite3.OperationalError, sa_exc.OperationalError),
    (sqlite3.InternalError, sa_exc.InternalError),
    (sqlite3.NotSupportedError, sa_exc.NotSupportedError),
    (sqlite3.DatabaseError, sa_exc.DatabaseError),
    (sqlite3.InterfaceError, sa_exc.InterfaceError),
)


def sqlite_as_sqlalchemy(exc: sqlite3.Error, sql: str) -> sa_exc.DBAPIError:
    """sqlite3's error as SQLAlchemy raises it on the generic path (`store.statements`), its parameters left out
    (they may be sealed keys)."""
    kind = next((sa for raw, sa in _SQLITE_KINDS if isinstance(exc, raw)), sa_exc.DBAPIError)
    return kind(sql, None, exc)


@dataclass(frozen=True)
class Positional:
    """A Core statement as the driver runs it: `sql` with its positional placeholders (SQLite's `?`, asyncpg's `$n`),
    filled by `args(values)` in order, each value converted by its column type's bind processor. `execute` and
    `executemany` run it on sqlite3, `fetchrow`, `fetch` and `executemany_pg` on asyncpg."""

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

    async def fetchrow(self, conn: Any, values: Mapping[str, Any]) -> Any:
        """asyncpg: the first row, or None."""
        return await conn.fetchrow(self.sql, *self.args(values))

    async def fetch(self, conn: Any, values: Mapping[str, Any]) -> list[Any]:
        """asyncpg: every row."""
        return list(await conn.fetch(self.sql, *self.args(values)))

    async def executemany_pg(self, conn: Any, rows: Iterable[Mapping[str, Any]]) -> None:
        """asyncpg: one statement for every row (nothing when there is none)."""
        batch = [self.args(r) for r in rows]
        if batch:
            await conn.executemany(self.sql, batch)


@functools.cache
def positional(statement: ClauseElement, dialect: Dialect) -> Positional:
    """`statement` (no expanding parameters) compiled for `dialect` (SQLite or asyncpg), once per statement and
    dialect."""
    compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
    names = tuple(compiled.positiontup or ())
    binds = {b.key: b for b in compiled.binds.values()}
    processors = tuple(binds[n].type.bind_processor(dialect) if n in binds else None for n in names)
    fixed = {name: value for name, value in compiled.params.items() if value is not None}  # unbound ones: KeyError
    return Positional(str(compiled), names, processors, fixed)
