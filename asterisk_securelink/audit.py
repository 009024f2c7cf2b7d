"""The audit writer: the one way inbound, outbound and the CLI's verifier write audit events.

`record(event)` never blocks and never raises: it queues the event and wakes one background task, which writes the
queue in batches. An event leaves the queue only after its batch committed, and only that task ever writes, so a
caller that stops waiting (a timeout, a cancelled call) cannot lose or duplicate an event. While the database is down
the task retries with a growing pause (capped) and, with a spool file, appends the queue to it (fsynced) so a crash or
a long outage loses nothing (`auditspool.py`); the queue in memory is bounded, oldest dropped past `max_pending`.

Every event is cleaned at the boundary (`clean`): unknown fields dropped, strings cut to their column's length, so
one oversized value cannot fail a batch. A batch the database refuses as data (not as an outage) is split until the
bad event is alone; that one is quarantined (kept in the quarantine file, logged, counted) and the rest is written.

Admin changes (device add, status changes, escrow purge) are not written here: the store writes their event in the
same transaction as the change, so a change never lands without its record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import String, Text
from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError

from asterisk_securelink.auditspool import Spool
from asterisk_securelink.store.models import AuditEvent

log = logging.getLogger(__name__)

MAX_PENDING = 100_000  # events kept in memory while the database is down
BATCH = 500  # events per INSERT batch
LINGER = 0.05  # seconds the writer waits for more events before writing a batch smaller than BATCH
RETRY_INITIAL = 0.5  # seconds before the first retry after a failed write
RETRY_CAP = 30.0  # the longest pause between retries
SPOOL_EVERY = 0.2  # seconds: during an outage, new events reach the spool file within this
MAX_DETAIL = 4096  # characters of the JSON detail column (Text, unbounded in the database)
MAX_QUARANTINE = 1000  # quarantined events kept in memory when there is no spool file

_COLUMNS = {c.name: c for c in AuditEvent.__table__.columns if c.name != "id"}
_LIMITS = {
    name: (MAX_DETAIL if isinstance(c.type, Text) else c.type.length)
    for name, c in _COLUMNS.items()
    if isinstance(c.type, String) and (isinstance(c.type, Text) or c.type.length)
}

Event = dict[str, Any]
WriteBatch = Callable[[Sequence[Event]], Awaitable[None]]


def clean(event: Event) -> Event:
    """The event as the database can take it: known columns only, strings cut to their column's length."""
    out: Event = {}
    for key, value in event.items():
        if key not in _COLUMNS:
            continue
        limit = _LIMITS.get(key)
        if limit is not None and value is not None:
            text = value if isinstance(value, str) else str(value)
            value = text[:limit]
        out[key] = value
    return out


def is_data_error(exc: BaseException) -> bool:
    """Whether the error itself says the rows were refused (a value out of range, a constraint), not the connection.
    Drivers differ (asyncpg reports a bad argument as a plain DBAPIError, sqlite3 an int overflow as OverflowError),
    so the writer asks the database (`ping`) when it can."""
    return isinstance(exc, (DataError, IntegrityError, ProgrammingError, TypeError, ValueError, ArithmeticError))


