"""Prometheus metrics and a health endpoint for `securelink run` / `securelink agi` (`[metrics] listen`).

`Metrics` holds its own registry (never the process-global one) and is fed by thin hooks: the handlers count verdicts
and time admissions, the ARI client reports its connection state, the service reports index refreshes. The escrow row
count comes from a periodic background query, so a scrape never waits on the database. `/health` answers 200 when
the app can make decisions (ARI connected if it is the Stasis app, the database answering, the key index fresh) and
503 otherwise, with the reasons as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from asterisk_securelink.core.listen import listen_refusal, split_listen

log = logging.getLogger(__name__)

ESCROW_POLL = 30.0  # seconds between escrow row counts
ADMISSION_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


def parse_listen(value: str, allow_remote: bool) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:9466`) -> (host, port); loopback unless `allow_remote` (`core.listen`). Raises
    ValueError with what is wrong."""
    host, port = split_listen(value)
    problem = listen_refusal(host, allow_remote, "; set metrics.allow_remote = true to expose it")
    if problem:
        raise ValueError(problem)
    return host, port


class Metrics:
    def __init__(self, period: float, *, needs_ari: bool = False) -> None:
        """`needs_ari`: `/health` requires the ARI connection (the Stasis app; not `securelink agi`)."""
        self.period = period
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.verdicts = Counter(
            "securelink_verdicts", "Verdicts by result", ["result", "direction", "mode"], registry=r
        )  # exposed as securelink_verdicts_total
        self.admission = Histogram(
            "securelink_admission_seconds",
            "StasisStart handled to verdict applied (variables set, call continued or rejected)",
            buckets=ADMISSION_BUCKETS,
            registry=r,
        )
        self.ari_connected = Gauge("securelink_ari_connected", "1 while the ARI events WebSocket is up", registry=r)
        self.ari_reconnects = Counter("securelink_ari_reconnects", "ARI (re)connections after the first", registry=r)
        self.index_refresh = Gauge(
            "securelink_index_refresh_seconds", "Time the last key index refresh took", registry=r
        )
        self.index_devices = Gauge("securelink_index_devices", "Devices in the key index", registry=r)
        self.key_strength_bits = Gauge(
            "securelink_key_strength_bits",
            "log2(S / (W*D)): bits one random guess needs when the key alone identifies the device "
            "(W = look_behind + look_ahead + 1, D = devices in the index); under 30: use two-factor",
            registry=r,
        )
        self.lockouts = Counter(
            "securelink_lockouts",
            "Lockouts started: kind=source when a source spends its key-alone guess budget, kind=caller when a "
            "registered number backs off after failed two-factor guesses",
            ["kind"],
            registry=r,
        )  # exposed as securelink_lockouts_total
        self.overloads = Counter(
            "securelink_overload",
            "Inbound calls turned away unverified because inbound.max_in_flight admissions were already being decided "
            "(verdict error, reason overload)",
            registry=r,
        )  # exposed as securelink_overload_total
        self.escrow_rows = Gauge("securelink_escrow_rows", "Escrowed per-call keys stored", registry=r)
        self.audit_buffered = Gauge("securelink_audit_buffered", "Audit events waiting to be written", registry=r)
        self.voucher_claims = Counter(
            "securelink_voucher_claims", "Device API claims of per-call keys, by result", ["result"], registry=r
        )  # released | repeated | already_claimed | not_found
        self.needs_ari = needs_ari
        self._ari_up = False
        self._connected_once = False
        self._index_at: float | None = None  # monotonic time of the last index refresh
        self._db_ok: bool | None = None

    # -- hooks ---------------------------------------------------------------------------------------------------
    def voucher_claim(self, result: str) -> None:
        self.voucher_claims.labels(result).inc()

    def verdict(self, result: str, direction: str, mode: str) -> None:
        self.verdicts.labels(result, direction, mode).inc()

    def lockout(self, kind: str) -> None:
        self.lockouts.labels(kind).inc()

    def ari_state(self, connected: bool) -> None:
        self.ari_connected.set(1 if connected else 0)
        self._ari_up = connected
        if connected:
            if self._connected_once:
                self.ari_reconnects.inc()
            self._connected_once = True

    def index_refreshed(self, seconds: float, devices: int) -> None:
        self.index_refresh.set(seconds)
        self.index_devices.set(devices)
        self._index_at = time.monotonic()

    def key_strength(self, bits: float) -> None:
        self.key_strength_bits.set(bits)

    def database(self, ok: bool) -> None:
        self._db_ok = ok

    # -- health ----------------------------------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        age = None if self._index_at is None else round(time.monotonic() - self._index_at, 1)
        problems = []
        if self.needs_ari and not self._ari_up:
            problems.append("ARI not connected")
        if self._db_ok is False:
            problems.append("database not answering")
        if age is None or age > 2 * self.period + 5:
            problems.append("key index stale")
        body = {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "ari": self._ari_up,
            "database": self._db_ok,
            "index_age_seconds": age,
        }
        return not problems, body

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """`/metrics` and `/health` on one aiohttp server; plus the periodic escrow row count."""

    def __init__(
        self,
        metrics: Metrics,
        host: str,
        port: int,
        *,
        count_escrow: Callable[[], Awaitable[int]] | None = None,
        pending_audit: Callable[[], int] | None = None,
    ) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self.count_escrow = count_escrow
        self.pending_audit = pending_audit
        self._runner: web.AppRunner | None = None
        self._poller: asyncio.Task[None] | None = None
        self.bound_port: int | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.port
        if self.count_escrow is not None:
            self._poller = asyncio.create_task(self._poll(), name="metrics-escrow")
        log.info("metrics on http://%s:%s/metrics (health: /health)", self.host, self.bound_port)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._runner is not None:
            await self._runner.cleanup()

    async def poll_once(self) -> None:
        if self.count_escrow is None:
            return
        try:
            self.metrics.escrow_rows.set(await self.count_escrow())
            self.metrics.database(True)
        except Exception as exc:  # noqa: BLE001 - a failed count is a health signal, not a crash
            log.warning("metrics: escrow row count failed (%s)", type(exc).__name__)
            self.metrics.database(False)

    async def _poll(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(ESCROW_POLL)

    async def _metrics(self, _request: web.Request) -> web.Response:
        if self.pending_audit is not None:
            self.metrics.audit_buffered.set(self.pending_audit())
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, _request: web.Request) -> web.Response:
        healthy, body = self.metrics.health()
        return web.json_response(body, status=200 if healthy else 503)
