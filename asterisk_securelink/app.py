"""The composition root: every part of `securelink run` and `securelink agi` is built here, once, and handed what it
needs through its constructor. Nothing is reached through another part, and nothing is swapped after construction.

```
Store ──┬─ AuditWriter ─┐
        │               ├─ Notifier (audit, /metrics, AMI) ─┬─ GuessGuard (lockouts)
Metrics ┼───────────────┘   AmiPublisher ───────────────────┤
        └─ LiveKeys ─────────────────── VerificationService ┤
CallBook (escrow) + VoucherStore ── CallKeys ───────────────┼─ inbound Handlers, outbound CallHooks
ApiStore (device API) ──────────────────────────────────────┘
AriClient ── Outbound, StasisRunner (runner.py)
```

`build` makes the parts (no network I/O: the clients connect when `runner` starts them); `runner` starts and stops
them in order. `verifier` is the smaller set the CLI's `securelink verify` runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from asterisk_securelink.asterisk.ami import AmiPublisher
from asterisk_securelink.asterisk.ami_ends import EVENT_MASK
from asterisk_securelink.asterisk.ari.client import AriClient
from asterisk_securelink.audit import AuditWriter
from asterisk_securelink.auditspool import Spool
from asterisk_securelink.calling.callback import CallbackCalls
from asterisk_securelink.calling.guard import RouteGuard
from asterisk_securelink.calling.identity import RoutingIdentity
from asterisk_securelink.calling.onward import Onward
from asterisk_securelink.callkeys.book import CallBook
from asterisk_securelink.callkeys.service import CallKeys
from asterisk_securelink.callkeys.store import VoucherStore
from asterisk_securelink.callkeys.vouchers import VoucherKeys
from asterisk_securelink.config import SYSTEM_CONFIG, SYSTEM_STATE_DIR, Config
from asterisk_securelink.core.lockout import LockoutEvent
from asterisk_securelink.core.slk1 import now_ms
from asterisk_securelink.errors import StartupError
from asterisk_securelink.inbound.guard import GuessGuard
from asterisk_securelink.inbound.service import AuditLog, VerificationService
from asterisk_securelink.livekeys import DEVICE_SYNC_MIN_INTERVAL, LiveKeys
from asterisk_securelink.metrics import Metrics
from asterisk_securelink.notifier import Notifier
from asterisk_securelink.provision import intent_settings, offer
from asterisk_securelink.store import sqlite
from asterisk_securelink.store.api_store import ApiStore
from asterisk_securelink.store.ends import CallEndWriter
from asterisk_securelink.store.intents import IntentStore
from asterisk_securelink.store.lanes import Lanes, lanes_for
from asterisk_securelink.store.lockout import LockoutStore
from asterisk_securelink.store.routes import RouteLeases
from asterisk_securelink.store.store import Store

log = logging.getLogger(__name__)

# The ARI events the Stasis app reads (`StasisRunner.on_event`, the outbound controller, the client's takeover
# warning): Asterisk is asked to send only these, not a ChannelVarset for every variable the app sets, and so on.
APP_EVENTS = (
    "StasisStart", "StasisEnd", "ChannelDestroyed", "ApplicationReplaced",
    "ChannelDtmfReceived", "PlaybackFinished",  # the access number's DTMF collection (inbound/access.py)
    "ChannelStateChange",  # an admitted call followed to its end answers (calling/onward.py)
)  # fmt: skip


@dataclass(frozen=True)
class App:
    """The parts of a running node; `runner` starts and stops them."""

    cfg: Config
    store: Store
    audit: AuditWriter
    metrics: Metrics | None
    publisher: AmiPublisher | None
    notifier: Notifier
    keys: LiveKeys
    service: VerificationService
    callkeys: CallKeys
    api: ApiStore | None  # the device API's directory: None unless `[device_api] listen`
    intents: IntentStore | None = None  # the intents' single use: None unless `[calling]` offers intents


def verifier(
    cfg: Config,
    store: Store,
    master_key: bytes,
    audit: AuditLog,
    *,
    metrics: Metrics | None = None,
    alert: Callable[[LockoutEvent], None] | None = None,
    node: str | None = None,
    clock_ms: Callable[[], int] = now_ms,
    device_sync_interval: float = DEVICE_SYNC_MIN_INTERVAL,
) -> VerificationService:
    """The verification service with its live key index and guess guard (the guard's budget follows the index)."""
    keys = LiveKeys(
        cfg, store, master_key, clock_ms=clock_ms, device_sync_interval=device_sync_interval, metrics=metrics
    )
    guard = GuessGuard(cfg.lockout, LockoutStore(store), keys.strength_inputs, alert=alert)
    return VerificationService(cfg, store, keys, guard, audit, node=node)


def audit_spool_path(cfg: Config) -> Path:
    """Where audit events wait while the database is down: beside an SQLite database, in the system state directory
    for a system installation, else beside the config (a place the service may write)."""
    db = sqlite.sqlite_path(cfg.database_url)
    if db is not None:
        return db.parent / "audit-spool.jsonl"
    if cfg.source is not None and cfg.source.parent == SYSTEM_CONFIG.parent:
        return SYSTEM_STATE_DIR / "audit-spool.jsonl"
    return cfg.base_dir / "audit-spool.jsonl"


def publisher_for(cfg: Config, events: bool | str = False) -> AmiPublisher | None:
    """`events`: the Stasis app reads `user` events (`asterisk.ami_ends`: the ends of handed-over calls)."""
    if not cfg.ami.enabled or not cfg.ami.secret:
        log.info("AMI disabled (ami.enabled = false or no ami.secret): no SecureLinkVerdict events")
        return None
    return AmiPublisher.from_config(cfg.ami, events=events)


def ari_client(cfg: Config) -> AriClient:
    url = cfg.ari.url.rstrip("/")
    base = url if url.endswith("/ari") else url + "/ari"
    return AriClient(base, cfg.ari.username, cfg.ari.password, cfg.ari.app, events=APP_EVENTS)


def call_book(cfg: Config, store: Store) -> CallBook:
    """The escrow half of the per-call keys; an escrow public key that does not load stops the start."""
    book = CallBook(cfg, store)
    try:
        public = book.keyring.current()
    except (OSError, ValueError) as exc:
        raise StartupError(f"escrow.public_key_file: cannot load the escrow public key ({exc})") from None
    if public is None and not cfg.device_api.enabled:
        log.warning("escrow.public_key_file is not set: connected calls get no per-call key")
    return book


def build(cfg: Config, store: Store, master_key: bytes, *, needs_ari: bool) -> App:
    """Every part, once, each given its collaborators. `needs_ari`: the Stasis app (`/health` requires ARI)."""
    metrics = Metrics(cfg.keys.period, needs_ari=needs_ari) if cfg.metrics.listen else None

    async def database_answers() -> bool:
        return await store.schema_revision() is not None

    audit = AuditWriter(
        store.audit_many,
        spool=Spool(audit_spool_path(cfg)),
        ping=database_answers,
        on_database_state=metrics.database if metrics is not None else None,
    )
    publisher = publisher_for(cfg, EVENT_MASK if needs_ari else False)
    notifier = Notifier(audit.record, metrics, publisher)
    keys = LiveKeys(cfg, store, master_key, metrics=metrics)
    guard = GuessGuard(cfg.lockout, LockoutStore(store), keys.strength_inputs, alert=notifier.lockout)
    service = VerificationService(cfg, store, keys, guard, notifier)
    api: ApiStore | None = None
    vouchers: VoucherStore | None = None
    lanes: Lanes | None = lanes_for(store.engine) if cfg.device_api.enabled or cfg.calling.intents_on else None
    intents = IntentStore(store, lanes) if lanes is not None and cfg.calling.intents_on else None
    if lanes is not None and cfg.device_api.enabled:
        vouchers = VoucherStore(lanes, VoucherKeys(master_key), cfg.keys.trunk_prefixes)  # the phones' `trunk`
        api = ApiStore(store, master_key, offer(cfg), notify=notifier.api_event, vouchers=vouchers, lanes=lanes,
                       intents=intents, intent_settings=intent_settings(cfg))  # fmt: skip
    callkeys = CallKeys(cfg, call_book(cfg, store), vouchers)
    return App(cfg, store, audit, metrics, publisher, notifier, keys, service, callkeys, api, intents)


@dataclass(frozen=True)
class Calling:
    """Where admitted calls go, on a Stasis node (`calling`): the onward routing and, with the device API, callbacks."""

    leases: RouteLeases
    onward: Onward
    callbacks: CallbackCalls | None
    ends: CallEndWriter  # the ends of onward-routed calls (closed after `onward`)


def calling_for(app: App, ari: AriClient, node: str) -> Calling:
    """`node`: this node's name in the leases (reclaimed when it starts again, so stable across restarts)."""
    cfg = app.cfg
    leases = RouteLeases(app.store, node[:64])
    identity = RoutingIdentity(cfg.routing, ari)
    guard = RouteGuard(cfg.routing, leases)
    ends = CallEndWriter(app.store.engine)
    onward = Onward(cfg, app.store, identity, guard, ari, app.notifier, ends, node=leases.node)
    callbacks = None
    vouchers = app.callkeys.vouchers  # with the device API on: a callback is confirmed by claiming its voucher
    if app.api is not None and vouchers is not None:
        callbacks = CallbackCalls(cfg.ari.app, app.store, ari, identity.resolve, guard, leases, vouchers,
                                  app.notifier, records=app.callkeys,
                                  max_call_seconds=cfg.routing.max_call_seconds)  # fmt: skip
    return Calling(leases, onward, callbacks, ends)
