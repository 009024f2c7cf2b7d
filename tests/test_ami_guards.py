"""The guards around panoramisk 1.4's AMI client (see asterisk_securelink/asterisk/ami.py): the sanitizer, and our
publisher against a fake AMI peer on a real loopback socket (no Asterisk needed). The FastAGI guards are in
test_agi_guards.py.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
from support.ami import FakeAmi, publisher_for

from asterisk_securelink.asterisk.ami import (
    AmiNotConnected,
    AmiPublisher,
    AmiTimeout,
    check_header_name,
    sanitize_action,
    sanitize_value,
)


# ---- AMI: sanitizer ------------------------------------------------------------------------------------------
def test_sanitize_value_strips_crlf_controls_and_non_ascii() -> None:
    assert sanitize_value("+4915\r\nAction: Originate\r\n\r\n") == "+4915Action: Originate"
    assert sanitize_value("a\x00b\tc\x7fd\x85e") == "abcde"
    assert sanitize_value("Müller") == "M?ller"
    assert sanitize_value(None) == ""
    assert sanitize_value(42) == "42"
    assert sanitize_value("x" * 1000) == "x" * 256
    assert sanitize_value("  padded  ") == "padded"
    for c in range(0x3000):
        out = sanitize_value(f"a{chr(c)}b")
        assert all(0x20 <= ord(ch) < 0x7F for ch in out), c


def test_sanitize_action_checks_names() -> None:
    assert sanitize_action({"Action": "UserEvent", "Variable": ["A=1\r\n", "B=2"]}) == {
        "Action": "UserEvent",
        "Variable": ["A=1", "B=2"],
    }
    for bad in ("Bad Name", "X\r\nAction", "", "1abc"):
        with pytest.raises(ValueError):
            check_header_name(bad)
    with pytest.raises(ValueError):
        sanitize_action({"Channel": "x"})  # no Action


# ---- AMI: against a fake peer (support/ami.py) --------------------------------------------------------------
async def test_publish_verdict_sends_sanitized_headers(fake_ami: FakeAmi) -> None:
    async with publisher_for(fake_ami) as pub:
        assert await pub.wait_logged_in(2)
        ok = await pub.publish_verdict(
            "admitted", 7, "inbound", "ani", "PJSIP/x\r\nAction: Originate\r\nChannel: PJSIP/666", "1700.1\n"
        )
    assert ok
    ev = fake_ami.actions[-1]
    assert ev["action"] == "UserEvent" and ev["userevent"] == "SecureLinkVerdict"
    assert ev["result"] == "admitted" and ev["device"] == "7" and ev["direction"] == "inbound"
    assert ev["mode"] == "ani" and ev["uniqueid"] == "1700.1"
    assert ev["channel"] == "PJSIP/xAction: OriginateChannel: PJSIP/666"  # one header, no injected action
    assert b"\r\nAction: Originate" not in fake_ami.raw
    assert sum(a.get("action") == "Originate" for a in fake_ami.actions) == 0


async def test_send_action_is_bounded_when_the_connection_drops_mid_action(fake_ami: FakeAmi) -> None:
    fake_ami.mode = "drop"
    async with publisher_for(fake_ami) as pub:
        assert await pub.wait_logged_in(2)
        t0 = time.monotonic()
        with pytest.raises(AmiTimeout):
            await pub.send_action({"Action": "UserEvent", "UserEvent": "X"}, timeout=0.5)
        assert time.monotonic() - t0 < 1.0
        # the cut action is not re-sent after the reconnect, and publish never raises
        fake_ami.mode = "ack"
        assert await pub.wait_logged_in(3)
        await asyncio.sleep(0.3)
        assert sum(a.get("userevent") == "X" for a in fake_ami.actions) == 1
        assert await pub.publish_verdict("mismatch", None, "inbound", "ani", "c", "u")


async def test_send_action_is_bounded_when_ami_never_answers(fake_ami: FakeAmi) -> None:
    fake_ami.mode = "silent"
    async with publisher_for(fake_ami, timeout=0.3) as pub:
        assert await pub.wait_logged_in(2)
        t0 = time.monotonic()
        assert await pub.publish_verdict("admitted", 1, "inbound", "ani", "c", "u") is False
        assert time.monotonic() - t0 < 0.8
        assert pub.manager is not None and not pub.manager.protocol.responses  # forgotten, not leaked


async def test_reconnects_after_loss(fake_ami: FakeAmi) -> None:
    async with publisher_for(fake_ami) as pub:
        assert await pub.wait_logged_in(2)
        for w in fake_ami.writers:
            w.close()
        await asyncio.sleep(0.2)
        assert not pub.logged_in
        assert await pub.publish_verdict("admitted", 1, "inbound", "ani", "c", "u") is False  # fails fast
        assert await pub.wait_logged_in(4)
        assert fake_ami.logins == 2
        assert await pub.publish_verdict("admitted", 1, "inbound", "ani", "c", "u")


async def test_no_ami_never_blocks() -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pub = AmiPublisher("127.0.0.1", port, "securelink", "x", reconnect_delay=1)
    t0 = time.monotonic()
    assert await pub.publish_verdict("admitted", 1, "inbound", "ani", "c", "u") is False  # never started
    with pytest.raises(AmiNotConnected):
        await pub.send_action({"Action": "Ping"})
    ok, detail = await pub.check(timeout=2)
    assert not ok and "cannot connect" in detail
    assert time.monotonic() - t0 < 1.0
    assert pub.manager is None  # check() cleaned up what it started


async def test_check_reports_login_result(fake_ami: FakeAmi) -> None:
    ok, detail = await publisher_for(fake_ami).check(timeout=2)
    assert ok, detail
    t0 = time.monotonic()
    ok, detail = await publisher_for(fake_ami, secret="bad").check(timeout=2)
    assert not ok and "refused" in detail and "bad" not in detail
    assert time.monotonic() - t0 < 1.0


async def test_unanswered_login_is_retried() -> None:
    """A peer that accepts TCP but never answers the login: the watchdog reconnects instead of waiting forever."""
    accepted = 0

    def count(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1

    silent = await asyncio.start_server(count, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    pub = AmiPublisher("127.0.0.1", port, "securelink", "good", login_timeout=0.3, reconnect_delay=1)
    try:
        ok, detail = await pub.check(timeout=0.6)
        assert not ok and "not answered" in detail
        await pub.start()
        await asyncio.sleep(1.8)
        assert accepted >= 2
    finally:
        await pub.close()
        silent.close()


async def test_utf8_split_across_tcp_reads_survives(fake_ami: FakeAmi) -> None:
    """panoramisk decodes each read alone with errors='ignore'; our protocol decodes the stream."""
    async with publisher_for(fake_ami) as pub:
        assert await pub.wait_logged_in(2)
        got: list[str] = []
        arrived = asyncio.Event()

        def on_event(manager: Any, event: Any) -> None:
            got.append(event["Name"])
            arrived.set()

        pub.manager.register_event("UserEvent", on_event)
        [w] = fake_ami.writers
        msg = "Event: UserEvent\r\nUserEvent: T\r\nName: Müller-€\r\n\r\n".encode()
        cut = msg.index("ü".encode()) + 1  # in the middle of the two bytes of ü
        w.write(msg[:cut])
        await w.drain()
        await asyncio.sleep(0.1)
        w.write(msg[cut:])
        await w.drain()
        await asyncio.wait_for(arrived.wait(), 2)
    assert got == ["Müller-€"]
