"""Lockout state in the database, shared by every node (`models.LockoutSource`: guesses per subject and hour; the
subjects are sources, `*` for every source together and `#<device id>` for a registered number's device).
`models.LockoutDevice` (the backoff of earlier versions) is no longer written; its old rows are purged.

Each counted failure is one atomic UPSERT that returns the new count, so concurrent nodes never lose an increment
and the node that makes a count cross its limit knows it. Reads are plain primary-key range selects; the caller
(`inbound.guard.GuessGuard`) caches them briefly.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from asterisk_securelink.store.models import LockoutDevice, LockoutSource
from asterisk_securelink.store.store import Store


class LockoutStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._insert: Any = postgresql.insert if store.engine.dialect.name == "postgresql" else sqlite.insert

    # -- sources: guesses per hour ---------------------------------------------------------------------------------
    async def source_hours(self, subject: str, first_hour: int) -> dict[int, int]:
        """Guesses per hour for `subject`, from `first_hour` on."""
        q = select(LockoutSource.hour, LockoutSource.guesses).where(
            LockoutSource.subject == subject, LockoutSource.hour >= first_hour
        )
        async with self.store.sessions() as s:
            return {int(h): int(g) for h, g in (await s.execute(q)).all()}

    async def add_guesses(self, subject: str, hour: int, n: int) -> int:
        """Add `n` (negative: give back) to the hour's count in one statement; returns the hour's new count."""
        stmt = self._insert(LockoutSource).values(subject=subject, hour=hour, guesses=n)
        stmt = stmt.on_conflict_do_update(
            index_elements=[LockoutSource.subject, LockoutSource.hour],
            set_={"guesses": LockoutSource.guesses + stmt.excluded.guesses},
        ).returning(LockoutSource.guesses)
        async with self.store.transaction() as s:
            return int((await s.execute(stmt)).scalar_one())

    # -- housekeeping ----------------------------------------------------------------------------------------------
    async def purge(self, before_hour: int, before_ms: int) -> int:
        """Drop hours before `before_hour` and (earlier versions') device rows whose last failure is before
        `before_ms`."""
        async with self.store.transaction() as s:
            a = await s.execute(delete(LockoutSource).where(LockoutSource.hour < before_hour))
            b = await s.execute(delete(LockoutDevice).where(LockoutDevice.last_failure_ms < before_ms))
            return int(getattr(a, "rowcount", 0) or 0) + int(getattr(b, "rowcount", 0) or 0)