class AuditWriter:
    def __init__(
        self,
        write: WriteBatch,
        *,
        max_pending: int = MAX_PENDING,
        batch: int = BATCH,
        on_database_state: Callable[[bool], None] | None = None,
        spool: Spool | None = None,
        ping: Callable[[], Awaitable[bool]] | None = None,
        linger: float = LINGER,
    ) -> None:
        self._write = write  # e.g. Store.audit_many
        # one transaction per call would cost the database more than the calls' own spends: a batch gathers what
        # arrives within `linger` (the verdicts never wait for it; a crash loses at most that much more)
        self.linger = linger
        self._ping = ping  # True when the database answers: a failed write was then about the rows
        self.spool = spool
        self._spooled = 0  # events at the front of _pending that the spool file holds
        self.quarantined: list[Event] = []  # without a spool file: the last MAX_QUARANTINE refused events
        self.quarantine_count = 0
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
            # (one the spool file holds comes back from it at the next start)
            del self._pending[self._in_flight]
            if self._in_flight < self._spooled:
                self._spooled -= 1
            self.dropped += 1
            log.error("audit buffer full (%d events): dropped the oldest (%d so far)", self.max_pending, self.dropped)
        self._pending.append(clean(event))
        self._kick()

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def replay(self) -> int:
        """At start: queue what the spool file holds from before (ahead of anything new). Returns how many."""
        if self.spool is None:
            return 0
        events = await asyncio.to_thread(self.spool.read)
        if events:
            log.warning("audit: %d event(s) from the spool file %s are written now", len(events), self.spool.path)
            self._pending[:0] = [clean(e) for e in events]
            self._spooled += len(events)
            self._kick()
        return len(events)

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
        loop = asyncio.get_running_loop()
        while self._pending:
            if self.linger and len(self._pending) < self.batch:
                await asyncio.sleep(self.linger)
            if await self._write_one_batch():
                pause = RETRY_INITIAL
                continue
            self._wake.clear()
            deadline = loop.time() + pause
            while not self._wake.is_set():
                await self._spool_new()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._wake.wait(), min(remaining, SPOOL_EVERY))
                except TimeoutError:
                    pass
            pause = min(RETRY_CAP, pause * 2)

    async def _spool_new(self) -> None:
        """During an outage: append what the spool file does not hold yet (fsynced)."""
        if self.spool is None or self._spooled >= len(self._pending):
            return
        new = self._pending[self._spooled :]
        try:
            await asyncio.to_thread(self.spool.append, new)
        except OSError as exc:
            log.error("audit spool %s cannot be written (%s): events stay in memory only", self.spool.path, exc)
            return
        self._spooled += len(new)

    async def _write_one_batch(self) -> bool:
        batch = self._pending[: self.batch]
        self._in_flight = len(batch)
        try:
            done, error = await self._write_all(batch)
        finally:
            self._in_flight = 0
            self._attempted.set()
        self._forget(done)
        if error is not None:
            log.warning("audit write failed (%s); %d event(s) kept for retry", type(error).__name__, len(self._pending))
            self._failures += 1
            self._state(False)
            return False
        self._state(True)
        return True

    async def _write_all(self, batch: list[Event]) -> tuple[int, BaseException | None]:
        """Write `batch`, splitting it around events the database refuses as data. Returns how many events at its
        front are done (written or quarantined), and the outage error that stopped it, if any."""
        try:
            await self._write(batch)
        except Exception as exc:  # noqa: BLE001 - sorted below: outage (retry later) or data (split)
            if not await self._refused_as_data(exc):
                return 0, exc
            if len(batch) == 1:
                await self._quarantine(batch[0], exc)
                return 1, None
            half = len(batch) // 2
            done, error = await self._write_all(batch[:half])
            if error is not None:
                return done, error
            rest, error = await self._write_all(batch[half:])
            return done + rest, error
        return len(batch), None

    async def _refused_as_data(self, exc: BaseException) -> bool:
        if is_data_error(exc):
            return True
        if self._ping is None:
            return False
        try:
            return await self._ping()
        except Exception:  # noqa: BLE001 - the database does not answer: an outage
            return False

    async def _quarantine(self, event: Event, exc: BaseException) -> None:
        self.quarantine_count += 1
        log.error(
            "audit event %s/%s refused by the database (%s): quarantined (%d so far)",
            event.get("action"),
            event.get("result"),
            type(exc).__name__,
            self.quarantine_count,
        )
        if self.spool is not None:
            try:
                await asyncio.to_thread(self.spool.append, [event], quarantine=True)
                return
            except OSError as err:
                log.error("audit quarantine file cannot be written (%s)", err)
        self.quarantined.append(event)
        del self.quarantined[:-MAX_QUARANTINE]

    def _forget(self, done: int) -> None:
        """The first `done` events are written or quarantined: drop them, and the spool file once it is all done."""
        if not done:
            return
        del self._pending[:done]
        if self._spooled:
            self._spooled = max(0, self._spooled - done)
            if self._spooled == 0 and self.spool is not None:
                self.spool.remove()

    def _state(self, ok: bool) -> None:
        if self.on_database_state is not None:
            self.on_database_state(ok)
