"""The one place the tests build a `VerificationService`, and the inbound helpers around it.

Every test that needs a service calls `make_service`, so a change to the service's constructor or wiring is made
here once. Its signature follows the constructor's; the master key defaults to the tests' one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asterisk_securelink import config
from asterisk_securelink.app import verifier
from asterisk_securelink.audit import AuditWriter
from asterisk_securelink.callkeys.store import VoucherStore
from asterisk_securelink.callkeys.vouchers import VoucherKeys
from asterisk_securelink.config import Config
from asterisk_securelink.core.provisioning import DeviceParams
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret
from asterisk_securelink.core.verdicts import Verdict
from asterisk_securelink.inbound.service import VerificationService, VerifyRequest
from asterisk_securelink.metrics import Metrics
from asterisk_securelink.notifier import Notifier
from asterisk_securelink.store.api_store import ApiStore
from asterisk_securelink.store.lanes import lanes_for
from asterisk_securelink.store.store import DeviceRow, Store
from support.clock import S
from support.keys import MASTER


def make_service(
    cfg: Config,
    store: Store,
    master_key: bytes = MASTER,
    *,
    clock_ms: Callable[[], int] | None = None,
    device_sync_interval: float | None = None,
    audit: AuditWriter | None = None,
    metrics: Metrics | None = None,
) -> VerificationService:
    """A `VerificationService` built as the app builds it (`app.verifier`), with an `AuditWriter` the test can drain
    (`service.audit`); an argument left out gets the app's own default."""
    kw: dict[str, Any] = {"metrics": metrics}
    if clock_ms is not None:
        kw["clock_ms"] = clock_ms
    if device_sync_interval is not None:
        kw["device_sync_interval"] = device_sync_interval
    writer = audit if audit is not None else AuditWriter(store.audit_many)
    return verifier(cfg, store, master_key, writer, **kw)


def api_store(
    store: Store,
    master: bytes,
    params: DeviceParams,
    *,
    audit: Callable[[dict[str, Any]], None] | None = None,
    clock_s: Callable[[], float] = time.time,
) -> ApiStore:
    """The device API's directory as the app builds it: vouchers on the same lanes, events through a `Notifier`
    whose audit rows go to `audit`."""
    lanes = lanes_for(store.engine)
    vouchers = VoucherStore(lanes, VoucherKeys(master), params.trunk)
    notify = Notifier(audit).api_event
    return ApiStore(store, master, params, notify=notify, vouchers=vouchers, lanes=lanes, clock_s=clock_s)


def cfg(tmp_path: Path, **sections: dict[str, object]) -> Config:
    """A configuration of the given sections over the defaults, relative to `tmp_path`."""
    return config.build(dict(sections), {}, tmp_path)


def key(device: DeviceRow, t: int, c: Config, direction: Direction = Direction.INBOUND) -> str:
    """The device's key at unix ms `t`, derived from the tests' master key."""
    epoch = t // (c.keys.period * S)
    return derive_key(device_secret(MASTER, device.key_id), direction, epoch, c.inbound_fmt)


async def registered(store: Store, name: str, mobile: str, key_id: str) -> DeviceRow:
    d = await store.add_device(name, mobile, None, key_id, "test")
    return await store.update_device(d.id, "device.register", "test", status="registered")


async def verify(s: VerificationService, number: str | None, **kw: object) -> Verdict:
    return (await s.verify(VerifyRequest(presented=number, **kw))).verdict  # type: ignore[arg-type]
