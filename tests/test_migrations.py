"""The Alembic migrations build exactly the schema the models declare (on SQLite and PostgreSQL), and the latest
revision downgrades and upgrades again."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from alembic import command
from asterisk_securelink.core.slk1 import Direction
from asterisk_securelink.store import api_models, intent_models, route_models  # noqa: F401 - their tables on Base
from asterisk_securelink.store.migrations import alembic_config, head_revision
from asterisk_securelink.store.models import Base
from asterisk_securelink.store.store import Store


def _diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(ctx, Base.metadata))


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def test_the_migrated_schema_is_the_models_schema(db_url: str) -> None:
    store = Store.from_url(db_url)
    try:
        assert await store.schema_revision() == head_revision()
        async with store.engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await store.close()


async def test_intents_migration_downgrades_and_upgrades(db_url: str) -> None:
    cfg = alembic_config(db_url)
    await asyncio.to_thread(command.downgrade, cfg, "0006")
    store = Store.from_url(db_url)
    try:
        async with store.engine.connect() as conn:
            tables = await conn.run_sync(_tables)
        assert "call_intents" not in tables and "intent_noise" not in tables
        assert "call_vouchers" in tables  # 0006 stays
        await asyncio.to_thread(command.upgrade, cfg, "head")
        async with store.engine.connect() as conn:
            assert {"call_intents", "intent_noise"} <= await conn.run_sync(_tables)
            assert await conn.run_sync(_diff) == []
    finally:
        await store.close()


def _columns(conn: Connection, table: str) -> set[str]:
    return {c["name"] for c in inspect(conn).get_columns(table)}


async def test_routing_migration_downgrades_and_upgrades_keeping_rows(db_url: str) -> None:
    """0008 adds columns to devices and call_records: rows written before survive the way down and up again."""
    assert head_revision() == "0009"
    cfg = alembic_config(db_url)
    store = Store.from_url(db_url)
    try:
        device = await store.add_device("Alice", "+15550001111", "PJSIP/1001", "dev-0001", "test")
        await store.update_device(device.id, "device.set", "test", context="from-desk", home="hangup")
        await asyncio.to_thread(command.downgrade, cfg, "0007")
        async with store.engine.connect() as conn:
            tables = await conn.run_sync(_tables)
            devices = await conn.run_sync(_columns, "devices")
            records = await conn.run_sync(_columns, "call_records")
        assert "call_leases" not in tables and "route_spends" not in tables
        assert {"context", "callerid", "home"}.isdisjoint(devices) and "key_id" in devices
        assert {"method", "caller", "destination", "node"}.isdisjoint(records) and "legs" in records
        assert "call_intents" in tables  # 0007 stays
        await asyncio.to_thread(command.upgrade, cfg, "head")
        async with store.engine.connect() as conn:
            assert {"call_leases", "route_spends"} <= await conn.run_sync(_tables)
            assert await conn.run_sync(_diff) == []
        again = await store.get_device(device.id)
        assert again is not None and again.key_id == "dev-0001" and again.context is None  # the column came back empty
        assert (await store.key_epoch(device.id, Direction.INBOUND)) is not None  # no cascade lost the epochs
    finally:
        await store.close()
