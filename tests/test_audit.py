"""The one audit writer: no event lost to a timeout, a cancellation or a database outage; none written twice."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Sequence
from pathlib import Path
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


async def test_events_arriving_within_the_linger_are_written_in_one_batch() -> None:
    sink = Sink()
    w = AuditWriter(sink.write, linger=0.05)
    for i in range(5):
        w.record(ev(i))
        await asyncio.sleep(0.001)
    assert await w.drain(timeout=2)
    assert sink.calls == 1 and [r["call_id"] for r in sink.rows] == [f"c{i}" for i in range(5)]
    await w.close()


async def test_the_writer_retries_by_itself_after_an_outage() -> None:
    sink = Sink()
    sink.down = True
    w = AuditWriter(sink.write, linger=0)
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
    w = AuditWriter(sink.write, max_pending=3, batch=2, linger=0)
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


# -- the review's findings: poisoned batches, crash during an outage ---------------------------------------------
def test_clean_cuts_every_field_to_its_column_and_drops_unknown_ones() -> None:
    from asterisk_securelink.audit import clean

    e = clean({"action": "verify", "call_id": "c" * 10_000, "channel": 12345, "bogus": "x", "detail": "d" * 10**6})
    assert len(e["call_id"]) == 128 and e["channel"] == "12345" and "bogus" not in e
    assert len(e["detail"]) == 4096


async def test_one_poisoned_event_is_quarantined_and_the_rest_written(store: Any, tmp_path: Path) -> None:
    from asterisk_securelink.auditspool import Spool
    from asterisk_securelink.store.store import audit_fields

    async def ping() -> bool:
        return await store.schema_revision() is not None

    spool = Spool(tmp_path / "audit-spool.jsonl")
    w = AuditWriter(store.audit_many, spool=spool, ping=ping)
    for i in range(3):
        w.record(audit_fields("verify", "mismatch", "asterisk", call_id=f"good{i}"))
    w.record(audit_fields("verify", "mismatch", "asterisk", call_id="long", channel="PJSIP/" + "x" * 10_000))
    w.record(audit_fields("verify", "mismatch", "asterisk", call_id="poison", device_id=2**70))  # no database takes it
    w.record(audit_fields("verify", "admitted", "asterisk", call_id="after"))
    assert await w.drain(timeout=10)
    rows = {r.call_id: r for r in await store.list_audit(action="verify")}
    assert set(rows) == {"good0", "good1", "good2", "long", "after"}  # nothing blocked behind the bad one
    assert len(rows["long"].channel) == 128  # cut at the boundary (PostgreSQL refused it whole before)
    assert w.quarantine_count == 1
    kept = spool.quarantine_path.read_text().splitlines()
    assert len(kept) == 1 and '"poison"' in kept[0]
    assert not spool.path.exists()  # no outage: nothing was spooled
    await w.close()


SPOOL_CHILD = """
import asyncio, sys
from asterisk_securelink.audit import AuditWriter
from asterisk_securelink.auditspool import Spool
from asterisk_securelink.store.store import Store, audit_fields

async def main() -> None:
    down = Store.from_url(sys.argv[1])  # a database that cannot be opened: an outage
    w = AuditWriter(down.audit_many, spool=Spool(__import__("pathlib").Path(sys.argv[2])))
    for i in range(50):
        w.record(audit_fields("verify", "admitted", "asterisk", call_id=f"c{i}"))
    while True:
        await asyncio.sleep(0.05)
        if w._spooled == 50:
            print("SPOOLED", flush=True)

asyncio.run(main())
"""


async def test_a_crash_during_an_outage_loses_no_event(store: Any, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from asterisk_securelink.auditspool import Spool

    spool_file = tmp_path / "audit-spool.jsonl"
    down = f"sqlite+aiosqlite:///{tmp_path}/missing-dir/x.sqlite3"
    child = subprocess.Popen(  # noqa: ASYNC220 - a child process to kill, not awaited work
        [sys.executable, "-c", SPOOL_CHILD, down, str(spool_file)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "SPOOLED"
    finally:
        os.kill(child.pid, signal.SIGKILL)  # the process dies mid-outage, its memory with it
        child.wait(timeout=10)
    assert stat.S_IMODE(spool_file.stat().st_mode) == 0o600
    w = AuditWriter(store.audit_many, spool=Spool(spool_file))
    assert await w.replay() == 50
    assert await w.drain(timeout=10)
    got = sorted(r.call_id for r in await store.list_audit(action="verify", limit=1000))
    assert got == sorted(f"c{i}" for i in range(50))
    assert not spool_file.exists()  # removed once everything in it was written
    await w.close()
