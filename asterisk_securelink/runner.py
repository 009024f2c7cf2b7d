"""Wiring for the long-running commands: `securelink run` (Stasis app) and `securelink agi` (FastAGI server).

Builds the service from the config, connects the adapters, runs until SIGINT/SIGTERM, and shuts down cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from asterisk_securelink import masterkey
from asterisk_securelink.asterisk.agi import REGISTER_ROUTE, FastAgiServer
from asterisk_securelink.asterisk.ami import AmiPublisher
from asterisk_securelink.asterisk.ari.client import AriClient
from asterisk_securelink.asterisk.ari.events import Event, StasisStart
from asterisk_securelink.audit import AuditWriter
from asterisk_securelink.auditspool import Spool
from asterisk_securelink.config import SYSTEM_CONFIG, SYSTEM_STATE_DIR, Config
from asterisk_securelink.deviceapi.runtime import device_api_for
from asterisk_securelink.errors import StartupError
from asterisk_securelink.inbound.guard import LockoutAlerts
from asterisk_securelink.inbound.service import VerificationService
from asterisk_securelink.inbound.stasis import Handlers
from asterisk_securelink.metrics import Metrics, MetricsServer, parse_listen
from asterisk_securelink.outbound.callkeys import CallBook, CallHooks, CallVouchers, TlsLegs
from asterisk_securelink.outbound.controller import Outbound, OutboundHooks
from asterisk_securelink.stasis import CallInfo, call_info, waiting_call
from asterisk_securelink.store import sqlite
from asterisk_securelink.store.migrations import head_revision
from asterisk_securelink.store.store import Store

log = logging.getLogger(__name__)

# Threads hand work to the event loop and back (aiosqlite's connection thread, the index builder's slices); a thread
# that wants the GIL while the loop is busy waits up to the switch interval, 5 ms by default, for each hand-off.
# 0.5 ms bounds that wait for admissions (docs/benchmarks.md, "Admission throughput").
SWITCH_INTERVAL = 0.0005
# The ARI events the Stasis app reads (`StasisRunner.on_event`, the outbound controller, the client's takeover
# warning): Asterisk is asked to send only these, not a ChannelVarset for every variable the app sets, and so on.
APP_EVENTS = ("StasisStart", "StasisEnd", "ChannelDestroyed", "ApplicationReplaced")


def audit_spool_path(cfg: Config) -> Path:
    """Where audit events wait while the database is down: beside an SQLite database, in the system state directory
    for a system installation, else beside the config (a place the service may write)."""
    db = sqlite.sqlite_path(cfg.database_url)
    if db is not None:
        return db.parent / "audit-spool.jsonl"
    if cfg.source is not None and cfg.source.parent == SYSTEM_CONFIG.parent:
        return SYSTEM_STATE_DIR / "audit-spool.jsonl"
    return cfg.base_dir / "audit-spool.jsonl"


def settle_for_serving() -> None:
    """Once the index is built: a short GIL switch interval (SWITCH_INTERVAL), and what start-up allocated moved out
    of the garbage collector's sight (`gc.freeze`), so a full collection does not walk the index's objects (~0.1 s
    at 100k devices) in the middle of a call."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.collect(1)  # the young garbage of start-up; a full collection would cost ~0.2 s at 100k devices
    gc.freeze()


@contextlib.asynccontextmanager
async def service_for(cfg: Config) -> AsyncIterator[VerificationService]:
    key = masterkey.load(cfg.master_key_path)
    problem = sqlite.access_problem(cfg.database_url)
    if problem is not None:
        raise StartupError(problem)
    store = Store.from_url(cfg.database_url)

    async def database_answers() -> bool:
        return await store.schema_revision() is not None

    audit = AuditWriter(store.audit_many, spool=Spool(audit_spool_path(cfg)), ping=database_answers)
    try:
        rev = await store.schema_revision()
        if rev != head_revision():
            raise StartupError("the database schema is not current: run `securelink db upgrade`")
        service = VerificationService(cfg, store, key, audit=audit)
        await audit.replay()  # events a crash during a database outage left in the spool file
        await service.start()
        for warning in cfg.warnings():
            log.warning("%s", warning)
        log.info("index ready: %d devices; %s", len(service.keys.index), service.keys.strength_line())
        settle_for_serving()
        yield service
        if not await audit.drain():
            log.error("%d audit event(s) could not be written before stopping", audit.pending)
    finally:
        await audit.close()
        await store.close()


