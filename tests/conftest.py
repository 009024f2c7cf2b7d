"""Shared fixtures: real databases (SQLite always; PostgreSQL when SECURELINK_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pgutil import create_pg_database, drop_pg_database, pg_admin_url

from asterisk_securelink.store.migrations import upgrade
from asterisk_securelink.store.store import Store

MASTER = bytes(range(32))


def _backends() -> list[str]:
    return ["sqlite", "postgresql"] if pg_admin_url() else ["sqlite"]


@pytest.fixture(params=_backends())
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty, migrated database of each available backend."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'test.sqlite3'}"
        await upgrade(url)
        yield url
    else:
        url = await create_pg_database()
        try:
            await upgrade(url)
            yield url
        finally:
            await drop_pg_database(url)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = Store.from_url(db_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def master() -> bytes:
    return MASTER


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in list(os.environ):
        if var.startswith("SECURELINK_"):
            monkeypatch.delenv(var)
    yield
