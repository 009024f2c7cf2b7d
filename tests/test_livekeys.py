"""The live key index holds only devices whose keys count (provisioned, registered): a suspended or revoked device
leaves it, so its keys can no longer make a genuine device's colliding key `ambiguous`, and comes back when resumed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from support.clock import T
from support.keys import MASTER
from support.services import make_service

from asterisk_securelink import config
from asterisk_securelink.config import Config
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret
from asterisk_securelink.core.verdicts import Verdict
from asterisk_securelink.inbound.service import VerifyRequest
from asterisk_securelink.livekeys import INLINE_ROWS, LiveKeys
from asterisk_securelink.store.devicerows import KeyRows, key_rows
from asterisk_securelink.store.store import DeviceRow, Store

PERIOD_MS = 30_000


def key_of(device: DeviceRow, c: Config, t: int = T) -> str:
    return derive_key(device_secret(MASTER, device.key_id), Direction.INBOUND, t // PERIOD_MS, c.inbound_fmt)


async def registered(store: Store, name: str, mobile: str, key_id: str) -> DeviceRow:
    d = await store.add_device(name, mobile, None, key_id, "test")
    return await store.update_device(d.id, "device.register", "test", status="registered")


def colliding_key_ids(c: Config) -> tuple[str, str]:
    """Two key ids whose inbound keys collide in the epoch of T (a 10^6 format, searched deterministically)."""
    seen: dict[str, str] = {}
    for i in range(20000):
        kid = f"coll-{i}"
        k = derive_key(device_secret(MASTER, kid), Direction.INBOUND, T // PERIOD_MS, c.inbound_fmt)
        if k in seen:
            return seen[k], kid
        seen[k] = kid
    raise AssertionError("no collision found")


async def test_suspended_and_revoked_devices_leave_the_index_and_resume_brings_one_back(
    store: Store, tmp_path: Path
) -> None:
    c = config.build({}, {}, tmp_path)
    keys = LiveKeys(c, store, MASTER, clock_ms=lambda: T, device_sync_interval=0)
    a = await registered(store, "A", "+15550001", "kid-a")
    s = await registered(store, "S", "+15550002", "kid-s")
    r = await store.add_device("R", "+15550003", None, "kid-r", "test")  # provisioned: its keys count
    await keys.start()
    current = keys.epoch_now()
    assert len(keys.index) == 3

    await store.update_device(s.id, "device.suspend", "test", status="suspended")
    await store.update_device(r.id, "device.revoke", "test", status="revoked", revoke_reason="lost")
    await keys.sync_devices()
    assert len(keys.index) == 1 and keys.key_id_of(s.id) == "" and keys.key_id_of(r.id) == ""
    assert await keys.candidates(key_of(s, c), current) == []
    assert await keys.candidates(key_of(r, c), current) == []
    assert [x.device_id for x in await keys.candidates(key_of(a, c), current)] == [a.id]

    await store.update_device(s.id, "device.resume", "test", status="registered")
    await keys.sync_devices()
    assert [x.device_id for x in await keys.candidates(key_of(s, c), current)] == [s.id]
    assert len(keys.index) == 2

    await keys.sync_devices(full=True)  # a full reload (a restart) agrees
    assert len(keys.index) == 2 and keys.key_id_of(r.id) == ""


async def test_a_genuine_device_whose_key_collides_with_a_revoked_devices_key_is_admitted(
    store: Store, tmp_path: Path
) -> None:
    c = config.build({"keys": {"inbound_format": "XXXXXX"}}, {}, tmp_path)
    old_kid, genuine_kid = colliding_key_ids(c)
    revoked = await registered(store, "Lost phone", "+15550001", old_kid)
    genuine = await registered(store, "Genuine", "+15550002", genuine_kid)
    svc = make_service(c, store, clock_ms=lambda: T, device_sync_interval=0)
    await svc.start()
    k = key_of(genuine, c)
    assert k == key_of(revoked, c)
    await store.update_device(revoked.id, "device.revoke", "test", status="revoked", revoke_reason="lost")
    await svc.keys.sync_devices()
    out = await svc.verify(VerifyRequest(presented=k, call_id="genuine"))
    assert (out.verdict, out.device_id) == (Verdict.ADMITTED, genuine.id)
    await svc.audit.drain()


async def test_a_suspended_devices_key_is_a_mismatch_and_the_audit_says_why(store: Store, tmp_path: Path) -> None:
    """No oracle: a suspended or revoked device's valid key gets what a wrong key gets. Out of the index it is an
    ordinary `mismatch`; still in it (suspended on another node, not synced yet) the store's status stops it, and the
    audit row names the device and its status."""
    c = config.build({}, {}, tmp_path)
    svc = make_service(c, store, clock_ms=lambda: T, device_sync_interval=0)
    d = await registered(store, "S", "+15550001", "kid-s")
    e = await registered(store, "E", "+15550002", "kid-e")
    await svc.start()
    await store.update_device(d.id, "device.suspend", "test", status="suspended")  # not synced yet
    out = await svc.verify(VerifyRequest(presented=key_of(d, c), call_id="race"))
    assert (out.verdict, out.device_id, out.detail) == (Verdict.MISMATCH, d.id, {"status": "suspended"})
    await store.update_device(e.id, "device.revoke", "test", status="revoked", revoke_reason="x")
    await svc.keys.sync_devices()
    for dev, call in ((d, "synced"), (e, "revoked")):
        out = await svc.verify(VerifyRequest(presented=key_of(dev, c), call_id=call))
        assert (out.verdict, out.device_id) == (Verdict.MISMATCH, None)
    await svc.audit.drain()
    rows = {a.call_id: (a.result, a.device_id) for a in await store.list_audit(action="verify")}
    assert rows == {"race": ("mismatch", d.id), "synced": ("mismatch", None), "revoked": ("mismatch", None)}
    spent = await store.key_epoch(d.id, Direction.INBOUND)
    assert spent is not None and spent.last_epoch == -1  # nothing spent


async def test_start_builds_the_current_epoch_and_a_look_behind_key_waits_for_the_rest(
    store: Store, tmp_path: Path
) -> None:
    c = config.build({}, {}, tmp_path)  # look_behind 1, look_ahead 1: three live epochs
    keys = LiveKeys(c, store, MASTER, clock_ms=lambda: T, device_sync_interval=0)
    devices = [await registered(store, f"D{i}", f"+1555000{i:04d}", f"kid-{i}") for i in range(INLINE_ROWS + 4)]
    await keys.start()  # more rows than INLINE_ROWS: secrets derived in the worker thread
    current = keys.epoch_now()
    assert keys.index.epochs == [current] and len(keys.index) == len(devices)
    previous = key_of(devices[3], c, T - PERIOD_MS)
    assert [x.device_id for x in await keys.candidates(previous, current)] == [devices[3].id]
    assert keys.index.epochs == [current - 1, current, current + 1]  # the lookup waited for the other tables


async def test_keep_fresh_builds_what_start_left_and_a_sync_in_the_worker_replaces_rotated_keys(
    store: Store, tmp_path: Path
) -> None:
    c = config.build({}, {}, tmp_path)
    keys = LiveKeys(c, store, MASTER, clock_ms=lambda: T, device_sync_interval=60)
    devices = [await registered(store, f"D{i}", f"+1555000{i:04d}", f"kid-{i}") for i in range(INLINE_ROWS + 4)]
    await keys.start()
    stop = asyncio.Event()
    task = asyncio.create_task(keys.keep_fresh(stop))
    while len(keys.index.epochs) < 3:
        await asyncio.sleep(0.01)
    stop.set()
    await task
    current = keys.epoch_now()
    old = key_of(devices[5], c)
    rotated = await store.update_device(devices[5].id, "device.rotate", "test", key_id="kid-5-new")
    await store.update_device(devices[6].id, "device.suspend", "test", status="suspended")
    assert await keys.sync_devices(full=True) == len(devices)  # the worker-thread path
    assert await keys.candidates(old, current) == []
    assert [x.device_id for x in await keys.candidates(key_of(rotated, c), current)] == [rotated.id]
    assert await keys.candidates(key_of(devices[6], c), current) == []
    assert keys.key_id_of(rotated.id) == "kid-5-new" and keys.key_id_of(devices[6].id) == ""
    assert len(keys.index) == len(devices) - 1 and keys.index.epochs == [current - 1, current, current + 1]
    for epoch in keys.index.epochs:  # the patched tables are what a fresh build gives
        assert keys.index._by_epoch[epoch] == keys.index.build(epoch)


async def test_key_rows_reads_the_index_columns_of_changed_devices(store: Store) -> None:
    a = await store.add_device("A", "+15550001", None, "kid-a", "test")
    b = await store.add_device("B", "+15550002", None, "kid-b", "test")
    rows = await key_rows(store)
    assert rows == KeyRows([a.id, b.id], ["kid-a", "kid-b"], ["provisioned"] * 2, ["+15550001", "+15550002"])
    assert (await key_rows(store, since=b.updated_at)).ids == [b.id]


async def test_at_an_epoch_boundary_calls_go_on_while_the_roll_runs_and_only_live_epochs_count(
    store: Store, tmp_path: Path
) -> None:
    c = config.build({}, {}, tmp_path)  # look_behind 1, look_ahead 1
    now = [T]
    keys = LiveKeys(c, store, MASTER, clock_ms=lambda: now[0], device_sync_interval=1e9)
    a = await registered(store, "A", "+15550001", "kid-a")
    await keys.start()
    await keys.refresh()
    e = keys.epoch_now()
    assert keys.index.epochs == [e - 1, e, e + 1]
    now[0] = T + PERIOD_MS  # the boundary: e + 1 is current and its table is there (it was the look-ahead)
    found = await keys.candidates(key_of(a, c, T + PERIOD_MS), e + 1)
    assert [(x.device_id, x.epoch) for x in found] == [(a.id, e + 1)]
    assert keys.index.current == e  # answered without waiting for the roll, which runs in the background
    # the table of e - 1 is still held until the roll installs, but e - 1 is no longer live: its key is no match
    assert await keys.candidates(key_of(a, c, T - PERIOD_MS), e + 1) == []
    assert keys._roll is not None
    await keys._roll
    assert keys.index.current == e + 1 and keys.index.epochs == [e, e + 1, e + 2]
