"""The ARI client: `AriClient` is `AriRest` plus the events WebSocket on the same session.

`AriClient.run(handler)` connects, reconnects with capped exponential backoff and jitter after every disconnect (a clean
close too), and calls `on_connect` after every (re)connect: events sent while disconnected are lost, so the app
re-syncs. Events go through a `Dispatcher` (ordered per channel). Nothing here logs a password or an event's contents.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterator

import aiohttp

from asterisk_securelink.asterisk.ari.dispatch import MAX_QUEUE, Dispatcher, Handler
from asterisk_securelink.asterisk.ari.errors import AriError, refusal_message
from asterisk_securelink.asterisk.ari.events import parse_event
from asterisk_securelink.asterisk.ari.rest import REQUEST_TIMEOUT, AriRest

log = logging.getLogger(__name__)

HEARTBEAT = 10.0  # seconds between WebSocket pings; no pong within half of it -> disconnected
BACKOFF_INITIAL = 0.5  # seconds before the first reconnect attempt
BACKOFF_CAP = 5.0  # the longest wait between attempts
BACKOFF_JITTER = 0.2  # each wait is shortened by up to this fraction, so many clients do not reconnect in step
STABLE_AFTER = 10.0  # a connection that lasted this long resets the backoff


def backoff_delays(
    initial: float = BACKOFF_INITIAL,
    cap: float = BACKOFF_CAP,
    jitter: float = BACKOFF_JITTER,
    rng: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Waits between reconnect attempts: initial, doubling up to cap, each shortened by up to `jitter` (0..1)."""
    base = initial
    while True:
        yield base * (1.0 - jitter * rng())
        base = min(cap, base * 2)


