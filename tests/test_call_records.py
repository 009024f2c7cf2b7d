"""Call records of both directions (`callkeys.book.CallBook.record`, `record_public`, `purge_records`) and their
listing filters (`Store.list_call_records`), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from asterisk_securelink import config
from asterisk_securelink.callkeys.book import CallBook, record_public
from asterisk_securelink.store.store import Store

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def book(store: Store, tmp_path: Path) -> CallBook:
    return CallBook(config.build({}, {}, tmp_path), store)


def inbound(call_id: str, device_id: int | None, started: datetime, **extra: Any) -> dict[str, Any]:
    """An inbound call-through as the onward routing hands it over: the outbound shape plus the new keys."""
    return {
        "call_id": call_id, "device_id": device_id, "direction": "inbound", "verdict": "admitted",
        "legs": [{"endpoint": "Local/2001@from-desk", "channel": "ch-2", "role": "destination", "outcome": "answered"}],
        "answered_by": None, "started_at": started, "answered_at": started + timedelta(seconds=3),
        "ended_at": started + timedelta(seconds=63), "hangup_cause": "normal_clearing", "method": "dtmf",
        "caller": "+15550001111", "destination": "2001", "node": "pbx-a", **extra,
    }  # fmt: skip


async def test_an_inbound_record_keeps_method_caller_destination_and_node(store: Store, book: CallBook) -> None:
    dev = await store.add_device("Alice", "+15550001111", None, "dev-0001", "test")
    await book.record(inbound("in-1", dev.id, T0))
    (row,) = await store.list_call_records()
    assert record_public(row) == {
        "call_id": "in-1", "device": dev.id, "direction": "inbound", "verdict": "admitted",
        "legs": [{"endpoint": "Local/2001@from-desk", "channel": "ch-2", "role": "destination", "outcome": "answered"}],
        "answered_by": None, "started_at": T0.isoformat(), "answered_at": (T0 + timedelta(seconds=3)).isoformat(),
        "ended_at": (T0 + timedelta(seconds=63)).isoformat(), "hangup_cause": "normal_clearing", "method": "dtmf",
        "caller": "+15550001111", "destination": "2001", "node": "pbx-a",
    }  # fmt: skip


async def test_an_outbound_record_without_the_new_keys_has_none_and_long_values_are_cut(
    store: Store, book: CallBook
) -> None:
    await book.record({"call_id": "out-1", "device_id": None, "direction": "outbound", "verdict": "admitted",
                       "legs": [], "started_at": T0, "ended_at": T0})  # fmt: skip
    await book.record(inbound("in-2", None, T0 + timedelta(seconds=1), caller="9" * 40, node="n" * 80,
                              method="callback-and-more"))  # fmt: skip
    out, long = await store.list_call_records()
    assert (out.method, out.caller, out.destination, out.node) == (None, None, None, None)
    assert (long.caller, long.node, long.method) == ("9" * 32, "n" * 64, "callback-and-mor")


async def test_withheld_and_key_callers(store: Store, book: CallBook) -> None:
    await book.record(inbound("clir", None, T0, caller="withheld"))
    await book.record(inbound("ani", None, T0 + timedelta(seconds=1), caller=None, method="ani"))
    clir, ani = (record_public(r) for r in await store.list_call_records())
    assert clir["caller"] == "withheld" and ani["caller"] is None


async def test_list_filters_by_device_direction_and_time(store: Store, book: CallBook) -> None:
    a = await store.add_device("A", "+15550001111", None, "dev-0001", "test")
    b = await store.add_device("B", "+15550002222", None, "dev-0002", "test")
    await book.record(inbound("a-in", a.id, T0))
    await book.record({**inbound("a-out", a.id, T0 + timedelta(minutes=1)), "direction": "outbound"})
    await book.record(inbound("b-in", b.id, T0 + timedelta(minutes=2)))

    async def ids(**kw: Any) -> list[str]:
        return [r.call_id for r in await store.list_call_records(**kw)]

    assert await ids() == ["a-in", "a-out", "b-in"]  # oldest first
    assert await ids(device_id=a.id) == ["a-in", "a-out"]
    assert await ids(direction="inbound") == ["a-in", "b-in"]
    assert await ids(device_id=a.id, direction="outbound") == ["a-out"]
    assert await ids(since=T0 + timedelta(minutes=1)) == ["a-out", "b-in"]
    assert await ids(limit=2) == ["a-out", "b-in"]  # the newest two


async def test_purge_records_deletes_calls_started_before(store: Store, book: CallBook) -> None:
    await book.record(inbound("old", None, T0))
    await book.record(inbound("new", None, T0 + timedelta(days=1)))
    assert await book.purge_records(T0) == 0  # started exactly then: kept
    assert await book.purge_records(T0 + timedelta(hours=1)) == 1
    assert [r.call_id for r in await store.list_call_records()] == ["new"]
