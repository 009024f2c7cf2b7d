"""The long-running commands: `securelink run` (Stasis app) and `securelink agi` (FastAGI server).

The parts are built once by the composition root (`app.build`); this module starts them in order (store, index,
AMI, metrics, device API, ARI), routes each Stasis call to inbound or outbound, runs until SIGINT/SIGTERM, and stops
them in the reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from asterisk_securelink import masterkey
from asterisk_securelink.app import App, ari_client, build, calling_for
from asterisk_securelink.asterisk.agi import REGISTER_ROUTE, FastAgiServer
from asterisk_securelink.asterisk.ami_ends import CallEnds
from asterisk_securelink.asterisk.ari.client import AriClient
from asterisk_securelink.asterisk.ari.events import Event, StasisStart
from asterisk_securelink.calling.callback import CallbackCalls
from asterisk_securelink.calling.onward import Onward
from asterisk_securelink.config import Config
from asterisk_securelink.core.slk1 import now_ms
from asterisk_securelink.deviceapi.server import server_from_config
from asterisk_securelink.errors import StartupError
from asterisk_securelink.inbound.access import AccessHandler
from asterisk_securelink.inbound.handlers import Handlers
from asterisk_securelink.metrics import MetricsServer, parse_listen
from asterisk_securelink.outbound.controller import Outbound
from asterisk_securelink.outbound.hooks import CallHooks, TlsLegs
from asterisk_securelink.stasis import CallInfo, call_info, waiting_call
from asterisk_securelink.store import sqlite
from asterisk_securelink.store.api_store import ApiStore
from asterisk_securelink.store.migrations import head_revision
from asterisk_securelink.store.models import utcnow
from asterisk_securelink.store.routes import RouteLeases
from asterisk_securelink.store.store import Store
from asterisk_securelink.tasks import BackgroundTasks

log = logging.getLogger(__name__)

# Threads hand work to the event loop and back (aiosqlite's connection thread, the index builder's slices); a thread
# that wants the GIL while the loop is busy waits up to the switch interval, 5 ms by default, for each hand-off.
# 0.5 ms bounds that wait for admissions (docs/benchmarks.md, "Admission throughput").
SWITCH_INTERVAL = 0.0005
PURGE_EVERY = 30.0  # seconds between purges of expired vouchers, nonces and codes (device API)
LEASE_RENEW_EVERY = 30.0  # seconds between renewals of this node's leases (CALLING.md, "Several nodes")


def settle_for_serving() -> None:
    """Once the index is built: a short GIL switch interval (SWITCH_INTERVAL), and what start-up allocated moved out
    of the garbage collector's sight (`gc.freeze`), so a full collection does not walk the index's objects (~0.1 s
    at 100k devices) in the middle of a call."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.collect(1)  # the young garbage of start-up; a full collection would cost ~0.2 s at 100k devices
    gc.freeze()


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


class StasisRunner:
    """Connects the ARI event stream to the handlers; re-syncs channels after every reconnect."""

    def __init__(
        self,
        cfg: Config,
        ari: AriClient,
        handlers: Handlers,
        outbound: Outbound | None = None,
        access: AccessHandler | None = None,
        onward: Onward | None = None,
        callbacks: CallbackCalls | None = None,
    ) -> None:
        self.cfg = cfg
        self.ari = ari
        self.handlers = handlers
        self.outbound = outbound
        self.access = access
        self.onward = onward
        self.callbacks = callbacks
        self._in_flight: set[str] = set()

    async def on_event(self, event: Event) -> None:
        if isinstance(event, StasisStart):
            await self._handle(call_info(event))
        elif self.access is not None and await self.access.on_event(event):
            return  # the digits, playbacks and hang-up of an access call in its DTMF collection
        elif self.onward is not None and await self.onward.on_event(event):
            return  # an admitted call in the app's dial tone, or followed to its end
        elif self.callbacks is not None and await self.callbacks.on_event(event):
            return  # the two halves of a callback
        elif self.outbound is not None:
            await self.outbound.on_event(event)  # leg and caller hangups of outbound calls; others are ignored

    async def _handle(self, call: CallInfo) -> None:
        if call.channel_id in self._in_flight:
            return
        self._in_flight.add(call.channel_id)
        try:
            if self.outbound is not None and self.outbound.handles(call):  # mobile, fork, leg
                await self.outbound.stasis_start(call)
            elif self.callbacks is not None and self.callbacks.handles(call):  # callback,<id> / callback-dest,<id>
                await self.callbacks.stasis_start(call)
            elif self.access is not None and self.access.handles(call):  # inbound,access: intent or DTMF
                await self.access.stasis_start(call)
            else:
                await self.handlers.stasis_start(call)
        finally:
            self._in_flight.discard(call.channel_id)

    async def reconcile_onward(self) -> None:
        """Admitted calls whose channel is gone although no end reached us (one `GET /channels`)."""
        if self.onward is not None and self.onward.followed:
            before = self.onward.leased()  # a call leased while the list is being made is not judged by it
            await self.onward.reconcile({ch.id for ch in await self.ari.get_channels()}, among=before)

    async def on_connect(self) -> None:
        """Events sent while disconnected are lost: pick up channels that are waiting in our app."""
        try:
            channels = await self.ari.get_channels()
        except Exception as exc:  # noqa: BLE001 - the next reconnect tries again
            log.warning("re-sync after connect failed (%s)", type(exc).__name__)
            return
        if self.outbound is not None:
            await self.outbound.reconcile({ch.id for ch in channels})
        if self.onward is not None:
            await self.onward.reconcile({ch.id for ch in channels})
        if self.callbacks is not None:
            await self.callbacks.reconcile({ch.id for ch in channels})
        waiting = [c for c in (waiting_call(ch, self.cfg.ari.app) for ch in channels) if c is not None]
        if waiting:
            log.warning("re-sync: %d channel(s) were waiting in Stasis while disconnected", len(waiting))
        await asyncio.gather(*(self._handle(call) for call in waiting))


