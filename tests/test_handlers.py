"""The Stasis handlers on a real SQLite store (channels recorded, not Asterisk): admission and registration."""

from __future__ import annotations

from pathlib import Path

from fakes import Channels
from test_metrics import MASTER, T

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
    await handlers.service.audit.drain()


async def test_a_device_revoked_meanwhile_is_not_registered_nor_admitted(store: Store, tmp_path: Path) -> None:
    handlers, channels, device_id = await registration_setup(store, tmp_path)
    await store.update_device(device_id, "device.revoke", "t", status="revoked")
    await handlers.stasis_start(CallInfo("ch1", "PJSIP/x", "", "100", ("register",)))
    assert ("hangup", "ch1", "rejected") in channels.calls
    assert ("var", "ch1", "SECURELINK_RESULT", "admitted") not in channels.calls
    dev = await store.get_device(device_id)
    assert dev is not None and dev.status == "revoked"
    await handlers.service.audit.drain()


async def test_register_without_a_verified_call_is_rejected(store: Store, tmp_path: Path) -> None:
    handlers, channels, device_id = await registration_setup(store, tmp_path)
    await handlers.stasis_start(CallInfo("other", "PJSIP/x", "", "100", ("register",)))
    assert ("hangup", "other", "rejected") in channels.calls
    dev = await store.get_device(device_id)
    assert dev is not None and dev.status == "provisioned"
    await handlers.service.audit.drain()


async def admission_setup(store: Store, tmp_path: Path, channels: Channels) -> tuple[Handlers, str]:
    cfg = config.build({"inbound": {"admitted_context": "in-ok"}}, {}, tmp_path)
    svc = VerificationService(cfg, store, MASTER, clock=lambda: T, device_sync_interval=0)
    d = await store.add_device("A", "15550002", None, "kid-a", "t")
    await store.update_device(d.id, "device.register", "t", status="registered")
    await svc.start()
    key = derive_key(device_secret(MASTER, d.key_id), Direction.INBOUND, int(T // 30), cfg.inbound_fmt)
    return Handlers(cfg, svc, channels), key


async def test_admitted_call_gets_its_variables_then_continues_in_the_admitted_context(
    store: Store, tmp_path: Path
) -> None:
    channels = Channels()
    handlers, key = await admission_setup(store, tmp_path, channels)
    await handlers.stasis_start(CallInfo("ch1", "PJSIP/carrier-00000001", key, "100", ("inbound", "ani")))
    assert set(channels.calls[:3]) == {
        ("var", "ch1", "SECURELINK_RESULT", "admitted"),
        ("var", "ch1", "SECURELINK_DEVICE", "1"),
        ("var", "ch1", "SECURELINK_MODE", "ani"),
    }
    assert channels.calls[3:] == [("continue", "ch1", "in-ok")]
    await handlers.service.audit.drain()


async def test_a_forged_number_is_rejected_after_its_verdict_is_set(store: Store, tmp_path: Path) -> None:
    channels = Channels()
    handlers, _key = await admission_setup(store, tmp_path, channels)
    await handlers.stasis_start(CallInfo("ch2", "PJSIP/carrier-00000002", "15550002", "100", ("inbound", "ani")))
    assert ("var", "ch2", "SECURELINK_RESULT", "mismatch") in channels.calls
    assert channels.calls[-1] == ("hangup", "ch2", "rejected")
    assert not any(c[0] == "continue" for c in channels.calls)
    await handlers.service.audit.drain()


async def test_a_verdict_that_cannot_be_set_rejects_the_call(store: Store, tmp_path: Path) -> None:
    channels = Channels(fail_on="var")  # ARI fails while the variables are set: never continue unverified
    handlers, key = await admission_setup(store, tmp_path, channels)
    await handlers.stasis_start(CallInfo("ch3", "PJSIP/carrier-00000003", key, "100", ("inbound", "ani")))
    assert channels.calls == [("hangup", "ch3", "rejected")]
    await handlers.service.audit.drain()
