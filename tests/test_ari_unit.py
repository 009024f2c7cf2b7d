"""Unit tests of the ARI package's pure parts: event parsing, backoff, the per-channel dispatcher.

Plus the REST calls and the reconnect loop against `fakes.FakeAriServer`, an in-process aiohttp server that speaks
just enough ARI (no Asterisk needed); tests/e2e/test_ari_client.py runs the same client against the real testbed.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from support.fakes import FakeAriServer

from asterisk_securelink.asterisk.ari.client import AriClient, backoff_delays
from asterisk_securelink.asterisk.ari.dispatch import Dispatcher
from asterisk_securelink.asterisk.ari.errors import AriError
from asterisk_securelink.asterisk.ari.events import (
    Channel,
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelEvent,
    ChannelHangupRequest,
    ChannelStateChange,
    Dial,
    Event,
    StasisEnd,
    StasisStart,
    parse_event,
)
from asterisk_securelink.asterisk.ari.rest import AriRest, _query

# Shaped like Asterisk 22's events (captured from the testbed, ids shortened).
CHANNEL = {
    "id": "1795380914.144",
    "name": "PJSIP/carrier-0000003a",
    "state": "Ring",
    "protocol_id": "abc@127.0.0.1",
    "caller": {"name": "Alice", "number": "4915112345678"},
    "connected": {"name": "", "number": ""},
    "accountcode": "",
    "dialplan": {
        "context": "securelink-inbound",
        "exten": "7002",
        "priority": 2,
        "app_name": "Stasis",
        "app_data": "securelink,inbound,ani",
    },
    "creationtime": "2026-11-22T20:55:14.548+0000",
    "language": "en",
}
STASIS_START = {
    "type": "StasisStart",
    "timestamp": "2026-11-22T20:55:14.552+0000",
    "args": ["inbound", "ani"],
    "channel": CHANNEL,
    "asterisk_id": "02:fc:00:00:00:01",
    "application": "securelink",
}


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until `predicate()` holds (fails with TimeoutError after `timeout` seconds)."""
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


def ev(kind: str, channel_id: str | None = None, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"type": kind, "application": "securelink", **extra}
    if channel_id is not None:
        d["channel"] = {**CHANNEL, "id": channel_id}
    return d


# -------------------------------------------------------------------------------------------------- parsing
def test_parse_stasis_start() -> None:
    e = parse_event(STASIS_START)
    assert isinstance(e, StasisStart)
    assert e.type == "StasisStart" and e.application == "securelink"
    assert e.timestamp == "2026-11-22T20:55:14.552+0000"
    assert e.args == ("inbound", "ani")
    assert e.replace_channel is None
    assert e.channel_id == "1795380914.144"
    c = e.channel
    assert (c.id, c.name, c.state) == ("1795380914.144", "PJSIP/carrier-0000003a", "Ring")
    assert (c.caller_number, c.caller_name) == ("4915112345678", "Alice")
    assert (c.context, c.exten, c.priority) == ("securelink-inbound", "7002", 2)
    assert (c.app_name, c.app_data) == ("Stasis", "securelink,inbound,ani")
    assert e.raw["asterisk_id"] == "02:fc:00:00:00:01"


def test_parse_stasis_start_replace_channel() -> None:
    e = parse_event({**STASIS_START, "replace_channel": {**CHANNEL, "id": "old.1"}})
    assert isinstance(e, StasisStart)
    assert e.replace_channel is not None and e.replace_channel.id == "old.1"


def test_parse_channel_events() -> None:
    end = parse_event(ev("StasisEnd", "c1"))
    assert isinstance(end, StasisEnd) and end.channel_id == "c1"

    d = parse_event(ev("ChannelDestroyed", "c1", cause=21, cause_txt="Call Rejected"))
    assert isinstance(d, ChannelDestroyed) and (d.cause, d.cause_txt) == (21, "Call Rejected")

    h = parse_event(ev("ChannelHangupRequest", "c1", cause=16, soft=True))
    assert isinstance(h, ChannelHangupRequest) and (h.cause, h.soft) == (16, True)
    h2 = parse_event(ev("ChannelHangupRequest", "c1"))
    assert isinstance(h2, ChannelHangupRequest) and (h2.cause, h2.soft) == (0, False)

    s = parse_event({**ev("ChannelStateChange", "c1"), "channel": {**CHANNEL, "id": "c1", "state": "Up"}})
    assert isinstance(s, ChannelStateChange) and s.channel.state == "Up"

    t = parse_event(ev("ChannelDtmfReceived", "c1", digit="#", duration_ms=120))
    assert isinstance(t, ChannelDtmfReceived) and (t.digit, t.duration_ms) == ("#", 120)