def outbound_for(app: App, ari: AriClient) -> Outbound:
    """The outbound controller, with the per-call keys on TLS legs and the call records (`outbound.hooks`)."""
    hooks = CallHooks(app.callkeys, TlsLegs(ari))
    keys = app.keys
    return Outbound(app.cfg, app.store, ari, keys.outbound_key, keys.epoch_now, notifier=app.notifier, hooks=hooks)


@contextlib.asynccontextmanager
async def opened(cfg: Config, *, needs_ari: bool) -> AsyncIterator[App]:
    """The store (its schema current), every part built once (`app.build`), the audit spool replayed, the index built,
    AMI and `/metrics` started; stopped in the reverse order."""
    key = masterkey.load(cfg.master_key_path)
    problem = sqlite.access_problem(cfg.database_url)
    if problem is not None:
        raise StartupError(problem)
    store = Store.from_url(cfg.database_url)
    try:
        if await store.schema_revision() != head_revision():
            raise StartupError("the database schema is not current: run `securelink db upgrade`")
        app = build(cfg, store, key, needs_ari=needs_ari)
        try:
            await app.audit.replay()  # events a crash during a database outage left in the spool file
            await app.service.start()
            for warning in cfg.warnings():
                log.warning("%s", warning)
            log.info("index ready: %d devices; %s", len(app.keys.index), app.keys.strength_line())
            settle_for_serving()
            async with _publisher(app), _metrics_server(app):
                yield app
                await app.notifier.drain()
            if not await app.audit.drain():
                log.error("%d audit event(s) could not be written before stopping", app.audit.pending)
        finally:
            if app.api is not None:
                await app.api.close()
            await app.audit.close()
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _publisher(app: App) -> AsyncIterator[None]:
    if app.publisher is None:
        yield
        return
    await app.publisher.start()
    try:
        yield
    finally:
        await app.publisher.close()


@contextlib.asynccontextmanager
async def _metrics_server(app: App) -> AsyncIterator[None]:
    """The /metrics + /health server when `[metrics] listen` is set (validated with the config)."""
    if app.metrics is None:
        yield
        return
    cfg = app.cfg
    host, port = parse_listen(cfg.metrics.listen, cfg.metrics.allow_remote)
    server = MetricsServer(
        app.metrics, host, port, count_escrow=app.store.count_call_keys, pending_audit=lambda: app.audit.pending
    )
    try:
        await server.start()
    except OSError as exc:
        raise StartupError(f"metrics.listen: cannot listen on {cfg.metrics.listen} ({exc.strerror})") from None
    try:
        yield
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def _serving(cfg: Config, needs_ari: bool) -> AsyncIterator[tuple[asyncio.Event, App]]:
    """What both long-running commands share: the parts with the index kept fresh, and the stop signal."""
    stop = _stop_event()
    async with opened(cfg, needs_ari=needs_ari) as app:
        background = BackgroundTasks()
        background.spawn(app.keys.keep_fresh(stop), name="index")
        if app.intents is not None:  # expired intents and old noise records, on every node
            intents, quiet = app.intents, cfg.calling.intent_quiet
            background.spawn(_purge_forever("intents", lambda: intents.purge(now_ms(), quiet)), name="intent-purge")
        try:
            yield stop, app
        finally:
            background.cancel()
            await background.drain(1.0)