@contextlib.asynccontextmanager
async def publisher_for(cfg: Config) -> AsyncIterator[AmiPublisher | None]:
    if not cfg.ami.enabled or not cfg.ami.secret:
        log.info("AMI disabled (ami.enabled = false or no ami.secret): no SecureLinkVerdict events")
        yield None
        return
    pub = AmiPublisher.from_config(cfg.ami)
    await pub.start()
    try:
        yield pub
    finally:
        await pub.close()


@contextlib.asynccontextmanager
async def metrics_for(cfg: Config, service: VerificationService, needs_ari: bool) -> AsyncIterator[Metrics | None]:
    """The /metrics + /health server when `[metrics] listen` is set (validated with the config)."""
    if not cfg.metrics.listen:
        yield None
        return
    metrics = Metrics(cfg.keys.period)
    metrics.needs_ari = needs_ari
    service.keys.metrics = metrics
    service.audit.on_database_state = metrics.database
    metrics.index_refreshed(service.keys.last_refresh_seconds, len(service.keys.index))  # built by service.start()
    host, port = parse_listen(cfg.metrics.listen, cfg.metrics.allow_remote)
    server = MetricsServer(
        metrics, host, port, count_escrow=service.store.count_call_keys, pending_audit=lambda: service.audit.pending
    )
    try:
        await server.start()
    except OSError as exc:
        raise StartupError(f"metrics.listen: cannot listen on {cfg.metrics.listen} ({exc.strerror})") from None
    try:
        yield metrics
    finally:
        service.keys.metrics = None
        service.audit.on_database_state = None
        await server.close()


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


def ari_client(cfg: Config) -> AriClient:
    url = cfg.ari.url.rstrip("/")
    base = url if url.endswith("/ari") else url + "/ari"
    return AriClient(base, cfg.ari.username, cfg.ari.password, cfg.ari.app, events=APP_EVENTS)


class StasisRunner:
    """Connects the ARI event stream to the handlers; re-syncs channels after every reconnect."""

    def __init__(
        self,
        cfg: Config,
        service: VerificationService,
        ari: AriClient,
        handlers: Handlers,
        outbound: Outbound | None = None,
    ) -> None:
        self.cfg = cfg
        self.service = service
        self.ari = ari
        self.handlers = handlers
        self.outbound = outbound
        self._in_flight: set[str] = set()

    async def on_event(self, event: Event) -> None:
        if isinstance(event, StasisStart):
            await self._handle(call_info(event))
        elif self.outbound is not None:
            await self.outbound.on_event(event)  # leg and caller hangups of outbound calls; others are ignored

    async def _handle(self, call: CallInfo) -> None:
        if call.channel_id in self._in_flight:
            return
        self._in_flight.add(call.channel_id)
        try:
            if self.outbound is not None and self.outbound.handles(call):  # mobile, fork, leg
                await self.outbound.stasis_start(call)
            else:
                await self.handlers.stasis_start(call)
        finally:
            self._in_flight.discard(call.channel_id)

    async def on_connect(self) -> None:
        """Events sent while disconnected are lost: pick up channels that are waiting in our app."""
        try:
            channels = await self.ari.get_channels()
        except Exception as exc:  # noqa: BLE001 - the next reconnect tries again
            log.warning("re-sync after connect failed (%s)", type(exc).__name__)
            return
        if self.outbound is not None:
            await self.outbound.reconcile({ch.id for ch in channels})
        waiting = [c for c in (waiting_call(ch, self.cfg.ari.app) for ch in channels) if c is not None]
        if waiting:
            log.warning("re-sync: %d channel(s) were waiting in Stasis while disconnected", len(waiting))
        await asyncio.gather(*(self._handle(call) for call in waiting))


def outbound_for(
    cfg: Config,
    service: VerificationService,
    ari: AriClient,
    publisher: AmiPublisher | None,
    hooks: OutboundHooks | None = None,
    vouchers: CallVouchers | None = None,
) -> Outbound:
    """The outbound controller; by default with the escrowed per-call keys and call records of `calls.CallHooks`
    (and, with the device API, the vouchers of those keys)."""
    if hooks is None:
        book = CallBook(cfg, service.store)
        try:
            public = book.keyring.current()
        except (OSError, ValueError) as exc:
            raise StartupError(f"escrow.public_key_file: cannot load the escrow public key ({exc})") from None
        if public is None and vouchers is None:
            log.warning("escrow.public_key_file is not set: connected calls get no per-call key")
        hooks = CallHooks(book, TlsLegs(ari), vouchers)
    return Outbound(
        cfg,
        service.store,
        ari,
        service.keys.outbound_key,
        service.keys.epoch_now,
        hooks=hooks,
        audit=service.audit.record,
        publisher=publisher,
    )


