"""The one audit writer: no event lost to a timeout, a cancellation or a database outage; none written twice."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from asterisk_securelink.audit import AuditWriter


class Sink:
    """A batch writer whose writes can be held (a stuck database) or fail (a database that is down)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.down = False
        self.calls = 0

    async def write(self, events: Sequence[dict[str, Any]]) -> None:
        self.calls += 1
        await self.gate.wait()
        if self.down:
            raise ConnectionError("database down")
        self.rows.extend(events)


def ev(i: int) -> dict[str, Any]:
    return {"action": "verify", "result": "admitted", "call_id": f"c{i}"}


async def test_a_waiter_that_times_out_loses_nothing() -> None:
    # the old outbound path: asyncio.wait_for(write_audit(event), timeout) on a slow store dropped the whole buffer
    sink = Sink()
    sink.gate.clear()
    w = AuditWriter(sink.write)
    for i in range(4):
        w.record(ev(i))
        try:
            await asyncio.wait_for(w.drain(), 0.01)
        except TimeoutError:
            pass
    assert w.pending == 4 and sink.rows == []
    sink.gate.set()
    assert await w.drain(timeout=2)
    assert [r["call_id"] for r in sink.rows] == ["c0", "c1", "c2", "c3"]  # each once, in order
    await w.close()


async def test_a_cancelled_waiter_loses_nothing() -> None:
    sink = Sink()
    sink.gate.clear()
    w = AuditWriter(sink.write)
    w.record(ev(1))
    waiter = asyncio.create_task(w.drain())
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    w.record(ev(2))
    sink.gate.set()
    assert await w.drain(timeout=2)
    assert [r["call_id"] for r in sink.rows] == ["c1", "c2"]
    await w.close()


async def test_record_never_waits_for_the_write() -> None:
    sink = Sink()
    sink.gate.clear()
    w = AuditWriter(sink.write)
    for i in range(100):
        w.record(ev(i))  # synchronous: returns while the write hangs
    assert w.pending == 100
    sink.gate.set()
    assert await w.drain(timeout=2)
    assert len(sink.rows) == 100 and len({r["call_id"] for r in sink.rows}) == 100


async def test_database_down_keeps_events_and_drain_says_so() -> None:
    sink = Sink()
    sink.down = True
    states: list[bool] = []
    w = AuditWriter(sink.write, on_database_state=states.append)
    w.record(ev(1))
    assert not await w.drain(timeout=2)  # answers when the attempt fails, not at the timeout
    assert w.pending == 1 and states[-1] is False
    sink.down = False
    w.record(ev(2))
    assert await w.drain(timeout=2)
    assert [r["call_id"] for r in sink.rows] == ["c1", "c2"] and states[-1] is True
    await w.close()


async def test_the_writer_retries_by_itself_after_an_outage() -> None:
    sink = Sink()
    sink.down = True
    w = AuditWriter(sink.write)
    w.record(ev(1))
    await asyncio.sleep(0.05)
    assert sink.calls >= 1 and w.pending == 1
    sink.down = False
    for _ in range(100):  # the first retry comes after RETRY_INITIAL (0.5 s)
        if not w.pending:
            break
        await asyncio.sleep(0.02)
    assert w.pending == 0 and [r["call_id"] for r in sink.rows] == ["c1"]
    await w.close()


async def test_overflow_drops_the_oldest_event_that_no_write_holds() -> None:
    sink = Sink()
    sink.gate.clear()
    w = AuditWriter(sink.write, max_pending=3, batch=2)
    w.record(ev(0))
    await asyncio.sleep(0)  # the writer takes c0 in flight
    for i in range(1, 5):
        w.record(ev(i))
    assert w.pending == 3 and w.dropped == 2
    sink.gate.set()
    assert await w.drain(timeout=2)
    # c0 was being written and is kept; c1 and c2 were the oldest waiting ones
    assert [r["call_id"] for r in sink.rows] == ["c0", "c3", "c4"]
    await w.close()


async def test_close_keeps_what_was_not_written() -> None:
    sink = Sink()
    sink.gate.clear()
    w = AuditWriter(sink.write)
    w.record(ev(1))
    await asyncio.sleep(0)
    await w.close()  # the write in flight is cancelled ...
    assert w.pending == 1  # ... and its event is still queued