async def run_stasis(cfg: Config) -> None:
    async with _serving(cfg, needs_ari=True) as (stop, app):
        ari = ari_client(cfg)
        await app.service.learn_node(ari.asterisk_info)
        calling = calling_for(app, ari, f"{app.service.node}/{cfg.ari.app}")
        reclaimed = await calling.leases.reclaim()  # what this node held when it stopped or crashed
        if reclaimed:
            log.warning("%d lease(s) of calls this node routed before it restarted were reclaimed", reclaimed)
        onward = calling.onward
        ends = CallEnds(app.publisher, onward.ended) if app.publisher is not None else None
        if ends is not None:
            onward.ends_by_ami = lambda: ends.live
        handlers = Handlers(cfg, app.service, ari, app.notifier, app.callkeys, onward=onward)
        outbound = outbound_for(app, ari)
        access = AccessHandler(cfg, app.service, ari, app.notifier, intents=app.intents, callkeys=app.callkeys,
                               registrable=handlers.allow_register, onward=onward)  # fmt: skip
        runner = StasisRunner(cfg, ari, handlers, outbound, access, onward, calling.callbacks)
        upkeep = BackgroundTasks()
        upkeep.spawn(_leases_forever(calling.leases, app, runner.reconcile_onward), name="leases")
        metrics = app.metrics
        async with device_api(app, calling.callbacks):
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
                upkeep.cancel()
                await upkeep.drain(1.0)
                try:
                    for part in (outbound, access, onward, calling.callbacks, calling.ends, ends):
                        if part is not None:
                            await part.close()
                finally:
                    handlers.flush_overload()


@contextlib.asynccontextmanager
async def device_api(app: App, callbacks: CallbackCalls | None = None) -> AsyncIterator[ApiStore | None]:
    """The device API's listener on this event loop and its purge loop, when `[device_api] listen` is set (else
    None). A listen address that cannot be used, a certificate that does not load: `StartupError`, one line."""
    if app.api is None:
        yield None
        return
    cfg = app.cfg
    try:
        server = server_from_config(
            cfg.device_api, app.api, cfg.path, callbacks=callbacks, limiter=app.api.enroll_limits
        )
    except ValueError as exc:  # settings, or a certificate that does not load (deviceapi.tls.TlsError)
        raise StartupError(str(exc)) from None
    try:
        await server.start()
    except OSError as exc:
        raise StartupError(f"device_api.listen: cannot listen on {cfg.device_api.listen} ({exc.strerror})") from None
    api = app.api
    purger = asyncio.create_task(_purge_forever("device api", lambda: api.purge(now_ms())), name="device-api-purge")
    try:
        yield app.api
    finally:
        purger.cancel()
        await asyncio.gather(purger, return_exceptions=True)
        await server.close()


async def _purge_forever(what: str, purge: Callable[[], Awaitable[dict[str, int]]]) -> None:
    """Every PURGE_EVERY seconds, delete what can no longer be used (expired vouchers, nonces, codes, intents)."""
    while True:
        try:
            deleted = await purge()
            if any(deleted.values()):
                log.debug("%s purge: %s", what, deleted)
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("%s: purge failed (%s)", what, type(exc).__name__)
        await asyncio.sleep(PURGE_EVERY)


async def _leases_forever(leases: RouteLeases, app: App, reconcile: Callable[[], Awaitable[None]]) -> None:
    """Every LEASE_RENEW_EVERY seconds: the calls whose end we missed finished (`reconcile`: an AMI end event lost
    across a reconnect), this node's leases renewed (a lease not renewed for 90 s no longer counts), stale leases and
    spends older than a day deleted, call records past `[calling] record_days` deleted."""
    days = app.cfg.calling.record_days
    while True:
        await asyncio.sleep(LEASE_RENEW_EVERY)
        try:
            await reconcile()
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("onward: reconcile failed (%s)", type(exc).__name__)
        try:
            await leases.renew(now_ms())
            await leases.purge(now_ms())
            await app.callkeys.book.purge_records(utcnow() - timedelta(days=days))
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("leases: renewal or purge failed (%s)", type(exc).__name__)


def agi_server(cfg: Config, handlers: Handlers) -> FastAgiServer:
    """The FastAGI server of `securelink agi`: the `verify` and `register` routes of the handlers. Connections from
    the peers `[agi] allow_from` names, on a loopback address unless `[agi] allow_remote` (`agi_access`)."""
    server = FastAgiServer(handlers.agi_verify, allow_from=cfg.agi.allow_from, allow_remote=cfg.agi.allow_remote)
    server.add_variables_route(REGISTER_ROUTE, handlers.agi_register)
    return server


async def run_agi(cfg: Config) -> None:
    """FastAGI does not serve the device API: an admitted call's key is claimed through a `run` node."""
    async with _serving(cfg, needs_ari=False) as (stop, app):
        handlers = Handlers(cfg, app.service, _NoChannels(), app.notifier, app.callkeys, agi_routes=app.store)
        server = agi_server(cfg, handlers)
        try:
            await server.serve(cfg.agi.host, cfg.agi.port)
        except ValueError as exc:  # a listen address the allow_remote rule refuses
            raise StartupError(f"agi.host: {exc}") from None
        try:
            await stop.wait()
        finally:
            await server.stop()


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
