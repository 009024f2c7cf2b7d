"""`asterisk_securelink.asterisk.ari.client.AriClient` against the real Asterisk testbed (scripts/asterisk-testbed).

Every test uses its own ARI app name, so it never takes over another test's (or engineer's) app. Calls are ARI
originated Local channels into that app: `Local/answer@testbed-selftest` answers, waits 1 s and hangs up.

Dropped connections are made by a TCP proxy between the client and Asterisk (cut = both sockets aborted,
freeze = bytes silently swallowed, the heartbeat must notice), and by restarting Asterisk itself
(`core restart now`; the test waits until the testbed is back).

Run:  python -m pytest tests/e2e/test_ari_client.py -q
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest

import testbed
from asterisk_securelink.asterisk.ari.client import AriClient
from asterisk_securelink.asterisk.ari.errors import AriError
from asterisk_securelink.asterisk.ari.events import ChannelDestroyed, Event, StasisEnd, StasisStart

pytestmark = pytest.mark.e2e

ARI_URL = testbed.ARI_BASE
ARI_HOST, ARI_PORT = "127.0.0.1", 8088


@pytest.fixture(scope="module")
def asterisk() -> Iterator[None]:
    if not testbed.is_up():
        testbed.ensure_up()
    yield


def _app_name() -> str:
    return f"slk-ari-test-{uuid.uuid4().hex[:8]}"


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)


@dataclass
class Running:
    """A client running `run()` in a task, with everything it received."""

    client: AriClient
    app: str
    task: asyncio.Task[None]
    events: list[Event] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    taken: set[int] = field(default_factory=set)
    on_connect_calls: int = 0
    states: list[bool] = field(default_factory=list)

    def put(self, e: Event) -> None:
        self.events.append(e)
        self.arrived.set()

    async def next(self, kind: type[Event] | str, channel_id: str | None = None, timeout: float = 10.0) -> Event:
        """The first not yet taken event of `kind` (a model or a type name) for `channel_id`, waiting for it;
        other events stay for later calls."""

        def matches(e: Event) -> bool:
            ok = e.type == kind if isinstance(kind, str) else isinstance(e, kind)
            return ok and channel_id in (None, e.channel_id)

        async with asyncio.timeout(timeout):
            while True:
                for i, e in enumerate(self.events):
                    if i not in self.taken and matches(e):
                        self.taken.add(i)
                        return e
                self.arrived.clear()
                await self.arrived.wait()

    async def create(self) -> str:
        """A channel in our app that is not dialed: it stays until hung up (no 1 s dialplan timer)."""
        chan = await self.client.create_channel("Local/answer@testbed-selftest")
        await self.next(StasisStart, chan.id)
        return chan.id

    async def originate(self, *args: str) -> str:
        chan = await self.client.originate(
            "Local/answer@testbed-selftest", app=self.app, app_args=list(args), caller_id="4915112345678"
        )
        return chan.id


async def start_client(
    url: str = ARI_URL, heartbeat: float = 10.0, rest_over_websocket: bool = True, events: tuple[str, ...] = ()
) -> Running:
    app = _app_name()
    client = AriClient(
        url,
        testbed.ARI_USER,
        testbed.ARI_PASSWORD,
        app,
        heartbeat=heartbeat,
        rest_over_websocket=rest_over_websocket,
        events=events,
    )
    running: Running

    async def handler(e: Event) -> None:
        running.put(e)

    async def on_connect() -> None:
        running.on_connect_calls += 1

    def on_state(value: bool) -> None:
        running.states.append(value)

    task = asyncio.create_task(client.run(handler, on_connect=on_connect, on_state_change=on_state))
    running = Running(client, app, task)
    assert await client.wait_connected(10)
    return running


async def stop_client(running: Running) -> None:
    await running.client.close()
    await asyncio.wait_for(running.task, 10)


@pytest.fixture
async def ari(asterisk: None) -> AsyncIterator[Running]:
    running = await start_client()
    try:
        yield running
    finally:
        await _hangup_leftovers(running)
        await stop_client(running)


async def _hangup_leftovers(running: Running) -> None:
    """Hang up any channel still in this test's app (a failed test must not leave calls behind)."""
    with_rest = AriClient(ARI_URL, testbed.ARI_USER, testbed.ARI_PASSWORD, running.app)
    try:
        for chan in await with_rest.get_channels():
            if chan.app_data.split(",")[0] == running.app:
                await with_rest.hangup(chan.id)
    finally:
        await with_rest.close()


