"""The audit writer: the one way inbound, outbound and the CLI's verifier write audit events.

`record(event)` never blocks and never raises: it queues the event and wakes one background task, which writes the
queue in batches. An event leaves the queue only after its batch committed, and only that task ever writes, so a
caller that stops waiting (a timeout, a cancelled call) cannot lose or duplicate an event. While the database is down
the task retries with a growing pause (capped); the queue is bounded, oldest dropped past `max_pending` (logged).

Admin changes (device add, status changes, escrow purge) are not written here: the store writes their event in the
same transaction as the change, so a change never lands without its record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

MAX_PENDING = 100_000  # events kept in memory while the database is down
BATCH = 500  # events per INSERT batch
RETRY_INITIAL = 0.5  # seconds before the first retry after a failed write
RETRY_CAP = 30.0  # the longest pause between retries

Event = dict[str, Any]
WriteBatch = Callable[[Sequence[Event]], Awaitable[None]]


class AuditWriter:
    def __init__(
        self,
        write: WriteBatch,
        *,
        max_pending: int = MAX_PENDING,
        batch: int = BATCH,
        on_database_state: Callable[[bool], None] | None = None,
    ) -> None:
        self._write = write  # e.g. Store.audit_many
        self.max_pending = max_pending
        self.batch = batch
        self.on_database_state = on_database_state  # metrics: the database answered / did not
        self._pending: list[Event] = []
        self._in_flight = 0  # events at the front of _pending that the running write holds
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # cuts a retry pause short (drain)
        self._attempted = asyncio.Event()  # set after every write attempt
        self._failures = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, event: Event) -> None:
        """Queue one event for writing; returns at once."""
        if len(self._pending) >= self.max_pending:
            # drop the oldest event that no write holds, so a write that commits removes exactly its own batch
            del self._pending[self._in_flight]
            self.dropped += 1
            log.error("audit buffer full (%d events): dropped the oldest (%d so far)", self.max_pending, self.dropped)
        self._pending.append(event)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def drain(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109 - a bound on waiting, not on the write
        """Have the queue written now: wait until it is empty (True), or until a write attempt made after this call
        fails (False: the database is down, the events stay queued), at most `timeout` seconds. Giving up waiting
        never cancels or loses a write."""
        failures = self._failures
        self._wake.set()  # a retry pause ends now
        try:
            async with asyncio.timeout(timeout):
                while self._pending and self._failures == failures:
                    if self._task is None or self._task.done():
                        self._task = asyncio.create_task(self._run(), name="audit-writer")
                    self._attempted.clear()
                    await self._attempted.wait()
        except TimeoutError:
            pass
        return not self._pending

    async def close(self) -> None:
        """Stop the background task; what it had not written stays in `pending` (call `drain` first)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        pause = RETRY_INITIAL
        while self._pending:
            if await self._write_one_batch():
                pause = RETRY_INITIAL
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), pause)
            except TimeoutError:
                pass
            pause = min(RETRY_CAP, pause * 2)

    async def _write_one_batch(self) -> bool:
        batch = self._pending[: self.batch]
        self._in_flight = len(batch)
        try:
            await self._write(batch)
        except Exception as exc:  # noqa: BLE001 - the database may be down: keep the events, retry later
            log.warning("audit write failed (%s); %d event(s) kept for retry", type(exc).__name__, len(self._pending))
            self._failures += 1
            self._state(False)
            return False
        finally:
            self._in_flight = 0
            self._attempted.set()
        del self._pending[: len(batch)]
        self._state(True)
        return True

    def _state(self, ok: bool) -> None:
        if self.on_database_state is not None:
            self.on_database_state(ok)
