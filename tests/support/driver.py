"""Taking `store.driver`'s fast paths away (aiosqlite's thread, asyncpg), so a test runs a store operation's generic
Core path."""

from __future__ import annotations

from asterisk_securelink.store.driver import NOT_RUN


async def not_run(*_args: object, **_kwargs: object) -> object:
    """A stand-in for `store.driver.run_fast`, `run_on_driver`, `run_together` or `run_on_asyncpg` that never runs:
    the caller takes its generic path."""
    return NOT_RUN