@contextlib.asynccontextmanager
async def _serving(
    cfg: Config, needs_ari: bool
) -> AsyncIterator[tuple[asyncio.Event, VerificationService, AmiPublisher | None, Metrics | None]]:
    """What both long-running commands share: the service with its index kept fresh, AMI, metrics, and the stop
    signal (SIGINT/SIGTERM)."""
    stop = _stop_event()
    async with (
        service_for(cfg) as service,
        publisher_for(cfg) as publisher,
        metrics_for(cfg, service, needs_ari=needs_ari) as metrics,
    ):
        refresher = asyncio.create_task(service.keys.keep_fresh(stop), name="index")
        service.guard.alert = alerts = LockoutAlerts(publisher, metrics)  # SecureLinkLockout, securelink_lockouts_total
        try:
            yield stop, service, publisher, metrics
        finally:
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
            service.guard.alert = None
            await alerts.drain()


async def run_stasis(cfg: Config) -> None:
    async with (
        _serving(cfg, needs_ari=True) as (stop, service, publisher, metrics),
        device_api_for(cfg, service, publisher, metrics) as vouchers,  # off (None) unless [device_api] listen
    ):
        ari = ari_client(cfg)
        await service.learn_node(ari.asterisk_info)
        handlers = Handlers(cfg, service, ari, publisher, metrics, vouchers)
        outbound = outbound_for(cfg, service, ari, publisher, vouchers=vouchers)
        runner = StasisRunner(cfg, service, ari, handlers, outbound)
        events = asyncio.create_task(
            ari.run(
                runner.on_event,
                on_connect=runner.on_connect,
                on_state_change=metrics.ari_state if metrics is not None else None,
            ),
            name="ari",
        )
        events.add_done_callback(lambda t: stop.set())  # ARI refused our credentials: stop, exit non-zero
        log.info("securelink Stasis app %r starting (ARI %s)", cfg.ari.app, cfg.ari.url)
        try:
            await stop.wait()
            if events.done() and not events.cancelled() and events.exception() is not None:
                raise StartupError(f"ARI refused the connection ({events.exception()}): check [ari] in the config")
        finally:
            log.info("securelink stopping")
            await ari.close()
            events.cancel()
            await asyncio.gather(events, return_exceptions=True)
            await outbound.close()
            await handlers.drain()


def agi_server(cfg: Config, handlers: Handlers) -> FastAgiServer:
    """The FastAGI server of `securelink agi`: the `verify` and `register` routes of the handlers. Connections from
    the peers `[agi] allow_from` names, on a loopback address unless `[agi] allow_remote` (`agi_access`)."""
    server = FastAgiServer(handlers.agi_verify, allow_from=cfg.agi.allow_from, allow_remote=cfg.agi.allow_remote)
    server.add_variables_route(REGISTER_ROUTE, handlers.agi_register)
    return server


async def run_agi(cfg: Config) -> None:
    async with (
        _serving(cfg, needs_ari=False) as (stop, service, publisher, metrics),
        device_api_for(cfg, service, publisher, metrics, serve=False) as vouchers,  # claimed through a `run` node
    ):
        handlers = Handlers(cfg, service, _NoChannels(), publisher, metrics, vouchers)
        server = agi_server(cfg, handlers)
        try:
            await server.serve(cfg.agi.host, cfg.agi.port)
        except ValueError as exc:  # a listen address the allow_remote rule refuses
            raise StartupError(f"agi.host: {exc}") from None
        try:
            await stop.wait()
        finally:
            await server.stop()
            await handlers.drain()


class _NoChannels:
    """FastAGI does not control channels: the dialplan decides from the variables."""

    async def set_channel_var(self, channel_id: str, name: str, value: str) -> None:
        raise NotImplementedError

    async def continue_in_dialplan(
        self, channel_id: str, context: str | None = None, extension: str | None = None, priority: int | None = None
    ) -> None:
        raise NotImplementedError

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
        raise NotImplementedError
