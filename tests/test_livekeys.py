"""The live key index holds only devices whose keys count (provisioned, registered): a suspended or revoked device
leaves it, so its keys can no longer make a genuine device's colliding key `ambiguous`, and comes back when resumed."""

from __future__ import annotations

from pathlib import Path

from asterisk_securelink import config
from asterisk_securelink.config import Config
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret
from asterisk_securelink.core.verdicts import Verdict
from asterisk_securelink.inbound.service import VerificationService, VerifyRequest
from asterisk_securelink.livekeys import LiveKeys
from asterisk_securelink.store.store import DeviceRow, Store

MASTER = bytes(range(32))
T = 1_790_000_000_000  # unix ms
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
    svc = VerificationService(c, store, MASTER, clock_ms=lambda: T, device_sync_interval=0)
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
    svc = VerificationService(c, store, MASTER, clock_ms=lambda: T, device_sync_interval=0)
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
