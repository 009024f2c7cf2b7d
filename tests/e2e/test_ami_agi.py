"""AMI publisher and FastAGI server against the real Asterisk 22 testbed (`scripts/asterisk-testbed up`).

No testbed file is changed: the FastAGI call is an AMI `Originate` of `Local/7000@testbed-inbound` (7000 answers)
with `Application: AGI`, and what Asterisk did with our `SET VARIABLE`s is observed as AMI `VarSet` events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from harness import ami_monitor
from support.ami import AmiMonitor

from asterisk_securelink.asterisk.agi import AgiRequest, FastAgiServer
from asterisk_securelink.asterisk.ami import AmiPublisher
from asterisk_securelink.dialplan import RESULT_VAR
from testbed import AMI_HOST, AMI_PORT, AMI_SECRET, AMI_USER

pytestmark = pytest.mark.e2e


@pytest.fixture
async def publisher() -> AsyncIterator[AmiPublisher]:
    pub = AmiPublisher(AMI_HOST, AMI_PORT, AMI_USER, AMI_SECRET)
    await pub.start()
    assert await pub.wait_logged_in(5), pub.last_error
    try:
        yield pub
    finally:
        await pub.close()


@pytest.fixture
async def monitor(publisher: AmiPublisher) -> AsyncIterator[AmiMonitor]:
    """A second, independent AMI session recording every event."""
    async with ami_monitor(None, login_within=5) as mon:
        yield mon


async def test_check_logs_in(publisher: AmiPublisher) -> None:
    ok, detail = await publisher.check()
    assert ok, detail


async def test_verdict_user_event_arrives_intact(publisher: AmiPublisher, monitor: AmiMonitor) -> None:
    uniqueid = f"e2e.{id(monitor)}"
    ok = await publisher.publish_verdict(
        "admitted", 42, "inbound", "ani", "PJSIP/carrier-0000002a\r\nAction: Originate\r\nChannel: Local/1@x", uniqueid
    )
    assert ok
    ev = await monitor.wait_for({"Event": "UserEvent", "UserEvent": "SecureLinkVerdict", "Uniqueid": uniqueid})
    assert ev["Result"] == "admitted"
    assert ev["Device"] == "42"
    assert ev["Direction"] == "inbound"
    assert ev["Mode"] == "ani"
    assert ev["Channel"] == "PJSIP/carrier-0000002aAction: OriginateChannel: Local/1@x"  # one header, defused
    await asyncio.sleep(0.5)
    assert not [e for e in monitor.events if e.get("Event") == "OriginateResponse"]


class Recorder:
    def __init__(self, result: Mapping[str, str]) -> None:
        self.result = result
        self.calls: list[tuple[dict[str, str], list[str]]] = []
        self.called = asyncio.Event()

    async def __call__(self, env: dict[str, str], args: list[str]) -> Mapping[str, str]:
        self.calls.append((env, args))
        self.called.set()
        return self.result


async def _originate_agi(publisher: AmiPublisher, port: int, script: str, caller: str, uid: str = "") -> None:
    action: dict[str, str] = {
        "Action": "Originate",
        "Channel": "Local/7000@testbed-inbound",
        "Application": "AGI",
        "Data": f"agi://127.0.0.1:{port}/{script},ani",
        "CallerID": f'"e2e" <{caller}>',
        "Timeout": "10000",
        # the publisher logs in without events, so it never sees an async OriginateResponse (which panoramisk
        # would wait for): a synchronous Originate is answered once 7000 answers
        "Async": "false",
    }
    if uid:
        action["ChannelId"] = uid  # the Uniqueid of the Local;1 channel, which runs the AGI
    resp = await publisher.send_action(action, timeout=15)
    responses = resp if isinstance(resp, list) else [resp]
    assert responses[0].success, responses[0]


async def test_fastagi_from_real_asterisk(publisher: AmiPublisher, monitor: AmiMonitor) -> None:
    rec = Recorder({RESULT_VAR: "admitted", "SECURELINK_DEVICE": "42"})
    server = FastAgiServer(rec)
    await server.serve("127.0.0.1", 0)
    try:
        await _originate_agi(publisher, server.port, "verify", "4915112345678")
        await asyncio.wait_for(rec.called.wait(), 10)
        [(env, args)] = rec.calls
        assert args == ["ani"]
        assert env["agi_network_script"] == "verify"
        assert env["agi_callerid"] == "4915112345678"
        assert env["agi_channel"].startswith("Local/7000@testbed-inbound-")
        uid = env["agi_uniqueid"]
        result = await monitor.wait_for({"Event": "VarSet", "Uniqueid": uid, "Variable": RESULT_VAR})
        assert result["Value"] == "admitted"
        dev = await monitor.wait_for({"Event": "VarSet", "Uniqueid": uid, "Variable": "SECURELINK_DEVICE"})
        assert dev["Value"] == "42"
        # our close ends the AGI cleanly: the dialplan's `GotoIf($["${AGISTATUS}" != "SUCCESS"]?reject)` passes
        status = await monitor.wait_for({"Event": "VarSet", "Uniqueid": uid, "Variable": "AGISTATUS"})
        assert status["Value"] == "SUCCESS"
        ends = [e for e in monitor.events if e.get("Event") == "AGIExecEnd" and e.get("Uniqueid") == uid]
        assert len(ends) == 2 and all(e.get("ResultCode") == "200" for e in ends), ends
    finally:
        await server.stop()


async def test_fastagi_values_reach_the_channel_exactly(publisher: AmiPublisher) -> None:
    """Quotes, backslashes, spaces survive res_agi's argument parser; CR/LF cannot start a second command.
    Read back with GET VARIABLE in the same session (AMI VarSet events show values re-escaped)."""
    values = {"SECURELINK_DEVICE": 'dev "7" \\ x', RESULT_VAR: "admitted\r\nEXEC Hangup"}
    readback: dict[str, Any] = {}
    done = asyncio.Event()
    server = FastAgiServer(Recorder(values))

    async def verify_and_read_back(request: AgiRequest) -> None:
        await server.verify_route(request)
        for name in values:
            readback[name] = (await request.send_command(f"GET VARIABLE {name}"))["result"]
        done.set()

    server.add_route("readback", verify_and_read_back)
    await server.serve("127.0.0.1", 0)
    try:
        await _originate_agi(publisher, server.port, "readback", "4915112345678")
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await server.stop()
    assert readback["SECURELINK_DEVICE"] == ("1", 'dev "7" \\ x')
    assert readback[RESULT_VAR] == ("1", "admittedEXEC Hangup")


async def test_fastagi_unknown_script_sets_error(publisher: AmiPublisher, monitor: AmiMonitor) -> None:
    rec = Recorder({RESULT_VAR: "admitted"})
    server = FastAgiServer(rec)
    await server.serve("127.0.0.1", 0)
    try:
        uid = f"e2e-nosuch-{id(rec)}"
        await _originate_agi(publisher, server.port, "nosuch", "4915112345678", uid)
        ev = await monitor.wait_for({"Event": "VarSet", "Uniqueid": uid, "Variable": RESULT_VAR})
        assert ev["Value"] == "error"
        assert ev["Channel"].startswith("Local/7000@testbed-inbound-")
        assert rec.calls == []
    finally:
        await server.stop()


async def test_fastagi_survives_a_port_scan_then_serves_asterisk(publisher: AmiPublisher, monitor: AmiMonitor) -> None:
    rec = Recorder({RESULT_VAR: "mismatch"})
    server = FastAgiServer(rec)
    await server.serve("127.0.0.1", 0)
    try:
        for _ in range(50):
            _r, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.close()
        await _originate_agi(publisher, server.port, "verify", "4915199999999")
        await asyncio.wait_for(rec.called.wait(), 10)
        uid = rec.calls[0][0]["agi_uniqueid"]
        ev = await monitor.wait_for({"Event": "VarSet", "Uniqueid": uid, "Variable": RESULT_VAR})
        assert ev["Value"] == "mismatch"
    finally:
        await server.stop()
