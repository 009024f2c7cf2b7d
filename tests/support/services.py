"""The one place the tests build a `VerificationService`, and the inbound helpers around it.

Every test that needs a service calls `make_service`, so a change to the service's constructor or wiring is made
here once. Its signature follows the constructor's; the master key defaults to the tests' one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from asterisk_securelink import config
from asterisk_securelink.audit import AuditWriter
from asterisk_securelink.config import Config
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret
from asterisk_securelink.core.verdicts import Verdict
from asterisk_securelink.inbound.service import VerificationService, VerifyRequest
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
) -> VerificationService:
    """A `VerificationService` as the tests use it; an argument left out gets the constructor's own default."""
    kw: dict[str, Any] = {"audit": audit}
    if clock_ms is not None:
        kw["clock_ms"] = clock_ms
    if device_sync_interval is not None:
        kw["device_sync_interval"] = device_sync_interval
    return VerificationService(cfg, store, master_key, **kw)


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
