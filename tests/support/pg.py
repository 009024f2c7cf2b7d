"""Test databases on the PostgreSQL server named by SECURELINK_TEST_DATABASE_URL: one fresh database per use.

`migrated_pg_database` is the one way a test gets a migrated PostgreSQL database (the `db_url` fixture in
conftest.py and the two-process race use it); `create_pg_database` alone gives an empty one, `empty_pg_database` one
for a test's own `securelink run` processes.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from asterisk_securelink.config import async_database_url

PG_ENV = "SECURELINK_TEST_DATABASE_URL"


def pg_admin_url() -> str | None:
    url = os.environ.get(PG_ENV)
    return async_database_url(url, Path.cwd()) if url else None


async def _admin(statement: str) -> None:
    """Run one statement on the test server's admin database (CREATE/DROP DATABASE cannot run in a transaction)."""
    import asyncpg

    admin = make_url(pg_admin_url() or "")
    conn = await asyncpg.connect(
        host=admin.host, port=admin.port or 5432, user=admin.username, password=admin.password, database=admin.database
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def create_pg_database() -> str:
    """A fresh, empty PostgreSQL database on the test server; returns its async URL."""
    name = "securelink_t_" + secrets.token_hex(6)
    await _admin(f'CREATE DATABASE "{name}"')
    return make_url(pg_admin_url() or "").set(database=name).render_as_string(hide_password=False)


async def drop_pg_database(url: str) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


@contextmanager
def empty_pg_database() -> Iterator[str]:
    """For a process started by the test (`securelink run` on PostgreSQL): a fresh, empty database, its plain
    `postgresql://` URL (the config's form), dropped on the way out. Fails when no test server is configured."""
    if pg_admin_url() is None:
        raise AssertionError(f"{PG_ENV} must point at the test PostgreSQL server")
    url = asyncio.run(create_pg_database())
    try:
        yield url.replace("postgresql+asyncpg://", "postgresql://")
    finally:
        asyncio.run(drop_pg_database(url))


@asynccontextmanager
async def migrated_pg_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database at the schema's head, dropped on the way out; yields its async URL."""
    from asterisk_securelink.store.migrations import upgrade

    url = await create_pg_database()
    try:
        await upgrade(url)
        yield url
    finally:
        await drop_pg_database(url)
