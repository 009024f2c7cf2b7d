"""Shared fixtures: real databases (SQLite always; PostgreSQL when SECURELINK_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support.ami import FakeAmi
from support.keys import MASTER
from support.pg import migrated_pg_database, pg_admin_url

from asterisk_securelink.store.migrations import upgrade
from asterisk_securelink.store.store import Store


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
        async with migrated_pg_database() as url:
            yield url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = Store.from_url(db_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    """A store on an empty, migrated SQLite file, whatever backends the run has (for what only SQLite shows)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'sqlite-store.sqlite3'}"
    await upgrade(url)
    s = Store.from_url(url)
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


@pytest.fixture
async def fake_ami() -> AsyncIterator[FakeAmi]:
    """A fake AMI peer on a loopback port (support/ami.py), stopped after the test."""
    fake = FakeAmi()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
