"""A thin Asterisk REST Interface (ARI) client on aiohttp: REST calls, typed events, a self-healing events socket.

Three parts, top to bottom:

* **Events** - dataclasses for the events the app uses (`StasisStart`, `StasisEnd`, ...) and `parse_event`, which turns
  any JSON value into an `Event` and never raises (unknown types stay a generic `Event` with the raw dict).
* **Dispatcher** - one ordered lane (queue + worker task) per channel, so the events of one channel are handled in
  order while different channels run concurrently; non-channel events share one more lane. A lane ends once its
  channel has ended (`StasisEnd`/`ChannelDestroyed`) and its queue is empty, or after being idle for a while.
* **AriClient** - one aiohttp session for REST and the events WebSocket (Basic auth in a header, never in a URL).
  `run(handler)` connects, reconnects with capped exponential backoff and jitter after every disconnect (a clean close
  too), and calls `on_connect` after every (re)connect: events sent while disconnected are lost, so the app re-syncs.

Nothing here logs a password, an event's contents or a handler's exception text: caller numbers can be keys.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0  # seconds for one REST call (and the WebSocket handshake)
HEARTBEAT = 10.0  # seconds between WebSocket pings; no pong within half of it -> disconnected
BACKOFF_INITIAL = 0.5  # seconds before the first reconnect attempt
BACKOFF_CAP = 5.0  # the longest wait between attempts
BACKOFF_JITTER = 0.2  # each wait is shortened by up to this fraction, so many clients do not reconnect in step
STABLE_AFTER = 10.0  # a connection that lasted this long resets the backoff
MAX_QUEUE = 1000  # events waiting per lane; past it new events of that lane are dropped with a warning
LANE_IDLE = 60.0  # seconds an empty lane waits for more events before its worker ends
CLOSE_GRACE = 5.0  # seconds running handlers get to finish at close() before they are cancelled


class AriError(Exception):
    """An ARI call failed. `status` is the HTTP status, or 0 when no response arrived (refused, timeout, ...);
    `message` is ARI's own error message when it sent one."""

    def __init__(self, status: int, message: str, method: str = "", path: str = "") -> None:
        self.status = status
        self.message = message
        self.method = method
        self.path = path
        where = f"ARI {method} {path}".rstrip() if method else "ARI"
        super().__init__(f"{where} -> {status}: {message}" if status else f"{where}: {message}")


