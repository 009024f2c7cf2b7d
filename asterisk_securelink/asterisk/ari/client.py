"""The ARI client: `AriClient` is `AriRest` plus the events WebSocket on the same session.

`AriClient.run(handler)` connects, reconnects with capped exponential backoff and jitter after every disconnect (a clean
close too), and calls `on_connect` after every (re)connect: events sent while disconnected are lost, so the app
re-syncs. Events go through a `Dispatcher` (ordered per channel). Nothing here logs a password or an event's contents.

REST over the WebSocket (Asterisk 20.14 / 21.9 / 22.4 and later): once a connection has answered one `RESTRequest`
(a `GET asterisk/ping` sent at connect), `request()` sends its calls as `RESTRequest` frames on the events socket and
awaits the matching `RESTResponse`, instead of one HTTP request each (a quarter of a millisecond instead of about one,
and much less CPU on both sides: docs/benchmarks.md). An Asterisk that does not answer the probe within
`WS_PROBE_TIMEOUT` keeps HTTP; so does every call while the socket is down. A call in flight when the socket drops
fails with `AriError` status 0, like an HTTP call that got no answer, and the caller fails closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import aiohttp

from asterisk_securelink.asterisk.ari import wire
from asterisk_securelink.asterisk.ari.dispatch import MAX_QUEUE, Dispatcher, Handler
from asterisk_securelink.asterisk.ari.errors import AriError, refusal_message
from asterisk_securelink.asterisk.ari.events import parse_event
from asterisk_securelink.asterisk.ari.rest import REQUEST_TIMEOUT, AriRest, ParamValue, _path, _query, decode_answer
from asterisk_securelink.tasks import BackgroundTasks

log = logging.getLogger(__name__)

HEARTBEAT = 10.0  # seconds between WebSocket pings; no pong within half of it -> disconnected
BACKOFF_INITIAL = 0.5  # seconds before the first reconnect attempt
BACKOFF_CAP = 5.0  # the longest wait between attempts
BACKOFF_JITTER = 0.2  # each wait is shortened by up to this fraction, so many clients do not reconnect in step
STABLE_AFTER = 10.0  # a connection that lasted this long resets the backoff
WS_PROBE_TIMEOUT = 2.0  # seconds Asterisk has to answer a RESTRequest on a new socket before HTTP is kept


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
        rest_over_websocket: bool = True,
        events: Sequence[str] = (),
    ) -> None:
        super().__init__(url, username, password, app, request_timeout=request_timeout)
        self.subscribe_all = subscribe_all
        self.rest_over_websocket = rest_over_websocket
        self.events = tuple(events)  # the event types the app consumes (Asterisk sends only these); empty: all
        self._ws_rest = False  # this connection answered a RESTRequest: calls go over the socket
        self._pending: dict[str, asyncio.Future[Mapping[str, Any]]] = {}
        self._request_ids = itertools.count(1)
        self.ws_requests = 0  # REST calls answered over the WebSocket (the rest went over HTTP)
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
        self._background = BackgroundTasks()
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
            if self.rest_over_websocket:
                self._background.spawn(self._probe_ws_rest(ws))
            if self.events:
                self._background.spawn(self._filter_events())
            if on_connect is not None:
                self._background.spawn(self._run_on_connect(on_connect))
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
            self._ws_rest = False
            self._fail_pending()
            self._set_connected(False)
            if not ws.closed:
                await ws.close()
        return loop.time() - started

    def _receive(self, dispatcher: Dispatcher, text: str) -> None:
        try:
            data = wire.loads(text)
        except ValueError:
            log.warning("ARI events: ignored a frame that is not JSON (%d chars)", len(text))
            return
        if isinstance(data, dict) and data.get("type") == "RESTResponse":
            waiter = self._pending.pop(str(data.get("request_id")), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(data)
            return
        event = parse_event(data)
        if event.type == "ApplicationReplaced":
            log.warning("ARI events: another connection took over app %s", self.app)
        dispatcher.submit(event)

    # -- REST over the WebSocket ---------------------------------------------------------------------------------
    @property
    def rest_on_websocket(self) -> bool:
        """True while REST calls go over the events WebSocket (module doc)."""
        return self._ws_rest and self._ws is not None and not self._ws.closed

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, ParamValue] | None = None,
        json: Any = None,
    ) -> Any:
        """`AriRest.request`, over the events socket when this connection speaks REST there (module doc)."""
        ws = self._ws
        if not self._ws_rest or ws is None or ws.closed:
            return await super().request(method, path, params=params, json=json)
        return await self._ws_request(ws, method, path, params, json)

    async def _ws_request(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        method: str,
        path: str,
        params: Mapping[str, ParamValue] | None,
        body: Any,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-call bound, like the HTTP session's
    ) -> Any:
        timeout = self.request_timeout if timeout is None else timeout
        request_id = f"sl-{next(self._request_ids)}"
        frame: dict[str, Any] = {"type": "RESTRequest", "request_id": request_id, "method": method,
                                 "uri": path.lstrip("/")}  # fmt: skip
        query = _query(params)
        if query:
            frame["query_strings"] = [{"name": k, "value": v} for k, v in query.items()]
        if body is not None:
            frame["content_type"] = "application/json"
            frame["message_body"] = _dumps(body)
        waiter: asyncio.Future[Mapping[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = waiter
        try:
            await ws.send_str(_dumps(frame))
            async with asyncio.timeout(timeout):
                answer = await waiter
        except TimeoutError:
            raise AriError(0, f"no answer within {timeout:g}s", method, path) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise AriError(0, f"{type(exc).__name__}: {exc}", method, path) from None
        finally:
            self._pending.pop(request_id, None)
        self.ws_requests += 1
        status = answer.get("status_code")
        if not isinstance(status, int):
            raise AriError(0, "malformed RESTResponse", method, path)
        body_text = answer.get("message_body")
        return decode_answer(
            status,
            str(answer.get("content_type") or ""),
            body_text if isinstance(body_text, str) else "",
            str(answer.get("reason_phrase") or ""),
            method,
            path,
        )

    async def _probe_ws_rest(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Use the socket for REST if Asterisk answers one request on it within WS_PROBE_TIMEOUT."""
        try:
            await self._ws_request(ws, "GET", "/asterisk/ping", None, None, WS_PROBE_TIMEOUT)
        except AriError as exc:
            log.info("ARI: REST over the WebSocket not available (%s); using HTTP", exc.message)
            return
        if self._ws is ws:
            self._ws_rest = True
            log.info("ARI: REST calls go over the events WebSocket")

    async def _filter_events(self) -> None:
        """Ask Asterisk to send this app only `events` (ARI application event filter, Asterisk 13.26+): a variable
        set on a channel, a state change or a dialplan step each cost both sides an event nobody reads."""
        # the answers to REST calls over the socket travel as messages of the app too: filtered out, every call
        # over the socket would wait for its timeout
        names = (*self.events, "RESTResponse") if self.rest_over_websocket else self.events
        body = {"allowed": [{"type": name} for name in dict.fromkeys(names)]}
        try:
            await self.request("PUT", _path("applications", self.app, "eventFilter"), json=body)
        except AriError as exc:
            log.warning("ARI: event filter not set (%s); every event type is sent", exc.message)

    def _fail_pending(self) -> None:
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(AriError(0, "the events WebSocket closed"))
        self._pending.clear()

    async def _run_on_connect(self, on_connect: Callable[[], Awaitable[None]]) -> None:
        try:
            await on_connect()
        except Exception as exc:  # a failed re-sync must not stop the client
            log.error("ARI on_connect callback failed: %s", type(exc).__name__)
            log.debug("ARI on_connect traceback", exc_info=True)

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
        self._background.cancel()
        await super().close()


def _dumps(value: Any) -> str:
    return wire.dumps(value)
