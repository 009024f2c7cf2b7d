"""The audit table is append-only in the database itself: every way around the UPDATE/DELETE triggers is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from support.pg import migrated_pg_database

from asterisk_securelink.store.store import Store


async def attempt(store: Store, statement: str) -> None:
    with pytest.raises((IntegrityError, DBAPIError), match="append-only"):
        async with store.engine.begin() as conn:
            await conn.execute(text(statement))


async def test_no_statement_rewrites_or_empties_the_audit(store: Store) -> None:
    await store.audit("test", "ok", "t")
    [row] = await store.list_audit()
    forged = f"({row.id}, '2026-01-01 00:00:00', 'test', 'forged')"
    statements = ["UPDATE audit_events SET result = 'forged'", "DELETE FROM audit_events"]
    if store.engine.dialect.name == "sqlite":
        # REPLACE deletes the conflicting row without firing the delete trigger
        statements += [
            f"INSERT OR REPLACE INTO audit_events (id, created_at, action, result) VALUES {forged}",  # noqa: S608
            f"REPLACE INTO audit_events (id, created_at, action, result) VALUES {forged}",  # noqa: S608
        ]
    else:
        statements += ["TRUNCATE audit_events", "TRUNCATE TABLE audit_events RESTART IDENTITY CASCADE"]
    for statement in statements:
        await attempt(store, statement)
    assert [(e.id, e.result) for e in await store.list_audit()] == [(row.id, "ok")]
    await store.audit("test", "second", "t")  # plain inserts still work
    assert [e.result for e in await store.list_audit()] == ["ok", "second"]


async def test_an_insert_cannot_backdate_an_event_on_postgresql() -> None:
    """L5 (issue 22): the row's created_at came from the writer, so an INSERT-only role could backdate an event.
    On PostgreSQL it is now the database's clock; what the writer claimed is kept in reported_at. (PostgreSQL only:
    SQLite has no roles, whoever can write its file can rewrite anything.)"""
    async with migrated_pg_database() as url:
        store = Store.from_url(url)
        try:
            await _backdating_is_refused(store)
        finally:
            await store.close()


async def _backdating_is_refused(store: Store) -> None:
    long_ago = datetime(2001, 1, 1, tzinfo=UTC)
    await store.audit("test", "ok", "t", created_at=long_ago)  # the application's own path
    async with store.engine.begin() as conn:  # and a raw INSERT as an INSERT-only role would write it
        await conn.execute(text("INSERT INTO audit_events (created_at, action, result) "
                                "VALUES ('2001-01-01 00:00:00+00', 'test', 'raw')"))  # fmt: skip
        db_now = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    rows = await store.list_audit()
    assert [e.result for e in rows] == ["ok", "raw"]
    for e in rows:
        assert abs((e.created_at - db_now).total_seconds()) < 60, e.created_at
        assert e.reported_at == long_ago
