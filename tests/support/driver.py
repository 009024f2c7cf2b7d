"""Taking `store.driver`'s fast paths away (aiosqlite's thread, asyncpg), so a test runs a store operation's generic
Core path."""

from __future__ import annotations

from collections.abc import Callable

from asterisk_securelink.store.driver import NOT_RUN


async def not_run(*_args: object, **_kwargs: object) -> object:
    """A stand-in for `store.driver.run_fast`, `run_on_driver`, `run_together` or `run_on_asyncpg` that never runs:
    the caller takes its generic path."""
    return NOT_RUN


def generic_path_forbidden(what: str) -> Callable[..., object]:
    """A stand-in for a store operation's generic path that fails the test: proves the fast path was taken."""

    def forbidden(*_args: object, **_kwargs: object) -> object:
        raise AssertionError(f"{what} through the generic path")

    return forbidden
