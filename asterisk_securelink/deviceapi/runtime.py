"""The device API inside `securelink run`: the listener, the purge loop, and the vouchers the call paths create.

`device_api_for` starts the server on the service's event loop when `[device_api] listen` is set (else yields None:
no API, no vouchers). `Vouchers` is what the outbound hooks (`outbound.callkeys.CallHooks`) and the inbound handlers
(`inbound.stasis.Handlers`) call: a per-call key, escrowed as before when an escrow key is configured (`CallBook`), and
kept sealed for release (`store.api_store.ApiStore.add_voucher`) for `voucher_ttl` or until the call ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from asterisk_securelink import escrow, masterkey
from asterisk_securelink.asterisk.ami import AmiPublisher
from asterisk_securelink.config import Config
from asterisk_securelink.core.slk1 import now_ms
from asterisk_securelink.deviceapi.ports import ApiEvent
from asterisk_securelink.deviceapi.server import server_from_config
from asterisk_securelink.deviceapi.vouchers import Presentation
from asterisk_securelink.errors import StartupError
from asterisk_securelink.inbound.service import VerificationService
from asterisk_securelink.metrics import Metrics
from asterisk_securelink.outbound.callkeys import CallBook, CallKeyIssued
from asterisk_securelink.provision import device_params
from asterisk_securelink.store.api_store import ApiStore

log = logging.getLogger(__name__)

PURGE_EVERY: Final = 30.0  # seconds between purges of expired vouchers, nonces and codes


class Vouchers:
    """Per-call keys for release to the call's device. `clock` is unix milliseconds."""

    def __init__(self, cfg: Config, api: ApiStore, book: CallBook, clock: Callable[[], int] = now_ms) -> None:
        self.cfg = cfg
        self.api = api
        self.book = book
        self.clock = clock
        self.ttl = cfg.device_api.voucher_ttl

    async def outbound(self, call_id: str, device_id: int, presented: str) -> CallKeyIssued:
        """The mobile leg presents `presented`: the outbound key, or `outbound.present_number` in number mode."""
        if self.cfg.outbound.present == "number":
            shown = self.api.keys.of_number(device_id, presented)
        else:
            shown = self.api.keys.of_key(device_id, self.cfg.outbound_fmt, presented)
        return await self._issue(call_id, device_id, "outbound", shown)

    async def inbound(self, call_id: str, device_id: int, delivered_digits: str) -> str:
        """An admitted call whose key arrived as `delivered_digits` (normalized ANI or DNIS). Returns the call key
        id (SECURELINK_CALL_KEY_ID)."""
        shown = self.api.keys.of_delivered(device_id, self.cfg.inbound_fmt, delivered_digits)
        return (await self._issue(call_id, device_id, "inbound", shown)).key_id

    async def ended(self, call_id: str) -> None:
        await self.api.end_call(call_id)

    async def _issue(self, call_id: str, device_id: int, direction: str, shown: Presentation) -> CallKeyIssued:
        issued = await self.book.issue_call_key(call_id, device_id, direction)  # escrowed, when configured
        if issued is None:
            issued = CallKeyIssued(str(uuid.uuid4()), escrow.new_call_key())
        await self.api.add_voucher(issued.key_id, call_id, device_id, direction, shown, issued.key, self.clock(),
                                   self.ttl)  # fmt: skip
        return issued


class _Announcer:
    """Counts claims in /metrics and publishes them on AMI (`UserEvent: SecureLinkVoucher`), in the background."""

    def __init__(self, metrics: Metrics | None, publisher: AmiPublisher | None) -> None:
        self.metrics = metrics
        self.publisher = publisher
        self._tasks: set[asyncio.Task[Any]] = set()

    def __call__(self, event: ApiEvent) -> None:
        if event.action != "voucher.claim":
            return
        if self.metrics is not None:
            self.metrics.voucher_claim(event.result)
        if self.publisher is not None:
            coro = self.publisher.publish_voucher(
                event.result, event.device_id, event.call_id, event.detail.get("reason", "")
            )
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=3)


@contextlib.asynccontextmanager
async def device_api_for(
    cfg: Config,
    service: VerificationService,
    publisher: AmiPublisher | None = None,
    metrics: Metrics | None = None,
    *,
    serve: bool = True,
) -> AsyncIterator[Vouchers | None]:
    """The device API of `[device_api]`: None when `listen` is not set. With `serve` (`securelink run`) its listener
    on this event loop; without (`securelink agi`) only the vouchers, claimed through a node that serves. A listen
    address that cannot be used, a certificate that does not load: `StartupError`, one line."""
    if not cfg.device_api.enabled:
        yield None
        return
    api = ApiStore(service.store, masterkey.load(cfg.master_key_path), device_params(cfg), audit=service.audit.record)
    announcer = _Announcer(metrics, publisher)
    api.observers.append(announcer)
    vouchers = Vouchers(cfg, api, CallBook(cfg, service.store))
    if not serve:
        yield vouchers
        return
    try:
        server = server_from_config(cfg.device_api, api, cfg.path)
    except ValueError as exc:  # settings, or a certificate that does not load (deviceapi.tls.TlsError)
        raise StartupError(str(exc)) from None
    try:
        await server.start()
    except OSError as exc:
        raise StartupError(f"device_api.listen: cannot listen on {cfg.device_api.listen} ({exc.strerror})") from None
    purger = asyncio.create_task(_purge_forever(api), name="device-api-purge")
    try:
        yield vouchers
    finally:
        purger.cancel()
        await asyncio.gather(purger, return_exceptions=True)
        await server.close()
        await announcer.drain()


async def _purge_forever(api: ApiStore) -> None:
    while True:
        try:
            deleted = await api.purge(now_ms())
            if any(deleted.values()):
                log.debug("device api purge: %s", deleted)
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("device api: purge failed (%s)", type(exc).__name__)
        await asyncio.sleep(PURGE_EVERY)