def test_parse_dial_routes_by_peer() -> None:
    e = parse_event(
        {
            "type": "Dial",
            "dialstatus": "BUSY",
            "dialstring": "5551234@carrier",
            "forward": "",
            "peer": {**CHANNEL, "id": "peer.1"},
            "caller": {**CHANNEL, "id": "caller.1"},
        }
    )
    assert isinstance(e, Dial)
    assert e.channel_id == "peer.1"
    assert e.caller is not None and e.caller.id == "caller.1"
    assert (e.dialstatus, e.dialstring) == ("BUSY", "5551234@carrier")


def test_unknown_events_stay_generic() -> None:
    e = parse_event({"type": "ChannelVarset", "variable": "X", "value": "1", "channel": {**CHANNEL, "id": "c9"}})
    assert type(e) is ChannelEvent and e.channel_id == "c9" and e.raw["variable"] == "X"

    g = parse_event({"type": "BridgeCreated", "bridge": {"id": "b1"}})
    assert type(g) is Event and g.channel_id is None and g.raw["bridge"] == {"id": "b1"}


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "StasisStart",
        42,
        {},
        {"type": None},
        {"type": "StasisStart"},  # no channel
        {"type": "StasisStart", "channel": "c1"},
        {"type": "StasisStart", "channel": {}, "args": "inbound"},
        {"type": "StasisStart", "channel": {"id": 7, "caller": "x", "dialplan": {"priority": "two"}}, "args": [1]},
        {"type": "ChannelDestroyed", "channel": {"id": "c"}, "cause": "bad", "cause_txt": None},
        {"type": "Dial", "peer": None, "caller": 3},
        {"type": "ChannelHangupRequest", "channel": {"id": "c"}, "soft": "yes", "cause": True},
    ],
)
def test_parse_never_raises(data: Any) -> None:
    e = parse_event(data)
    assert isinstance(e, Event)


def test_parse_tolerates_odd_fields() -> None:
    e = parse_event({"type": "StasisStart", "channel": {"id": 7, "dialplan": {"priority": "two"}}, "args": [1, None]})
    assert isinstance(e, StasisStart)
    assert e.channel.id == "7" and e.channel.priority == 0 and e.channel.caller_number == ""
    assert e.args == ("1", "")
    assert parse_event({"type": "StasisStart", "channel": {}}).channel_id is None  # no lane for an empty id


def test_channel_from_json() -> None:
    c = Channel.from_json(CHANNEL)
    assert c.id == "1795380914.144" and c.raw is CHANNEL
    assert Channel.from_json(None) == Channel(id="")


def test_event_repr_leaves_out_raw() -> None:
    assert "raw" not in repr(parse_event(STASIS_START))


# -------------------------------------------------------------------------------------------------- backoff
def test_backoff_sequence_without_jitter() -> None:
    delays = list(itertools.islice(backoff_delays(0.5, 5.0, 0.2, rng=lambda: 0.0), 7))
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_backoff_jitter_bounds() -> None:
    low = list(itertools.islice(backoff_delays(0.5, 5.0, 0.2, rng=lambda: 1.0), 5))
    assert low == pytest.approx([0.4, 0.8, 1.6, 3.2, 4.0])
    caps = itertools.chain([0.5, 1, 2, 4], itertools.repeat(5))
    for d, cap in zip(itertools.islice(backoff_delays(), 50), caps, strict=False):
        assert 0.8 * cap <= d <= cap


