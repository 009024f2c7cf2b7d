"""Lockout state in the database, shared by every node (`models.LockoutSource`, `models.LockoutDevice`).

Each counted failure is one atomic UPSERT that returns the new count, so concurrent nodes never lose an increment
and the node that makes a count cross its limit knows it. Reads are plain primary-key range selects; the caller
(`inbound.guard.GuessGuard`) caches them briefly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import case, delete, select
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

    # -- devices: failures in a row --------------------------------------------------------------------------------
    async def device_states(self, device_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
        """device id -> (failures, last failure unix ms), for the ids that have a row."""
        ids = list(device_ids)
        if not ids:
            return {}
        q = select(LockoutDevice.device_id, LockoutDevice.failures, LockoutDevice.last_failure_ms).where(
            LockoutDevice.device_id.in_(ids)
        )
        async with self.store.sessions() as s:
            return {int(d): (int(f), int(t)) for d, f, t in (await s.execute(q)).all()}

    async def add_device_failure(self, device_id: int, at_ms: int, forget_before_ms: int) -> tuple[int, int]:
        """Count one failure in one statement; a row whose last failure is before `forget_before_ms` starts again
        at 1. Returns (failures, last failure unix ms)."""
        stmt = self._insert(LockoutDevice).values(device_id=device_id, failures=1, last_failure_ms=at_ms)
        stmt = stmt.on_conflict_do_update(
            index_elements=[LockoutDevice.device_id],
            set_={
                "failures": case(
                    (LockoutDevice.last_failure_ms < forget_before_ms, 1), else_=LockoutDevice.failures + 1
                ),
                "last_failure_ms": case(
                    (LockoutDevice.last_failure_ms > at_ms, LockoutDevice.last_failure_ms), else_=at_ms
                ),
            },
        ).returning(LockoutDevice.failures, LockoutDevice.last_failure_ms)
        async with self.store.transaction() as s:
            row = (await s.execute(stmt)).one()
            return int(row[0]), int(row[1])

    async def clear_device(self, device_id: int) -> None:
        """A verified call: the device's failures are forgotten."""
        async with self.store.transaction() as s:
            await s.execute(delete(LockoutDevice).where(LockoutDevice.device_id == device_id))

    # -- housekeeping ----------------------------------------------------------------------------------------------
    async def purge(self, before_hour: int, before_ms: int) -> int:
        """Drop source hours before `before_hour` and device rows whose last failure is before `before_ms`."""
        async with self.store.transaction() as s:
            a = await s.execute(delete(LockoutSource).where(LockoutSource.hour < before_hour))
            b = await s.execute(delete(LockoutDevice).where(LockoutDevice.last_failure_ms < before_ms))
            return int(getattr(a, "rowcount", 0) or 0) + int(getattr(b, "rowcount", 0) or 0)
