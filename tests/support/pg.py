"""Test databases on the PostgreSQL server named by SECURELINK_TEST_DATABASE_URL: one fresh database per use.

`migrated_pg_database` is the one way a test gets a migrated PostgreSQL database (the `db_url` fixture in
conftest.py and the two-process race use it); `create_pg_database` alone gives an empty one.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from asterisk_securelink.config import async_database_url

PG_ENV = "SECURELINK_TEST_DATABASE_URL"


def pg_admin_url() -> str | None:
    url = os.environ.get(PG_ENV)
    return async_database_url(url, Path.cwd()) if url else None


async def create_pg_database() -> str:
    """A fresh, empty PostgreSQL database on the test server; returns its async URL."""
    import asyncpg

    admin = make_url(pg_admin_url() or "")
    name = "securelink_t_" + secrets.token_hex(6)
    conn = await asyncpg.connect(
        host=admin.host, port=admin.port or 5432, user=admin.username, password=admin.password, database=admin.database
    )
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin.set(database=name).render_as_string(hide_password=False)


async def drop_pg_database(url: str) -> None:
    import asyncpg

    admin = make_url(pg_admin_url() or "")
    name = make_url(url).database
    conn = await asyncpg.connect(
        host=admin.host, port=admin.port or 5432, user=admin.username, password=admin.password, database=admin.database
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


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