# ----------------------------------------------------------------------------------------------- dispatcher
async def test_one_channel_in_order_others_concurrent() -> None:
    release_a = asyncio.Event()
    seen: list[tuple[str, str | None]] = []

    async def handler(e: Event) -> None:
        if e.channel_id == "A" and e.type == "StasisStart":
            await release_a.wait()  # a slow handler on channel A
        seen.append((e.type, e.channel_id))

    d = Dispatcher(handler)
    for raw in (ev("StasisStart", "A"), ev("StasisEnd", "A"), ev("StasisStart", "B"), ev("StasisEnd", "B")):
        assert d.submit(parse_event(raw))
    await eventually(lambda: ("StasisEnd", "B") in seen, 2)
    assert seen == [("StasisStart", "B"), ("StasisEnd", "B")]  # B done while A's first handler still waits
    release_a.set()
    await d.join()
    assert seen[2:] == [("StasisStart", "A"), ("StasisEnd", "A")]  # A in order
    await d.aclose()


async def test_many_channels_run_concurrently() -> None:
    running = 0
    peak = 0

    async def handler(e: Event) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    d = Dispatcher(handler)
    for i in range(50):
        d.submit(parse_event(ev("StasisStart", f"c{i}")))
    async with asyncio.timeout(1):  # serially this would take 2.5 s
        await d.join()
    assert peak == 50
    await d.aclose()


async def test_handler_exception_is_logged_without_its_text_and_lane_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    async def handler(e: Event) -> None:
        if e.type == "StasisStart":
            raise ValueError("secret 4915112345678")
        seen.append(e.type)

    d = Dispatcher(handler)
    with caplog.at_level(logging.INFO, logger="asterisk_securelink.asterisk.ari.dispatch"):
        d.submit(parse_event(ev("StasisStart", "A")))
        d.submit(parse_event(ev("ChannelStateChange", "A")))
        d.submit(parse_event(ev("StasisEnd", "A")))
        await d.join()
    assert seen == ["ChannelStateChange", "StasisEnd"]
    assert "ValueError" in caplog.text
    assert "4915112345678" not in caplog.text
    await d.aclose()


async def test_lane_ends_after_stasis_end_and_a_later_event_gets_a_new_lane() -> None:
    seen: list[str] = []

    async def handler(e: Event) -> None:
        seen.append(e.type)

    d = Dispatcher(handler)
    d.submit(parse_event(ev("StasisStart", "A")))
    d.submit(parse_event(ev("StasisEnd", "A")))
    assert d.lanes == 1
    await d.join()
    await asyncio.sleep(0)  # let the worker see its empty queue
    assert d.lanes == 0
    d.submit(parse_event(ev("ChannelDestroyed", "A")))
    await d.join()
    await asyncio.sleep(0)
    assert d.lanes == 0
    assert seen == ["StasisStart", "StasisEnd", "ChannelDestroyed"]
    await d.aclose()


async def test_idle_lane_ends() -> None:
    async def handler(e: Event) -> None:
        pass

    d = Dispatcher(handler, idle_timeout=0.05)
    d.submit(parse_event(ev("ChannelVarset", "A")))  # a channel that never ends in our app
    d.submit(parse_event(ev("BridgeCreated")))  # the global lane
    assert d.lanes == 2
    await eventually(lambda: d.lanes == 0, 1)
    await d.aclose()


async def test_non_channel_events_share_one_ordered_lane() -> None:
    seen: list[int] = []

    async def handler(e: Event) -> None:
        n = int(e.raw["n"])
        await asyncio.sleep(0.01 * (5 - n))  # earlier events are slower: order must still hold
        seen.append(n)

    d = Dispatcher(handler)
    for n in range(5):
        d.submit(parse_event({"type": "BridgeCreated", "n": n}))
    assert d.lanes == 1
    await d.join()
    assert seen == [0, 1, 2, 3, 4]
    await d.aclose()


async def test_full_lane_drops_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    gate = asyncio.Event()

    async def handler(e: Event) -> None:
        await gate.wait()

    d = Dispatcher(handler, max_queue=3)
    with caplog.at_level(logging.WARNING, logger="asterisk_securelink.asterisk.ari.dispatch"):
        results = [d.submit(parse_event(ev("ChannelVarset", "A"))) for _ in range(10)]
    assert results == [True] * 3 + [False] * 7
    assert d.dropped == 7
    assert "lane A is full" in caplog.text
    assert d.submit(parse_event(ev("StasisStart", "B")))  # other channels unaffected
    gate.set()
    await d.join()
    await d.aclose()