# ------------------------------------------------------------------------------------------------- basics
async def test_connect_registers_the_app(ari: Running) -> None:
    assert ari.client.connected
    app = await ari.client.get_application()
    assert app is not None and app["name"] == ari.app
    assert any(a["name"] == ari.app for a in await ari.client.list_applications())
    info = await ari.client.asterisk_info()
    assert info["system"]["version"].startswith("22")
    await eventually(lambda: ari.on_connect_calls == 1)
    assert ari.states == [True]


async def test_rest_goes_over_the_events_websocket_once_asterisk_answers_there(ari: Running) -> None:
    """Asterisk 22.4+ answers RESTRequest frames: calls then skip HTTP, and answers and errors decode the same."""
    await eventually(lambda: ari.client.rest_on_websocket)
    before = ari.client.ws_requests
    info = await ari.client.asterisk_info()
    assert info["system"]["version"].startswith("22")
    with pytest.raises(AriError) as err:
        await ari.client.set_channel_var("no-such-channel", "X", "1")
    assert err.value.status == 404 and "Channel not found" in err.value.message
    chan_id = await ari.originate("over-ws")
    await ari.next(StasisStart, chan_id)
    await ari.client.set_channel_var(chan_id, "SECURELINK_WS", "a b&c=d")  # query values survive the frame
    assert await ari.client.get_channel_var(chan_id, "SECURELINK_WS") == "a b&c=d"
    assert await ari.client.hangup(chan_id)
    assert ari.client.ws_requests - before == 6  # all six calls (originate too) went over the socket


async def test_rest_stays_on_http_when_the_socket_does_not_answer_requests(asterisk: None) -> None:
    running = await start_client(rest_over_websocket=False)  # what an Asterisk before 22.4 amounts to
    try:
        await asyncio.sleep(0.5)
        assert not running.client.rest_on_websocket
        before = running.client.ws_requests
        assert (await running.client.asterisk_info())["system"]["version"].startswith("22")
        assert running.client.ws_requests == before
    finally:
        await stop_client(running)


async def test_the_app_receives_only_the_events_it_reads(asterisk: None) -> None:
    from asterisk_securelink.app import APP_EVENTS

    running = await start_client(events=APP_EVENTS)
    try:

        async def allowed() -> list[str]:
            app = await running.client.get_application()
            return [e["type"] for e in (app or {}).get("events_allowed", [])]

        want = [*APP_EVENTS, "RESTResponse"]  # the answers to REST calls over the socket must still arrive
        deadline = time.monotonic() + 5
        while await allowed() != want and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await allowed() == want
        await eventually(lambda: running.client.rest_on_websocket)
        before = running.client.ws_requests
        chan_id = await running.originate("filtered")
        await running.next(StasisStart, chan_id)
        await running.client.set_channel_var(chan_id, "SECURELINK_X", "1")  # a ChannelVarset nobody reads
        assert await running.client.hangup(chan_id)
        await running.next(StasisEnd, chan_id)
        await asyncio.sleep(0.2)
        assert {e.type for e in running.events} <= set(APP_EVENTS)
        assert running.client.ws_requests - before == 3  # originate, variable, hangup: answered over the socket
    finally:
        await stop_client(running)


