"""The store on real databases: SQLite always, PostgreSQL when SECURELINK_TEST_DATABASE_URL is set."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from asterisk_securelink.core.slk1 import Direction
from asterisk_securelink.store.store import DuplicateError, Store


async def test_add_device_creates_epoch_rows_and_audit(store: Store) -> None:
    d = await store.add_device("Alice", "15550001", "PJSIP/1001", "kid-1", "test")
    assert d.status == "provisioned" and d.fork_enabled
    for direction in Direction:
        row = await store.key_epoch(d.id, direction)
        assert row is not None and row.last_epoch == -1
    events = await store.list_audit()
    assert [(e.action, e.device_id) for e in events] == [("device.add", d.id)]
    with pytest.raises(DuplicateError):
        await store.add_device("Eve", "15550002", None, "kid-1", "test")
    assert len(await store.list_devices()) == 1  # nothing half-written
    assert len(await store.list_audit()) == 1


async def test_spend_is_single_use_and_monotonic(store: Store) -> None:
    d = await store.add_device("A", "1555", None, "kid", "t")
    assert await store.spend(d.id, Direction.INBOUND, 100, "call-1", 0)
    assert not await store.spend(d.id, Direction.INBOUND, 100, "call-2", 0)  # replay
    assert await store.spend(d.id, Direction.INBOUND, 100, "call-1", 0)  # same call re-presented
    assert not await store.spend(d.id, Direction.INBOUND, 99, "call-3", 0)  # earlier epochs are spent too
    assert not await store.spend(d.id, Direction.INBOUND, 100, None, 0)
    assert await store.spend(d.id, Direction.OUTBOUND, 100, None, 0)  # directions are separate
    assert await store.spend(d.id, Direction.INBOUND, 101, "call-4", 1)
    row = await store.key_epoch(d.id, Direction.INBOUND)
    assert row is not None and row.last_epoch == 101 and row.drift == 1


async def test_outbound_epochs_at_most_current_plus_one(store: Store) -> None:
    d = await store.add_device("A", "1555", None, "kid", "t")
    assert await store.next_outbound_epoch(d.id, 50, "c1") == 50
    assert await store.next_outbound_epoch(d.id, 50, "c2") == 51
    assert await store.next_outbound_epoch(d.id, 50, "c3") is None  # rate limited
    assert await store.next_outbound_epoch(d.id, 52, "c4") == 52


async def test_rotation_resets_spent_epochs(store: Store) -> None:
    d = await store.add_device("A", "1555", None, "kid", "t")
    await store.spend(d.id, Direction.INBOUND, 100, "c", 0)
    d2 = await store.update_device(d.id, "device.rotate", "t", key_id="kid-2")
    assert d2.key_id == "kid-2" and d2.updated_at >= d.updated_at
    row = await store.key_epoch(d.id, Direction.INBOUND)
    assert row is not None and row.last_epoch == -1


async def test_incremental_device_listing(store: Store) -> None:
    a = await store.add_device("A", "1555", None, "k1", "t")
    await asyncio.sleep(0.01)
    b = await store.add_device("B", "1556", None, "k2", "t")
    assert [d.id for d in await store.list_devices(since=b.updated_at)] == [b.id]
    assert [d.id for d in await store.list_devices(since=a.updated_at)] == [a.id, b.id]


async def test_audit_is_append_only_in_the_database(store: Store) -> None:
    await store.audit("test", "ok", "t")
    for statement in ("UPDATE audit_events SET result = 'forged'", "DELETE FROM audit_events"):
        with pytest.raises((IntegrityError, DBAPIError), match="append-only"):
            async with store.engine.begin() as conn:
                await conn.execute(text(statement))
    assert [e.result for e in await store.list_audit()] == ["ok"]


async def test_no_column_can_hold_a_device_secret(store: Store) -> None:
    from asterisk_securelink.store.models import Device

    names = {c.name for c in Device.__table__.columns}
    assert not {n for n in names if "secret" in n or n in ("key", "seed")}
    assert await store.schema_revision() is not None


async def test_check_and_spend_only_for_the_current_key_id_and_a_usable_status(store: Store) -> None:
    d = await store.add_device("A", "15550001", None, "kid-a", "t")
    r = await store.check_and_spend(d.id, "kid-a", Direction.INBOUND, 100, "c1", 0)
    assert r.spent and r.device is not None and r.device.status == "provisioned"
    r = await store.check_and_spend(d.id, "kid-old", Direction.INBOUND, 101, "c2", 0)  # rotated meanwhile
    assert not r.spent and r.device is not None and r.device.key_id == "kid-a"
    await store.update_device(d.id, "device.revoke", "t", status="revoked")
    r = await store.check_and_spend(d.id, "kid-a", Direction.INBOUND, 102, "c3", 0)
    assert not r.spent and r.device is not None and r.device.status == "revoked"
    assert (await store.check_and_spend(d.id + 999, "kid-a", Direction.INBOUND, 103, "c4", 0)).device is None
    epoch = await store.key_epoch(d.id, Direction.INBOUND)
    assert epoch is not None and epoch.last_epoch == 100  # none of the refused attempts spent anything


async def test_the_spend_update_itself_rechecks_key_id_and_status(store: Store) -> None:
    """What another node changes between the verifier's read and its UPDATE: the UPDATE's own guard refuses."""
    from asterisk_securelink.store.store import _spend_in

    d = await store.add_device("A", "15550001", None, "kid-a", "t")
    await store.update_device(d.id, "device.suspend", "t", status="suspended")
    async with store.transaction() as s:
        assert not await _spend_in(s, d.id, "kid-a", Direction.INBOUND, 100, "c1", 0)  # suspended
    await store.update_device(d.id, "device.resume", "t", status="registered")
    async with store.transaction() as s:
        assert not await _spend_in(s, d.id, "kid-b", Direction.INBOUND, 100, "c1", 0)  # another key id
        assert await _spend_in(s, d.id, "kid-a", Direction.INBOUND, 100, "c1", 0)