async def test_aclose_cancels_stuck_handlers_after_grace() -> None:
    cancelled = asyncio.Event()

    async def handler(e: Event) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    d = Dispatcher(handler)
    d.submit(parse_event(ev("StasisStart", "A")))
    await asyncio.sleep(0)
    async with asyncio.timeout(2):
        await d.aclose(grace=0.05)
    assert cancelled.is_set()
    assert not d.submit(parse_event(ev("StasisStart", "B")))  # closed


# ------------------------------------------------------------------------------------------- client basics
def test_credentials_never_in_url_or_repr() -> None:
    with pytest.raises(ValueError) as exc:
        AriClient("http://user:hunter2@127.0.0.1:8088/ari", "user", "hunter2", "app")
    assert "hunter2" not in str(exc.value)
    c = AriClient("http://127.0.0.1:8088/ari/", "user", "hunter2", "app")
    assert c.url == "http://127.0.0.1:8088/ari"
    assert "hunter2" not in repr(c)
    with pytest.raises(ValueError):
        AriClient("127.0.0.1:8088", "u", "p", "app")


def test_query_params() -> None:
    assert _query({"a": None, "b": True, "c": False, "d": 3, "e": "x"}) == {
        "b": "true",
        "c": "false",
        "d": "3",
        "e": "x",
    }


def test_ari_error_text() -> None:
    e = AriError(404, "Channel not found", "POST", "/channels/x/continue")
    assert str(e) == "ARI POST /channels/x/continue -> 404: Channel not found"
    assert (e.status, e.message) == (404, "Channel not found")
    assert str(AriError(0, "no answer within 10s", "GET", "/channels")) == "ARI GET /channels: no answer within 10s"