# ---------------------------------------------------------------------------------------------------- events
def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel snapshot as ARI sends it (events, `GET /channels`, originate)."""

    id: str
    name: str = ""
    state: str = ""
    caller_number: str = ""
    caller_name: str = ""
    connected_number: str = ""
    connected_name: str = ""
    context: str = ""
    exten: str = ""
    priority: int = 0
    app_name: str = ""  # dialplan application running now, e.g. "Stasis"
    app_data: str = ""  # its arguments, e.g. "securelink,inbound,ani"
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Channel:
        d = _dict(data)
        caller, connected, dialplan = _dict(d.get("caller")), _dict(d.get("connected")), _dict(d.get("dialplan"))
        return cls(
            id=_str(d.get("id")),
            name=_str(d.get("name")),
            state=_str(d.get("state")),
            caller_number=_str(caller.get("number")),
            caller_name=_str(caller.get("name")),
            connected_number=_str(connected.get("number")),
            connected_name=_str(connected.get("name")),
            context=_str(dialplan.get("context")),
            exten=_str(dialplan.get("exten")),
            priority=_int(dialplan.get("priority")),
            app_name=_str(dialplan.get("app_name")),
            app_data=_str(dialplan.get("app_data")),
            raw=d,
        )


_NO_CHANNEL = Channel(id="")


@dataclass(frozen=True, slots=True)
class Event:
    """Any ARI event; the types below add typed fields. `raw` is the JSON object as received."""

    type: str
    application: str = ""
    timestamp: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def channel_id(self) -> str | None:
        """The channel whose lane handles this event; None for non-channel events."""
        return None


@dataclass(frozen=True, slots=True)
class ChannelEvent(Event):
    """An event about one channel (also used for channel events without a model of their own)."""

    channel: Channel = _NO_CHANNEL

    @property
    def channel_id(self) -> str | None:
        return self.channel.id or None


@dataclass(frozen=True, slots=True)
class StasisStart(ChannelEvent):
    args: tuple[str, ...] = ()
    replace_channel: Channel | None = None  # set when the channel replaced another one (masquerade, transfer)


@dataclass(frozen=True, slots=True)
class StasisEnd(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True)
class ChannelDestroyed(ChannelEvent):
    cause: int = 0
    cause_txt: str = ""


@dataclass(frozen=True, slots=True)
class ChannelStateChange(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True)
class ChannelHangupRequest(ChannelEvent):
    cause: int = 0
    soft: bool = False


@dataclass(frozen=True, slots=True)
class ChannelDtmfReceived(ChannelEvent):
    digit: str = ""
    duration_ms: int = 0


@dataclass(frozen=True, slots=True)
class Dial(Event):
    """Dialing state of `peer` (the channel being dialed), which is also the lane it goes through."""

    peer: Channel = _NO_CHANNEL
    caller: Channel | None = None
    dialstatus: str = ""  # "" while in progress, then e.g. ANSWER, BUSY, NOANSWER, CANCEL
    dialstring: str = ""
    forward: str = ""

    @property
    def channel_id(self) -> str | None:
        return self.peer.id or None


def parse_event(data: Any) -> Event:
    """Turn a decoded JSON event into a model. Never raises: odd input becomes a generic `Event`."""
    d = _dict(data)
    try:
        return _parse(d)
    except Exception:  # noqa: BLE001 - the reader must survive any input
        return Event(type=_str(d.get("type")), raw=d)


def _parse(d: Mapping[str, Any]) -> Event:
    kind = _str(d.get("type"))
    base: dict[str, Any] = {
        "type": kind,
        "application": _str(d.get("application")),
        "timestamp": _str(d.get("timestamp")),
        "raw": d,
    }
    if kind == "Dial":
        caller = d.get("caller")
        return Dial(
            **base,
            peer=Channel.from_json(d.get("peer")),
            caller=Channel.from_json(caller) if isinstance(caller, Mapping) else None,
            dialstatus=_str(d.get("dialstatus")),
            dialstring=_str(d.get("dialstring")),
            forward=_str(d.get("forward")),
        )
    if not isinstance(d.get("channel"), Mapping):
        return Event(**base)
    chan = Channel.from_json(d["channel"])
    if kind == "StasisStart":
        args = d.get("args")
        replaced = d.get("replace_channel")
        return StasisStart(
            **base,
            channel=chan,
            args=tuple(_str(a) for a in args) if isinstance(args, list) else (),
            replace_channel=Channel.from_json(replaced) if isinstance(replaced, Mapping) else None,
        )
    if kind == "StasisEnd":
        return StasisEnd(**base, channel=chan)
    if kind == "ChannelDestroyed":
        return ChannelDestroyed(**base, channel=chan, cause=_int(d.get("cause")), cause_txt=_str(d.get("cause_txt")))
    if kind == "ChannelStateChange":
        return ChannelStateChange(**base, channel=chan)
    if kind == "ChannelHangupRequest":
        return ChannelHangupRequest(**base, channel=chan, cause=_int(d.get("cause")), soft=d.get("soft") is True)
    if kind == "ChannelDtmfReceived":
        return ChannelDtmfReceived(
            **base, channel=chan, digit=_str(d.get("digit")), duration_ms=_int(d.get("duration_ms"))
        )
    return ChannelEvent(**base, channel=chan)


# ------------------------------------------------------------------------------------------------ dispatcher
Handler = Callable[[Event], Awaitable[None]]

_GLOBAL_LANE = ""  # key of the lane for events without a channel (channel ids are never empty)


@dataclass(eq=False)
class _Lane:
    key: str
    queue: asyncio.Queue[Event]
    task: asyncio.Task[None] | None = None
    ended: bool = False  # the channel's StasisEnd or ChannelDestroyed was handled
    idle: bool = False  # the worker waits for the next event (no handler running)
    dropped: int = 0


class Dispatcher:
    """Runs `handler` for every submitted event: in order per channel, concurrently across channels.

    A handler's exception is logged (type only; the traceback at DEBUG) and the lane goes on with the next event.
    """

    def __init__(self, handler: Handler, *, max_queue: int = MAX_QUEUE, idle_timeout: float = LANE_IDLE) -> None:
        self._handler = handler
        self._max_queue = max_queue
        self._idle_timeout = idle_timeout
        self._lanes: dict[str, _Lane] = {}
        self._closed = False
        self.dropped = 0

    @property
    def lanes(self) -> int:
        """Number of live lanes (workers)."""
        return len(self._lanes)

    def submit(self, event: Event) -> bool:
        """Queue an event on its lane (never blocks). False if it was dropped (lane full or dispatcher closed)."""
        if self._closed:
            return False
        key = event.channel_id or _GLOBAL_LANE
        lane = self._lanes.get(key)
        if lane is None:
            lane = _Lane(key, asyncio.Queue(self._max_queue))
            self._lanes[key] = lane
            lane.task = asyncio.create_task(self._work(lane), name=f"ari-lane-{key or 'global'}")
        try:
            lane.queue.put_nowait(event)
        except asyncio.QueueFull:
            lane.dropped += 1
            self.dropped += 1
            if lane.dropped == 1 or lane.dropped % 100 == 0:
                log.warning(
                    "ARI lane %s is full (%d events waiting): dropped %s (%d dropped on this lane)",
                    key or "global",
                    self._max_queue,
                    event.type,
                    lane.dropped,
                )
            return False
        return True

    async def join(self) -> None:
        """Wait until every event submitted so far has been handled."""
        await asyncio.gather(*(lane.queue.join() for lane in list(self._lanes.values())))

    async def aclose(self, grace: float = CLOSE_GRACE) -> None:
        """Stop accepting events, give queued and running handlers `grace` seconds, then cancel what is left."""
        self._closed = True
        tasks = []
        for lane in list(self._lanes.values()):
            if lane.task is None:
                continue
            if lane.idle and lane.queue.empty():
                lane.task.cancel()  # nothing to finish
            tasks.append(lane.task)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        if pending:
            log.warning("ARI dispatcher closing: cancelling %d lane(s) still busy after %.1fs", len(pending), grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _work(self, lane: _Lane) -> None:
        try:
            while True:
                if lane.queue.empty():
                    if lane.ended or self._closed:
                        return
                    lane.idle = True
                    try:
                        async with asyncio.timeout(self._idle_timeout):
                            event = await lane.queue.get()
                    except TimeoutError:
                        if lane.queue.empty():
                            return
                        continue
                    finally:
                        lane.idle = False
                else:
                    event = lane.queue.get_nowait()
                try:
                    await self._handle(event)
                finally:
                    lane.queue.task_done()
                if isinstance(event, StasisEnd | ChannelDestroyed):
                    lane.ended = True
        finally:
            # No await between the empty check above and here: submit() cannot slip an event into a dying lane.
            if self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]

    async def _handle(self, event: Event) -> None:
        try:
            await self._handler(event)
        except Exception as exc:  # one bad event must not stop the lane
            log.error("ARI handler failed on %s (channel %s): %s", event.type, event.channel_id, type(exc).__name__)
            log.debug("ARI handler traceback", exc_info=True)


# --------------------------------------------------------------------------------------------------- backoff
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


# ---------------------------------------------------------------------------------------------------- client
ParamValue = str | int | float | bool | None


def _query(params: Mapping[str, ParamValue] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def _path(*segments: str) -> str:
    return "".join("/" + quote(segment, safe="") for segment in segments)


def _handshake_message(status: int) -> str:
    if status == 401:
        return "authentication failed (check the ARI username and password)"
    if status == 403:
        return "forbidden (the ARI user may not use this resource)"
    return "events WebSocket handshake refused"


class AriClient:
    """ARI over one aiohttp session. Use as `async with AriClient(...) as ari:` or call `close()` at the end.

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
        base = URL(url)
        if base.user is not None or base.password is not None:
            raise ValueError("put the ARI credentials in username/password, not in the URL")
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError("the ARI URL must be http(s)://host[:port]/ari")
        self.url = str(base).rstrip("/")
        self.app = app
        self.subscribe_all = subscribe_all
        self.request_timeout = request_timeout
        self.heartbeat = heartbeat
        self.max_queue = max_queue
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}"}
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected = False
        self._state_changed = asyncio.Event()  # pulsed (set, then replaced) at every state change
        self._closing = asyncio.Event()
        self._running = False
        self._run_done = asyncio.Event()
        self._run_done.set()
        self._fatal: AriError | None = None
        self._on_state_change: Callable[[bool], None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.connects = 0  # successful connects so far (1 + reconnects)

    def __repr__(self) -> str:
        return f"AriClient({self.url!r}, app={self.app!r}, connected={self._connected})"

    async def __aenter__(self) -> AriClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- REST -----------------------------------------------------------------------------------------------
    def _get_session(self) -> aiohttp.ClientSession:
        if self._closing.is_set():
            raise AriError(0, "client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=self.request_timeout)
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, ParamValue] | None = None,
        json: Any = None,
    ) -> Any:
        """One REST call; `path` is below the ARI base (``/channels``). Returns decoded JSON, None for no body."""
        session = self._get_session()
        try:
            async with session.request(method, self.url + path, params=_query(params), json=json) as resp:
                body = await resp.read()
                status = resp.status
                content_type = resp.content_type
                reason = resp.reason or ""
        except TimeoutError:
            raise AriError(0, f"no answer within {self.request_timeout:g}s", method, path) from None
        except aiohttp.ClientError as exc:
            raise AriError(0, f"{type(exc).__name__}: {exc}", method, path) from None
        decoded: Any = None
        if body:
            if content_type == "application/json":
                try:
                    decoded = _json_loads(body)
                except ValueError:
                    decoded = body.decode("utf-8", "replace")
            else:
                decoded = body.decode("utf-8", "replace")
        if status >= 400:
            if isinstance(decoded, Mapping) and isinstance(decoded.get("message"), str):
                message = decoded["message"]
            elif status == 401:
                message = _handshake_message(401)
            elif isinstance(decoded, str) and decoded.strip():
                message = decoded.strip()[:200]
            else:
                message = reason
            raise AriError(status, message, method, path)
        return decoded

    async def asterisk_info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", "/asterisk/info")
        return result

    async def list_applications(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/applications")
        return result

    async def get_application(self, name: str | None = None) -> dict[str, Any] | None:
        """The ARI application `name` (default: ours); None if Asterisk does not know it (no socket connected)."""
        try:
            result: dict[str, Any] = await self.request("GET", _path("applications", name or self.app))
        except AriError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def get_config_object(self, config_class: str, object_type: str, object_id: str) -> dict[str, str] | None:
        """`GET /asterisk/config/dynamic/...`: a sorcery object's fields (e.g. res_pjsip endpoint), None if absent."""
        try:
            tuples = await self.request(
                "GET", _path("asterisk", "config", "dynamic", config_class, object_type, object_id)
            )
        except AriError as exc:
            if exc.status == 404:
                return None
            raise
        return {_str(t.get("attribute")): _str(t.get("value")) for t in tuples or [] if isinstance(t, Mapping)}

    async def get_channels(self) -> list[Channel]:
        data = await self.request("GET", "/channels")
        return [Channel.from_json(c) for c in data] if isinstance(data, list) else []

    async def get_channel(self, channel_id: str) -> Channel | None:
        try:
            data = await self.request("GET", _path("channels", channel_id))
        except AriError as exc:
            if exc.status == 404:
                return None
            raise
        return Channel.from_json(data)

    async def get_channel_var(self, channel_id: str, name: str) -> str:
        data = await self.request("GET", _path("channels", channel_id, "variable"), params={"variable": name})
        return _str(_dict(data).get("value"))

    async def set_channel_var(self, channel_id: str, name: str, value: str) -> None:
        await self.request("POST", _path("channels", channel_id, "variable"), params={"variable": name, "value": value})

    async def continue_in_dialplan(
        self,
        channel_id: str,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        label: str | None = None,
    ) -> None:
        """Leave Stasis: back to the dialplan after the Stasis() line, or to the given place."""
        params = {"context": context, "extension": extension, "priority": priority, "label": label}
        await self.request("POST", _path("channels", channel_id, "continue"), params=params)

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
        """Hang up with an ARI reason (normal, busy, rejected, answered_elsewhere, ...). False if already gone."""
        try:
            await self.request("DELETE", _path("channels", channel_id), params={"reason": reason})
        except AriError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def answer(self, channel_id: str) -> None:
        await self.request("POST", _path("channels", channel_id, "answer"))

    async def ring(self, channel_id: str) -> None:
        await self.request("POST", _path("channels", channel_id, "ring"))

    async def originate(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: str | Sequence[str] | None = None,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        label: str | None = None,
        caller_id: str | None = None,
        timeout: int | None = None,  # noqa: ASYNC109 - ARI's ring timeout (seconds), not an operation timeout
        variables: Mapping[str, str] | None = None,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        originator: str | None = None,
        formats: str | None = None,
    ) -> Channel:
        """`POST /channels`: call `endpoint` into a Stasis app (`app`, `app_args`) or a dialplan location."""
        args = app_args if isinstance(app_args, str) or app_args is None else ",".join(app_args)
        params: dict[str, ParamValue] = {
            "endpoint": endpoint,
            "app": app,
            "appArgs": args,
            "context": context,
            "extension": extension,
            "priority": priority,
            "label": label,
            "callerId": caller_id,
            "timeout": timeout,
            "channelId": channel_id,
            "otherChannelId": other_channel_id,
            "originator": originator,
            "formats": formats,
        }
        body = {"variables": dict(variables)} if variables else None
        return Channel.from_json(await self.request("POST", "/channels", params=params, json=body))

    async def create_channel(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: str | Sequence[str] | None = None,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        originator: str | None = None,
        formats: str | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """`POST /channels/create`: a channel in Stasis app `app` (default: ours) that is not dialed yet."""
        args = app_args if isinstance(app_args, str) or app_args is None else ",".join(app_args)
        params: dict[str, ParamValue] = {
            "endpoint": endpoint,
            "app": app or self.app,
            "appArgs": args,
            "channelId": channel_id,
            "otherChannelId": other_channel_id,
            "originator": originator,
            "formats": formats,
        }
        body = {"variables": dict(variables)} if variables else None
        return Channel.from_json(await self.request("POST", "/channels/create", params=params, json=body))

    async def create_bridge(
        self, type: str = "mixing", *, bridge_id: str | None = None, name: str | None = None
    ) -> str:
        """Create a bridge (`type`: comma list such as "mixing" or "mixing,dtmf_events"); returns its id."""
        data = await self.request("POST", "/bridges", params={"type": type, "bridgeId": bridge_id, "name": name})
        return _str(_dict(data).get("id"))

    async def add_channel_to_bridge(
        self,
        bridge_id: str,
        channel_ids: str | Sequence[str],
        *,
        role: str | None = None,
        absorb_dtmf: bool | None = None,
        mute: bool | None = None,
        inhibit_connected_line_updates: bool | None = None,
    ) -> None:
        channels = channel_ids if isinstance(channel_ids, str) else ",".join(channel_ids)
        params: dict[str, ParamValue] = {
            "channel": channels,
            "role": role,
            "absorbDTMF": absorb_dtmf,
            "mute": mute,
            "inhibitConnectedLineUpdates": inhibit_connected_line_updates,
        }
        await self.request("POST", _path("bridges", bridge_id, "addChannel"), params=params)

    async def destroy_bridge(self, bridge_id: str) -> bool:
        """Destroy a bridge; False if it was already gone."""
        try:
            await self.request("DELETE", _path("bridges", bridge_id))
        except AriError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- events -------------------------------------------------------------------------------------------
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
            raise AriError(exc.status, _handshake_message(exc.status), "GET", "/events") from None
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
            data = _json_loads(text)
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
        if self._session is not None:
            await self._session.close()
            self._session = None


def _json_loads(data: str | bytes) -> Any:
    return json.loads(data)  # module-level: `request()` has a parameter named `json`
