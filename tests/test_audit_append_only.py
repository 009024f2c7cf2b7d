"""The audit table is append-only in the database itself: every way around the UPDATE/DELETE triggers is refused."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

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