# ----------------------------------------------------------------------- client against a fake ARI server
@pytest.fixture
async def fake_ari() -> AsyncIterator[tuple[FakeAriServer, str]]:
    fake = FakeAriServer(CHANNEL)
    runner = web.AppRunner(fake.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fake, f"http://127.0.0.1:{port}/ari"
    finally:
        for ws in fake.sockets:
            await ws.close()
        await runner.cleanup()


async def test_rest_helpers_against_fake(fake_ari: tuple[FakeAriServer, str]) -> None:
    fake, url = fake_ari
    async with AriClient(url, "securelink", "pw-123", "securelink") as ari:
        chans = await ari.get_channels()
        assert [c.caller_number for c in chans] == ["4915112345678"]
        assert await ari.get_channel_var("c1", "SECURELINK_RESULT") == "v-SECURELINK_RESULT"
        await ari.set_channel_var("c1", "X", "1")
        await ari.continue_in_dialplan("c1", "ctx", "7002", 1)
        assert await ari.hangup("c1", "rejected") is True
        assert await ari.hangup("gone-1") is False
        with pytest.raises(AriError) as exc:
            await ari.continue_in_dialplan("gone-1")
        assert exc.value.status == 404 and exc.value.message == "Channel not found"
        ch = await ari.originate(
            "Local/7000@testbed-inbound",
            app="securelink",
            app_args=["inbound", "ani"],
            caller_id="123",
            timeout=30,
            variables={"A": "1"},
            channel_id="my-id",
        )
        assert ch.id == "my-id"
        created = await ari.create_channel("Local/answer@ctx", app_args="x", channel_id="new-id", variables={"B": "2"})
        assert created.id == "new-id"
        assert await ari.create_bridge() == "br-1"
        await ari.add_channel_to_bridge("br-1", ["c1", "c2"], inhibit_connected_line_updates=True)
    got = {(m, p): (q, b) for m, p, q, b in fake.requests}
    assert got[("POST", "/ari/channels/c1/variable")][0] == {"variable": "X", "value": "1"}
    assert got[("POST", "/ari/channels/c1/continue")][0] == {"context": "ctx", "extension": "7002", "priority": "1"}
    assert got[("DELETE", "/ari/channels/c1")][0] == {"reason": "rejected"}
    q, body = got[("POST", "/ari/channels")]
    assert q == {"endpoint": "Local/7000@testbed-inbound", "app": "securelink", "appArgs": "inbound,ani",
                 "callerId": "123", "timeout": "30", "channelId": "my-id"}  # fmt: skip
    assert body == {"variables": {"A": "1"}}
    q, body = got[("POST", "/ari/channels/create")]  # app defaults to the client's own
    assert q == {"endpoint": "Local/answer@ctx", "app": "securelink", "appArgs": "x", "channelId": "new-id"}
    assert body == {"variables": {"B": "2"}}
    assert got[("POST", "/ari/bridges/br-1/addChannel")][0] == {
        "channel": "c1,c2",
        "inhibitConnectedLineUpdates": "true",
    }


async def test_rest_wrong_password_is_a_clean_error(fake_ari: tuple[FakeAriServer, str]) -> None:
    _, url = fake_ari
    async with AriClient(url, "securelink", "wrong-secret-xyz", "securelink") as ari:
        with pytest.raises(AriError) as exc:
            await ari.asterisk_info()
    assert exc.value.status == 401
    assert "wrong-secret-xyz" not in str(exc.value) and "wrong-secret-xyz" not in repr(exc.value)


async def test_rest_alone_opens_no_events_socket(fake_ari: tuple[FakeAriServer, str]) -> None:
    fake, url = fake_ari
    async with AriRest(url, "securelink", "pw-123", "securelink") as rest:
        assert [c.id for c in await rest.get_channels()] == ["1795380914.144"]
        assert "pw-123" not in repr(rest)
    assert fake.connects == 0
    with pytest.raises(AriError):
        await rest.get_channels()  # closed


async def test_run_gives_up_on_bad_credentials(
    fake_ari: tuple[FakeAriServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, url = fake_ari
    ari = AriClient(url, "securelink", "wrong-secret-xyz", "securelink")

    async def handler(e: Event) -> None:
        pass

    task = asyncio.create_task(ari.run(handler))
    with pytest.raises(AriError) as exc:
        await ari.wait_connected(5)
    assert exc.value.status == 401
    with pytest.raises(AriError):
        await task
    await ari.close()
    assert "wrong-secret-xyz" not in caplog.text


async def test_reconnects_after_clean_close_and_calls_on_connect_again(fake_ari: tuple[FakeAriServer, str]) -> None:
    fake, url = fake_ari
    ari = AriClient(url, "securelink", "pw-123", "securelink")
    events: asyncio.Queue[Event] = asyncio.Queue()
    connects: list[int] = []
    states: list[bool] = []

    async def handler(e: Event) -> None:
        await events.put(e)

    async def on_connect() -> None:
        connects.append(fake.connects)

    task = asyncio.create_task(ari.run(handler, on_connect=on_connect, on_state_change=states.append))
    assert await ari.wait_connected(5)
    await fake.send(STASIS_START)
    first = await asyncio.wait_for(events.get(), 5)
    assert isinstance(first, StasisStart)

    await fake.sockets[-1].close()  # a CLEAN close by the server is a disconnect too
    await eventually(lambda: fake.connects >= 2 and ari.connected)
    await fake.send(copy.deepcopy({**STASIS_START, "channel": {**CHANNEL, "id": "second.1"}}))
    second = await asyncio.wait_for(events.get(), 5)
    assert second.channel_id == "second.1"
    await eventually(lambda: len(connects) >= 2, 2)
    assert connects == [1, 2]
    assert states[:3] == [True, False, True]
    assert ari.connects == 2

    await ari.close()
    await asyncio.wait_for(task, 5)
    assert not ari.connected and states[-1] is False


async def test_close_during_backoff_returns_promptly() -> None:
    # Nothing listens on this port: run() keeps failing and backing off until close().
    ari = AriClient("http://127.0.0.1:9/ari", "u", "p", "app")

    async def handler(e: Event) -> None:
        pass

    task = asyncio.create_task(ari.run(handler))
    assert not await ari.wait_connected(0.3)
    async with asyncio.timeout(2):
        await ari.close()
        await task


async def test_request_after_close_fails() -> None:
    ari = AriClient("http://127.0.0.1:9/ari", "u", "p", "app")
    await ari.close()
    with pytest.raises(AriError):
        await ari.get_channels()


async def test_connection_refused_is_an_ari_error() -> None:
    async with AriClient("http://127.0.0.1:9/ari", "u", "p", "app", request_timeout=2) as ari:
        with pytest.raises(AriError) as exc:
            await ari.asterisk_info()
    assert exc.value.status == 0
