"""Taking `store.driver`'s one-hand-off path away, so a test runs a store operation's generic Core path on SQLite."""

from __future__ import annotations

from asterisk_securelink.store.driver import NOT_RUN


async def not_run(*_args: object) -> object:
    """A stand-in for `store.driver.run_on_driver` that never runs: the caller takes its generic path."""
    return NOT_RUN