async def test_wrong_password_is_a_clear_error_without_the_password(
    asterisk: None, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "not-the-password-" + uuid.uuid4().hex
    client = AriClient(ARI_URL, testbed.ARI_USER, secret, _app_name())

    async def handler(e: Event) -> None:
        pass

    with caplog.at_level(logging.DEBUG):
        with pytest.raises(AriError) as rest_err:
            await client.get_channels()
        task = asyncio.create_task(client.run(handler))
        with pytest.raises(AriError) as ws_err:
            await client.wait_connected(10)
        with pytest.raises(AriError):
            await asyncio.wait_for(task, 10)
        await client.close()
    for err in (rest_err.value, ws_err.value):
        assert err.status == 401
        assert secret not in str(err) and secret not in repr(err)
    assert "authentication" in str(ws_err.value).lower()
    assert secret not in caplog.text


async def test_stasis_start_variables_and_continue(ari: Running) -> None:
    chan_id = await ari.originate("inbound", "ani")
    start = await ari.next(StasisStart, chan_id)
    assert isinstance(start, StasisStart)
    assert start.args == ("inbound", "ani")
    assert start.application == ari.app
    assert start.channel.caller_number == "4915112345678"
    assert start.channel.app_name == "Stasis" and start.channel.app_data.startswith(ari.app)
    assert start.replace_channel is None

    await ari.client.set_channel_var(chan_id, "SECURELINK_RESULT", "admitted")
    assert await ari.client.get_channel_var(chan_id, "SECURELINK_RESULT") == "admitted"
    chans = {c.id: c for c in await ari.client.get_channels()}
    assert chans[chan_id].app_data.startswith(ari.app)

    await ari.client.continue_in_dialplan(chan_id, "testbed-selftest", "answer", 1)
    await ari.next(StasisEnd, chan_id)
    # Back in the dialplan: `answer` waits 1 s, then hangs up.
    deadline = time.monotonic() + 10
    while await ari.client.get_channel(chan_id) is not None:
        assert time.monotonic() < deadline, "channel did not leave after continue"
        await asyncio.sleep(0.1)


async def test_hangup_then_already_gone(ari: Running) -> None:
    chan_id = await ari.originate()
    await ari.next(StasisStart, chan_id)
    assert await ari.client.hangup(chan_id, "rejected") is True
    await ari.next(StasisEnd, chan_id)
    destroyed = await ari.next(ChannelDestroyed, chan_id)
    assert isinstance(destroyed, ChannelDestroyed) and destroyed.cause == 21  # rejected -> CALL_REJECTED
    assert await ari.client.hangup(chan_id) is False
    with pytest.raises(AriError) as exc:
        await ari.client.continue_in_dialplan(chan_id)
    assert exc.value.status == 404 and exc.value.message == "Channel not found"


async def test_bridge_two_channels(ari: Running) -> None:
    a, b = await ari.create(), await ari.create()
    bridge = await ari.client.create_bridge("mixing")
    try:
        await ari.client.add_channel_to_bridge(bridge, [a, b], inhibit_connected_line_updates=True)
        info = await ari.client.request("GET", f"/bridges/{bridge}")
        assert sorted(info["channels"]) == sorted([a, b])
    finally:
        assert await ari.client.destroy_bridge(bridge) is True
    for chan in (a, b):
        assert await ari.client.hangup(chan)
    # Asterisk finishes the bridge once its channels are gone (until then a second DELETE is a 409).
    deadline = time.monotonic() + 10
    while True:
        try:
            await ari.client.request("GET", f"/bridges/{bridge}")
        except AriError as exc:
            assert exc.status == 404
            break
        assert time.monotonic() < deadline, "bridge still there"
        await asyncio.sleep(0.05)
    assert await ari.client.destroy_bridge(bridge) is False


async def test_answer_and_ring_on_a_channel_in_stasis(ari: Running) -> None:
    chan_id = await ari.originate()
    await ari.next(StasisStart, chan_id)
    await ari.client.ring(chan_id)
    await ari.client.answer(chan_id)
    assert await ari.client.hangup(chan_id)


async def test_calls_run_concurrently_and_in_order_per_channel(asterisk: None) -> None:
    """A slow handler on one channel does not hold up the others; each channel sees StasisStart before StasisEnd."""
    app = _app_name()
    client = AriClient(ARI_URL, testbed.ARI_USER, testbed.ARI_PASSWORD, app)
    order: dict[str, list[str]] = {}
    slow_started = asyncio.Event()
    release = asyncio.Event()
    slow_channel: list[str] = []

    async def handler(e: Event) -> None:
        if not isinstance(e, StasisStart | StasisEnd) or e.channel_id is None:
            return
        if isinstance(e, StasisStart) and e.args == ("slow",):
            slow_channel.append(e.channel_id)
            slow_started.set()
            await release.wait()
        order.setdefault(e.channel_id, []).append(e.type)

    task = asyncio.create_task(client.run(handler))
    try:
        assert await client.wait_connected(10)

        async def call(arg: str) -> str:
            return (await client.originate("Local/answer@testbed-selftest", app=app, app_args=arg)).id

        await call("slow")
        await asyncio.wait_for(slow_started.wait(), 10)
        fast = [await call("fast") for _ in range(3)]
        # The fast channels hang up by themselves after 1 s: their StasisEnd is handled while "slow" still waits.
        await eventually(lambda: all(order.get(c) == ["StasisStart", "StasisEnd"] for c in fast))
        assert slow_channel[0] not in order
        release.set()
        await eventually(lambda: order.get(slow_channel[0]) == ["StasisStart", "StasisEnd"])
    finally:
        release.set()
        await client.close()
        await asyncio.wait_for(task, 10)


# -------------------------------------------------------------------------------------------- reconnect
class TcpProxy:
    """127.0.0.1:<port> -> Asterisk's HTTP port. `cut()` aborts every open connection; `freeze()` makes the
    open connections swallow all bytes in both directions (a dead network path: no FIN, no RST)."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, dict[str, bool]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ari"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection(ARI_HOST, ARI_PORT)
        state = {"frozen": False}
        self._conns.append((writer, up_writer, state))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst, state))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, state: dict[str, bool]) -> None:
        try:
            while data := await src.read(65536):
                if not state["frozen"]:
                    dst.write(data)
                    await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    def cut(self) -> None:
        for a, b, _ in self._conns:
            a.transport.abort()
            b.transport.abort()
        self._conns.clear()

    def freeze(self) -> None:
        for _, _, state in self._conns:
            state["frozen"] = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def proxy(asterisk: None) -> AsyncIterator[TcpProxy]:
    p = TcpProxy()
    await p.start()
    try:
        yield p
    finally:
        await p.close()


async def _assert_works_after_reconnect(running: Running) -> None:
    await eventually(lambda: running.client.connected and running.on_connect_calls >= 2)
    app = await running.client.get_application()
    assert app is not None  # registered again
    chan_id = await running.originate("after-reconnect")
    start = await running.next(StasisStart, chan_id)
    assert isinstance(start, StasisStart) and start.args == ("after-reconnect",)
    assert await running.client.hangup(chan_id)


async def test_reconnects_after_the_connection_is_cut(proxy: TcpProxy) -> None:
    running = await start_client(proxy.url)
    try:
        chan_id = await running.originate("before")
        await running.next(StasisStart, chan_id)
        await running.client.hangup(chan_id)
        await eventually(lambda: running.on_connect_calls == 1)

        proxy.cut()
        await eventually(lambda: not running.client.connected or running.client.connects >= 2)
        await _assert_works_after_reconnect(running)
        assert running.client.connects == 2
        assert running.states[:3] == [True, False, True]
    finally:
        await _hangup_leftovers(running)
        await stop_client(running)


async def test_heartbeat_notices_a_dead_path_and_reconnects(proxy: TcpProxy) -> None:
    running = await start_client(proxy.url, heartbeat=1.0)
    try:
        await eventually(lambda: running.on_connect_calls == 1)
        proxy.freeze()  # no FIN, no RST: only the missing pong tells
        started = time.monotonic()
        await eventually(lambda: running.client.connects >= 2, timeout=15)
        assert time.monotonic() - started < 10
        await _assert_works_after_reconnect(running)
    finally:
        await _hangup_leftovers(running)
        await stop_client(running)


async def test_reconnects_after_asterisk_restart(asterisk: None) -> None:
    running = await start_client()
    try:
        await eventually(lambda: running.on_connect_calls == 1)
        await asyncio.to_thread(testbed.asterisk_cli, "core restart now")
        await eventually(lambda: running.client.connects >= 2, timeout=60)
        await _assert_works_after_reconnect(running)
    finally:
        if not testbed.is_up():
            await asyncio.to_thread(testbed.ensure_up)
        await _hangup_leftovers(running)
        await stop_client(running)
