"""The Stasis handlers' registration path on a real SQLite store (the channel side is recorded, not Asterisk)."""

from __future__ import annotations

from pathlib import Path

from test_metrics import MASTER, Channels, T

from asterisk_securelink import config
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret
from asterisk_securelink.inbound.service import VerificationService
from asterisk_securelink.inbound.stasis import Handlers
from asterisk_securelink.stasis import CallInfo
from asterisk_securelink.store.store import Store


async def registration_setup(store: Store, tmp_path: Path) -> tuple[Handlers, Channels, int]:
    cfg = config.build({}, {}, tmp_path)
    svc = VerificationService(cfg, store, MASTER, clock=lambda: T, device_sync_interval=0)
    d = await store.add_device("New", "15550001", None, "kid-n", "t")  # provisioned: limited until registered
    await svc.start()
    channels = Channels()
    handlers = Handlers(cfg, svc, channels)
    key = derive_key(device_secret(MASTER, d.key_id), Direction.INBOUND, int(T // 30), cfg.inbound_fmt)
    await handlers.stasis_start(CallInfo("ch1", "PJSIP/x", key, "100", ("inbound", "ani")))
    assert ("var", "ch1", "SECURELINK_RESULT", "unregistered") in channels.calls
    return handlers, channels, d.id


async def test_first_verified_call_registers_the_device(store: Store, tmp_path: Path) -> None:
    handlers, channels, device_id = await registration_setup(store, tmp_path)
    await handlers.stasis_start(CallInfo("ch1", "PJSIP/x", "", "100", ("register",)))
    assert ("var", "ch1", "SECURELINK_RESULT", "admitted") in channels.calls
    dev = await store.get_device(device_id)
    assert dev is not None and dev.status == "registered"
    await handlers.service.drain_audit()


async def test_a_device_revoked_meanwhile_is_not_registered_nor_admitted(store: Store, tmp_path: Path) -> None:
    handlers, channels, device_id = await registration_setup(store, tmp_path)
    await store.update_device(device_id, "device.revoke", "t", status="revoked")
    await handlers.stasis_start(CallInfo("ch1", "PJSIP/x", "", "100", ("register",)))
    assert ("hangup", "ch1", "rejected") in channels.calls
    assert ("var", "ch1", "SECURELINK_RESULT", "admitted") not in channels.calls
    dev = await store.get_device(device_id)
    assert dev is not None and dev.status == "revoked"
    await handlers.service.drain_audit()


async def test_register_without_a_verified_call_is_rejected(store: Store, tmp_path: Path) -> None:
    handlers, channels, device_id = await registration_setup(store, tmp_path)
    await handlers.stasis_start(CallInfo("other", "PJSIP/x", "", "100", ("register",)))
    assert ("hangup", "other", "rejected") in channels.calls
    dev = await store.get_device(device_id)
    assert dev is not None and dev.status == "provisioned"
    await handlers.service.drain_audit()
