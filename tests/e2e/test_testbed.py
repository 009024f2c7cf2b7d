"""Proves the e2e harness itself on the real Asterisk testbed (no product code).

Run:  python -m pytest tests/e2e/test_testbed.py -q
(first run builds the chroot: ~1-2 min; later runs start Asterisk in ~1 s)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from sipp import UasProcess, run_uac

import testbed

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def asterisk() -> Iterator[None]:
    testbed.ensure_up()
    yield


def _wait_no_channels(timeout: float = 5.0) -> list[object]:
    deadline = time.monotonic() + timeout
    chans: list[object] = []
    while time.monotonic() < deadline:
        chans = testbed.ari_get("/channels")
        if chans == []:
            return chans
        time.sleep(0.1)
    return chans


@pytest.fixture(autouse=True)
def no_leftover_channels(asterisk: None) -> Iterator[None]:
    yield
    assert _wait_no_channels() == [], "channels left over in Asterisk after the test"


@pytest.fixture
async def probe_app() -> AsyncIterator[tuple[aiohttp.ClientSession, asyncio.Queue[dict[str, object]]]]:
    """A raw ARI websocket for app 'testbed-probe'; yields (session, event queue)."""
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    async with aiohttp.ClientSession(base_url="http://127.0.0.1:8088", headers=testbed.ARI_AUTH_HEADER) as session:
        ws = await session.ws_connect("/ari/events", params={"app": "testbed-probe"}, heartbeat=10)

        async def reader() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await queue.put(json.loads(msg.data))

        task = asyncio.create_task(reader())
        # The app is registered once the websocket is up; verify via ARI.
        for _ in range(50):
            apps = await (await session.get("/ari/applications")).json()
            if any(a["name"] == "testbed-probe" for a in apps):
                break
            await asyncio.sleep(0.05)
        try:
            yield session, queue
        finally:
            await ws.close()
            task.cancel()


async def _next_event(queue: asyncio.Queue[dict[str, object]], kind: str, within: float = 10) -> dict[str, object]:
    async with asyncio.timeout(within):
        while True:
            ev = await queue.get()
            if ev.get("type") == kind:
                return ev


def test_status_and_info() -> None:
    info = testbed.ari_get("/asterisk/info")
    assert info["system"]["version"].startswith("22")
    assert "Asterisk" in testbed.asterisk_cli("core show version")
    assert "transport-udp" in testbed.asterisk_cli("pjsip show transports")


def test_answer_reject_and_stasis_failed() -> None:
    results = run_uac([("15551230000", "7000"), ("15551230001", "7001"), ("15551230002", "7002")])
    assert [r.status_code for r in results] == [200, 403, 403]
    assert results[0].caller == "15551230000" and results[0].called == "7000"


def test_anonymous_call() -> None:
    (res,) = run_uac([("", "7000")])
    assert res.status_code == 200


def test_many_calls_one_run() -> None:
    calls = [(f"1555000{i:04d}", "7000" if i % 2 else "7001") for i in range(20)]
    results = run_uac(calls, rate=20)
    assert [r.status_code for r in results] == [200 if i % 2 else 403 for i in range(20)]


async def test_stasis_continue(probe_app: tuple[aiohttp.ClientSession, asyncio.Queue[dict[str, object]]]) -> None:
    session, queue = probe_app
    call = asyncio.create_task(asyncio.to_thread(run_uac, [("4915112345678", "7002")]))
    start = await _next_event(queue, "StasisStart")
    channel = start["channel"]
    assert isinstance(channel, dict)
    # P-Asserted-Identity user -> CALLERID(num); Request-URI user -> exten.
    assert channel["caller"]["number"] == "4915112345678"
    assert channel["dialplan"]["exten"] == "stasis"  # after Goto(testbed-selftest,stasis,1)
    resp = await session.post(f"/ari/channels/{channel['id']}/continue")
    assert resp.status == 204
    (res,) = await call
    assert res.status_code == 200


async def test_outbound_originate_to_uas(
    probe_app: tuple[aiohttp.ClientSession, asyncio.Queue[dict[str, object]]],
) -> None:
    session, queue = probe_app
    with UasProcess(5070, ring_ms=100) as uas:
        resp = await session.post(
            "/ari/channels",
            params={
                "endpoint": "PJSIP/5551234@carrier",
                "app": "testbed-probe",
                "callerId": "4930111222",
            },
        )
        assert resp.status == 200, await resp.text()
        chan_id = (await resp.json())["id"]
        start = await _next_event(queue, "StasisStart")
        assert start["channel"]["id"] == chan_id  # type: ignore[index]
        invites = await asyncio.to_thread(uas.wait_for_invites, 1)
        assert invites[0].from_user == "4930111222"
        assert invites[0].pai_user == "4930111222"  # send_pai=yes
        resp = await session.delete(f"/ari/channels/{chan_id}")
        assert resp.status == 204
        await _next_event(queue, "StasisEnd")


def test_outbound_busy() -> None:
    with UasProcess(5070, mode="reject", code=486, reason="Busy Here", ring_ms=50) as uas:
        # No app: originate into the dialplan; the UAS rejects, so nothing runs.
        testbed.ari_post(
            "/channels",
            {
                "endpoint": "PJSIP/5559999@carrier",
                "extension": "answer",
                "context": "testbed-selftest",
                "priority": "1",
                "callerId": "4930111333",
            },
        )
        invites = uas.wait_for_invites(1)
        assert invites[0].from_user == "4930111333"
        assert invites[0].response == 486
        # The UAS logs on receipt and answers after ring_ms: keep it alive until
        # Asterisk got the 486 and the channel is gone.
        assert _wait_no_channels(timeout=8) == []


def test_outbound_no_answer_cancel() -> None:
    with UasProcess(5070, mode="noanswer") as uas:
        # ARI originate timeout=2: Asterisk CANCELs after 2 s of ringing.
        testbed.ari_post(
            "/channels",
            {
                "endpoint": "PJSIP/5550000@carrier",
                "extension": "answer",
                "context": "testbed-selftest",
                "priority": "1",
                "timeout": "2",
                "callerId": "4930111444",
            },
        )
        invites = uas.wait_for_invites(1)
        assert invites[0].from_user == "4930111444"
        assert _wait_no_channels(timeout=8) == []