class AriClient(AriRest):
    """ARI REST and events over one aiohttp session. Use as `async with AriClient(...) as ari:` or call `close()`
    at the end.

    `url` is the ARI base, e.g. ``http://127.0.0.1:8088/ari``; credentials go in `username`/`password` only.
    """

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        app: str,
        *,
        subscribe_all: bool = False,
        request_timeout: float = REQUEST_TIMEOUT,
        heartbeat: float = HEARTBEAT,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        super().__init__(url, username, password, app, request_timeout=request_timeout)
        self.subscribe_all = subscribe_all
        self.heartbeat = heartbeat
        self.max_queue = max_queue
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected = False
        self._state_changed = asyncio.Event()  # pulsed (set, then replaced) at every state change
        self._running = False
        self._run_done = asyncio.Event()
        self._run_done.set()
        self._fatal: AriError | None = None
        self._on_state_change: Callable[[bool], None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.connects = 0  # successful connects so far (1 + reconnects)

    def __repr__(self) -> str:
        return f"AriClient({self.url!r}, app={self.app!r}, connected={self._connected})"

    @property
    def connected(self) -> bool:
        """True while the events WebSocket is up (the app is registered with Asterisk)."""
        return self._connected

    async def wait_connected(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until the events socket is up: True, or False after `timeout` seconds.
        Raises `AriError` if `run()` gave up (authentication failed)."""
        try:
            async with asyncio.timeout(timeout):
                while not self._connected:
                    if self._fatal is not None:
                        raise AriError(self._fatal.status, self._fatal.message)
                    await self._state_changed.wait()
        except TimeoutError:
            return False
        return True

    async def run(
        self,
        handler: Handler,
        *,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        on_state_change: Callable[[bool], None] | None = None,
    ) -> None:
        """Receive events and pass them to `handler` until `close()`.

        Reconnects after every disconnect (capped exponential backoff with jitter). After each successful connect,
        `on_connect()` runs in its own task (re-sync: events sent while disconnected are lost). `on_state_change`
        is called with the new value of `connected`. Raises `AriError` if Asterisk refuses the credentials.
        """
        if self._running:
            raise RuntimeError("AriClient.run() is already running")
        if self._closing.is_set():
            raise AriError(0, "client is closed")
        self._running = True
        self._run_done.clear()
        self._fatal = None
        self._on_state_change = on_state_change
        dispatcher = Dispatcher(handler, max_queue=self.max_queue)
        delays: Iterator[float] | None = None
        try:
            while not self._closing.is_set():
                lasted = 0.0
                try:
                    lasted = await self._connect_and_read(dispatcher, on_connect)
                except AriError as exc:
                    if exc.status in (401, 403):
                        log.error("ARI events: %s; giving up", exc.message)
                        self._fatal = exc
                        raise
                    log.warning("ARI events: connect failed: %s", exc)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.warning("ARI events: connect failed: %s", type(exc).__name__)
                if self._closing.is_set():
                    break
                if delays is None or lasted >= STABLE_AFTER:
                    delays = backoff_delays()
                delay = next(delays)
                log.info("ARI events: reconnecting in %.2fs", delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
        except asyncio.CancelledError:
            await dispatcher.aclose(0)
            raise
        else:
            await dispatcher.aclose()
        finally:
            self._set_connected(False)
            self._on_state_change = None
            self._running = False
            self._run_done.set()
            self._pulse()

    async def _connect_and_read(
        self, dispatcher: Dispatcher, on_connect: Callable[[], Awaitable[None]] | None
    ) -> float:
        """One connection: handshake, then read until it ends. Returns how long it was up (seconds)."""
        params = {"app": self.app}
        if self.subscribe_all:
            params["subscribeAll"] = "true"
        try:
            ws = await self._get_session().ws_connect(
                self.url + "/events", params=params, heartbeat=self.heartbeat, autoping=True
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise AriError(exc.status, refusal_message(exc.status), "GET", "/events") from None
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._ws = ws
        try:
            if self._closing.is_set():
                return 0.0
            self.connects += 1
            log.info("ARI events: connected (app %s)", self.app)
            self._set_connected(True)
            if on_connect is not None:
                self._spawn(self._run_on_connect(on_connect))
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self._receive(dispatcher, msg.data)
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    break
            if not self._closing.is_set():
                err = ws.exception()
                log.warning(
                    "ARI events: disconnected (close code %s%s)",
                    ws.close_code,
                    f", {type(err).__name__}" if err is not None else "",
                )
        finally:
            self._ws = None
            self._set_connected(False)
            if not ws.closed:
                await ws.close()
        return loop.time() - started

    def _receive(self, dispatcher: Dispatcher, text: str) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            log.warning("ARI events: ignored a frame that is not JSON (%d chars)", len(text))
            return
        event = parse_event(data)
        if event.type == "ApplicationReplaced":
            log.warning("ARI events: another connection took over app %s", self.app)
        dispatcher.submit(event)

    async def _run_on_connect(self, on_connect: Callable[[], Awaitable[None]]) -> None:
        try:
            await on_connect()
        except Exception as exc:  # a failed re-sync must not stop the client
            log.error("ARI on_connect callback failed: %s", type(exc).__name__)
            log.debug("ARI on_connect traceback", exc_info=True)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _pulse(self) -> None:
        self._state_changed.set()
        self._state_changed = asyncio.Event()

    def _set_connected(self, value: bool) -> None:
        if self._connected == value:
            return
        self._connected = value
        self._pulse()
        if self._on_state_change is not None:
            try:
                self._on_state_change(value)
            except Exception as exc:  # noqa: BLE001 - a metrics hook must not break the reader
                log.error("ARI on_state_change callback failed: %s", type(exc).__name__)

    async def close(self) -> None:
        """Stop `run()` (handlers get a grace period), cancel pending on_connect tasks, close the session.
        Call it from outside the handlers: a handler awaiting close() waits out its own grace period."""
        self._closing.set()
        ws = self._ws
        if ws is not None and not ws.closed:
            await ws.close()
        current = asyncio.current_task()
        if self._running and current not in self._background:
            await self._run_done.wait()
        for task in list(self._background):
            if task is not current:
                task.cancel()
        await super().close()
