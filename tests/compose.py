"""The verification service as the tests build it: `app.verifier` with an `AuditWriter` the test can drain."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from asterisk_securelink.app import verifier
from asterisk_securelink.audit import AuditWriter
from asterisk_securelink.callkeys.store import VoucherStore
from asterisk_securelink.callkeys.vouchers import VoucherKeys
from asterisk_securelink.config import Config
from asterisk_securelink.core.slk1 import now_ms
from asterisk_securelink.deviceapi.ports import DeviceParams
from asterisk_securelink.inbound.service import VerificationService
from asterisk_securelink.livekeys import DEVICE_SYNC_MIN_INTERVAL
from asterisk_securelink.metrics import Metrics
from asterisk_securelink.notifier import Notifier
from asterisk_securelink.store.api_store import ApiStore
from asterisk_securelink.store.lanes import lanes_for
from asterisk_securelink.store.store import Store


def make_service(
    cfg: Config,
    store: Store,
    master: bytes,
    *,
    clock_ms: Callable[[], int] = now_ms,
    device_sync_interval: float = DEVICE_SYNC_MIN_INTERVAL,
    audit: AuditWriter | None = None,
    metrics: Metrics | None = None,
) -> VerificationService:
    writer = audit if audit is not None else AuditWriter(store.audit_many)
    return verifier(
        cfg, store, master, writer, clock_ms=clock_ms, device_sync_interval=device_sync_interval, metrics=metrics
    )


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
