"""The guards around panoramisk 1.4's FastAGI server (see asterisk_securelink/asterisk/agi.py): our server against
raw clients on real loopback sockets. The AMI guards are in test_ami_guards.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator, Mapping

import pytest
from panoramisk.fast_agi import Application
from support.agi import agi_env, answer_commands

from asterisk_securelink.asterisk.agi import PEER_KEY, FastAgiServer, agi_args, is_channel_name, quote_value, script_of
from asterisk_securelink.asterisk.agi_access import (
    DEFAULT_ALLOW_FROM,
    PeerSlots,
    check_listen,
    parse_allow_from,
    peer_address,
)
from asterisk_securelink.dialplan import RESULT_VAR

ENV_TIMEOUT = 0.5


# ---- helpers -------------------------------------------------------------------------------------------------
class _Watchdog(Exception):
    pass


@contextlib.contextmanager
def loop_watchdog(seconds: float) -> Iterator[None]:
    """A loop blocked by a busy coroutine never runs a timeout: SIGALRM interrupts whatever Python code runs."""

    def fire(signum: int, frame: object) -> None:
        raise _Watchdog("event loop blocked")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Recorder:
    def __init__(self, result: Mapping[str, str] | None = None, delay: float = 0.0, fail: bool = False) -> None:
        self.calls: list[tuple[dict[str, str], list[str]]] = []
        self.result = result if result is not None else {RESULT_VAR: "admitted", "SECURELINK_DEVICE": "7"}
        self.delay = delay
        self.fail = fail

    async def __call__(self, env: dict[str, str], args: list[str]) -> Mapping[str, str]:
        self.calls.append((env, args))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom")
        return self.result


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def agi(recorder: Recorder) -> AsyncIterator[FastAgiServer]:
    server = FastAgiServer(recorder, env_timeout=ENV_TIMEOUT, command_timeout=1.0, verify_timeout=1.0, max_line=512)
    await server.serve("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop(grace=0.5)


async def proper_request(port: int, *args: str) -> list[str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(agi_env("verify", *args))
    await writer.drain()
    return await answer_commands(reader, writer)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the server closed the connection (reads and discards anything it sends)."""
    t0 = time.monotonic()
    async with asyncio.timeout(seconds):
        with contextlib.suppress(ConnectionResetError):  # closed with our unread bytes: RST
            while await reader.read(4096):
                pass
    return time.monotonic() - t0


# ---- FastAGI guard 1: no spinning on early close -------------------------------------------------------------
def _connect_and_close(port: int, n: int, reset: bool) -> None:
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        if reset:  # RST instead of FIN, as some scanners do
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


async def test_connect_and_close_does_not_spin_the_loop(agi: FastAgiServer, recorder: Recorder) -> None:
    with loop_watchdog(5.0):
        await asyncio.to_thread(_connect_and_close, agi.port, 100, False)
        await asyncio.to_thread(_connect_and_close, agi.port, 100, True)
        await asyncio.sleep(0.2)  # let the handlers see their EOFs
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(1.0)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
    assert wall < 1.5, "the event loop was blocked"
    assert cpu < 0.3, f"{cpu:.2f} s CPU in 1 s idle: the loop spins"
    assert agi.app is not None and not agi.app.active  # every early-closed connection is gone
    assert await proper_request(agi.port, "ani") == [
        'SET VARIABLE SECURELINK_RESULT "admitted"',
        'SET VARIABLE SECURELINK_DEVICE "7"',
    ]
    assert len(recorder.calls) == 1


async def test_stock_panoramisk_handler_spins() -> None:
    """The control: the same connection blocks the event loop under panoramisk 1.4's own handler (if this fails,
    panoramisk was fixed and the guard could go). The watchdog's signal lands in whatever Python code runs: inside
    the stock handler means the handler held the loop for the whole second (CPU time would be a flaky measure on a
    loaded machine; this is not)."""
    app = Application(loop=asyncio.get_running_loop())
    caught_in_handler: list[bool] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await app.handler(reader, writer)
        except _Watchdog:
            caught_in_handler.append(True)

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with loop_watchdog(1.0):
            await asyncio.to_thread(_connect_and_close, port, 1, False)
            with contextlib.suppress(_Watchdog):
                await asyncio.sleep(1.5)
    finally:
        server.close()
    assert caught_in_handler == [True], "the stock handler did not hold the event loop"


# ---- FastAGI guard 2: read timeout ---------------------------------------------------------------------------
async def test_silent_client_is_closed_after_env_timeout(agi: FastAgiServer, recorder: Recorder) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", agi.port)
    took = await closed_within(reader, ENV_TIMEOUT + 2)
    writer.close()
    assert ENV_TIMEOUT * 0.8 <= took < ENV_TIMEOUT + 1
    assert recorder.calls == []


async def test_slow_client_is_closed_at_the_env_deadline(agi: FastAgiServer, recorder: Recorder) -> None:
    """One deadline for the whole environment: a line every 0.1 s does not keep the connection open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", agi.port)

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for line in agi_env("verify").splitlines(keepends=True)[:-1]:
                writer.write(line)
                await writer.drain()
                await asyncio.sleep(0.1)

    t = asyncio.create_task(trickle())
    took = await closed_within(reader, ENV_TIMEOUT + 2)
    t.cancel()
    writer.close()
    assert took < ENV_TIMEOUT + 1
    assert recorder.calls == []


async def test_unanswered_command_is_bounded(agi: FastAgiServer, recorder: Recorder) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", agi.port)
    writer.write(agi_env("verify", "ani"))
    took = await closed_within(reader, 3)  # we never answer the SET VARIABLE
    writer.close()
    assert took < 2.0  # command_timeout 1 s
    assert len(recorder.calls) == 1


# ---- FastAGI guard 3: a well-formed request ------------------------------------------------------------------
async def test_verify_gets_env_and_args_and_sets_variables(agi: FastAgiServer, recorder: Recorder) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", agi.port)
    writer.write(agi_env("verify", "ani", "x y"))
    commands = await answer_commands(reader, writer)
    assert commands == ['SET VARIABLE SECURELINK_RESULT "admitted"', 'SET VARIABLE SECURELINK_DEVICE "7"']
    [(env, args)] = recorder.calls
    assert args == ["ani", "x y"]
    assert env["agi_callerid"] == "4915112345678"
    assert env["agi_dnid"] == "7000"
    assert env["agi_network_script"] == "verify"
    assert env["agi_accountcode"] == ""


async def test_values_are_quoted_and_cannot_inject_commands(recorder: Recorder) -> None:
    recorder.result = {RESULT_VAR: 'a"b\\c\r\nEXEC Dial PJSIP/666', "BAD NAME": "x", "SECURELINK_MODE": "ani"}
    server = FastAgiServer(recorder, command_timeout=1.0)
    await server.serve("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(agi_env("verify"))
        commands = await answer_commands(reader, writer)
    finally:
        await server.stop()
    assert commands == [
        'SET VARIABLE SECURELINK_RESULT "a\\"b\\\\cEXEC Dial PJSIP/666"',
        'SET VARIABLE SECURELINK_MODE "ani"',
    ]


async def test_hangup_notice_and_100_trying_are_skipped(agi: FastAgiServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", agi.port)
    writer.write(agi_env("verify"))
    commands = await answer_commands(reader, writer, reply=b"HANGUP\n100 Trying...\n200 result=1\n")
    assert len(commands) == 2


async def test_callback_failure_and_timeout_set_error(recorder: Recorder) -> None:
    for rec in (Recorder(fail=True), Recorder(delay=5)):
        server = FastAgiServer(rec, verify_timeout=0.3)
        await server.serve("127.0.0.1", 0)
        try:
            assert await proper_request(server.port) == ['SET VARIABLE SECURELINK_RESULT "error"']
        finally:
            await server.stop()


async def test_callback_failure_logs_only_its_type(caplog: pytest.LogCaptureFixture) -> None:
    """The callback's exception text can hold the caller number, which can be a key: only its type is logged."""

    async def leaky(env: dict[str, str], args: list[str]) -> Mapping[str, str]:
        raise ValueError(f"no device for {env['agi_callerid']}")

    server = FastAgiServer(leaky, verify_timeout=1.0)
    await server.serve("127.0.0.1", 0)
    try:
        with caplog.at_level(logging.INFO, logger="asterisk_securelink.asterisk.agi"):
            assert await proper_request(server.port) == ['SET VARIABLE SECURELINK_RESULT "error"']
    finally:
        await server.stop()
    assert "ValueError" in caplog.text
    assert "4915112345678" not in caplog.text


async def test_unknown_script_sets_error_and_closes(agi: FastAgiServer, recorder: Recorder) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", agi.port)
    writer.write(agi_env("nosuch"))
    assert await answer_commands(reader, writer) == ['SET VARIABLE SECURELINK_RESULT "error"']
    assert recorder.calls == []


async def test_stop_is_clean_with_a_call_in_progress(recorder: Recorder) -> None:
    server = FastAgiServer(Recorder(delay=30), verify_timeout=60)
    await server.serve("127.0.0.1", 0)
    port = server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(agi_env("verify"))
    await writer.drain()
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    await server.stop(grace=0.2)
    assert time.monotonic() - t0 < 2
    assert await closed_within(reader, 2) >= 0
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_connection_cap(recorder: Recorder) -> None:
    """At the cap, a connection that has sent no environment gives its slot to the next one; calls in progress keep
    theirs (a connection that has sent its environment is never dropped)."""
    server = FastAgiServer(recorder, env_timeout=2.0, max_connections=2)
    await server.serve("127.0.0.1", 0)
    try:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        await asyncio.sleep(0.1)
        assert await proper_request(server.port) != []  # served: the oldest silent connection made room
        assert await closed_within(held[0][0], 1.0) < 0.5
        for _r, w in held:
            w.close()
    finally:
        await server.stop()


# ---- FastAGI guard 5: slots (idle timeout, per-peer cap, allow_from, listen address) ---------------------------
async def connect_from(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def test_a_connection_that_sends_nothing_is_closed_at_the_idle_timeout(recorder: Recorder) -> None:
    """Idle connections renewed every few seconds must not hold the slots for the whole environment deadline."""
    server = FastAgiServer(recorder, env_timeout=5.0, idle_timeout=0.3)
    await server.serve("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        took = await closed_within(reader, 3)
        writer.close()
        assert 0.2 <= took < 1.0
        # a line, then silence: idle again
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"agi_network: yes\n")
        took = await closed_within(reader, 3)
        writer.close()
        assert took < 1.0
        assert await proper_request(server.port) != []  # Asterisk, which sends at once, is served
    finally:
        await server.stop()
    assert recorder.calls and all(env[PEER_KEY] == "127.0.0.1" for env, _ in recorder.calls)


async def test_one_address_cannot_take_every_slot(recorder: Recorder) -> None:
    server = FastAgiServer(recorder, env_timeout=3.0, idle_timeout=3.0, max_connections=10, max_per_peer=2,
                           allow_from=["127.0.0.1", "127.0.0.2"])  # fmt: skip
    await server.serve("127.0.0.1", 0)
    try:
        held = [await connect_from(server.port, "127.0.0.2") for _ in range(2)]
        await asyncio.sleep(0.1)
        assert await proper_request(server.port) != []  # Asterisk on 127.0.0.1 still gets its slot
        _reader, writer = await connect_from(server.port, "127.0.0.2")  # a third from that address...
        assert await closed_within(held[0][0], 1.0) < 0.5  # ...drops its own longest-silent one, nobody else's
        writer.close()
        for _r, w in held:
            w.close()
    finally:
        await server.stop()


async def test_a_local_squatter_holding_every_slot_cannot_keep_asterisk_out(recorder: Recorder) -> None:
    """M3: 32 silent connections from 127.0.0.1 (the address Asterisk uses too) used to make every call fail; now
    each real AGI request takes the slot of the connection that has waited longest without an environment."""
    server = FastAgiServer(recorder, env_timeout=30.0, idle_timeout=30.0, max_per_peer=4)
    await server.serve("127.0.0.1", 0)
    try:
        squat = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(4)]
        await asyncio.sleep(0.1)
        for _ in range(5):
            assert await proper_request(server.port, "ani") != []
        assert len(recorder.calls) == 5
    finally:
        for _r, w in squat:
            w.close()
        await server.stop()


def test_the_default_allow_from_is_the_loopback_address_not_its_network() -> None:
    slots = PeerSlots()
    assert slots.take("127.0.0.1") is None and slots.take("::1") is None
    assert slots.take("127.0.0.2") == "not in agi.allow_from"


async def test_a_peer_outside_allow_from_is_closed_without_reading(recorder: Recorder) -> None:
    server = FastAgiServer(recorder, allow_from=["127.0.0.1"], command_timeout=1.0)
    await server.serve("127.0.0.1", 0)
    try:
        reader, writer = await connect_from(server.port, "127.0.0.3")
        writer.write(agi_env("verify", "ani"))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        sent = b""
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(1.0):
                while chunk := await reader.read(4096):
                    sent += chunk
        writer.close()
        assert sent == b"" and recorder.calls == []
        assert server.app is not None and not server.app.active and server.app.slots.total == 0
        assert await proper_request(server.port, "ani") != []  # 127.0.0.1 is allowed
        assert [env[PEER_KEY] for env, _ in recorder.calls] == ["127.0.0.1"]
    finally:
        await server.stop()


async def test_the_peer_key_cannot_be_sent_by_the_peer(agi: FastAgiServer, recorder: Recorder) -> None:
    """The server adds the peer's address to the environment under a name outside `agi_*`: sending it is garbage."""
    reader, writer = await asyncio.open_connection("127.0.0.1", agi.port)
    writer.write(agi_env("verify").replace(b"agi_network: yes\n", f"{PEER_KEY}: 10.9.9.9\n".encode()))
    assert await closed_within(reader, 2) < ENV_TIMEOUT
    writer.close()
    assert recorder.calls == []


async def test_a_non_loopback_listen_address_needs_allow_remote(recorder: Recorder) -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert check_listen(host, allow_remote=False) is None, host
    for host in ("0.0.0.0", "::", "", "192.0.2.10", "pbx.example.org"):  # noqa: S104 - refused, the point
        problem = check_listen(host, allow_remote=False)
        assert problem is not None and "agi.allow_remote" in problem, host
        assert check_listen(host, allow_remote=True) is None
    with pytest.raises(ValueError, match="allow_remote"):
        await FastAgiServer(recorder).serve("0.0.0.0", 0)  # noqa: S104 - refused before binding


def test_allow_from_and_peer_addresses() -> None:
    assert [str(n) for n in parse_allow_from(DEFAULT_ALLOW_FROM)] == ["127.0.0.1/32", "::1/128"]
    assert [str(n) for n in parse_allow_from([" 10.1.2.3/16 ", "2001:db8::1"])] == ["10.1.0.0/16", "2001:db8::1/128"]
    with pytest.raises(ValueError, match="not an IP address"):
        parse_allow_from(["asterisk.example.org"])
    assert peer_address(("127.0.0.1", 4000)) == "127.0.0.1"
    assert peer_address(("::ffff:10.0.0.7", 4000, 0, 0)) == "10.0.0.7"
    assert peer_address(("fe80::1%eth0", 4000, 0, 2)) == "fe80::1"
    assert peer_address(None) is None and peer_address("/run/agi.sock") is None
    slots = PeerSlots(max_total=3, max_per_peer=2)
    assert slots.take("10.0.0.1") == "not in agi.allow_from" and slots.take(None) is not None
    assert slots.take("::ffff:127.0.0.1") is not None  # not normalized: `peer_address` does that
    assert [slots.take("127.0.0.1"), slots.take("127.0.0.1"), slots.take("::1")] == [None, None, None]
    assert slots.take("127.0.0.1") is not None and slots.take("::1") is not None  # per peer, then in total
    slots.release("127.0.0.1")
    assert slots.take("::1") is None and slots.total == 3


def test_channel_names() -> None:
    for name in (
        "PJSIP/carrier-0000002a",
        "SIP/trunk-00000001",
        "IAX2/peer-12345",
        "DAHDI/i1/5551234-1",
        "Local/7000@testbed-inbound-00000001;1",
    ):
        assert is_channel_name(name), name
    for name in ("", "carrier", "PJSIP/carrier", "PJSIP/carrier-0000002a\r\nx", "PJSIP/a b-00000001", "x" * 200):
        assert not is_channel_name(name), name


# ---- FastAGI guard 4: garbage --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # a web scanner
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # a TLS ClientHello
        b"agi_network: yes\nagi_network_script: verify\nnot an agi line\n\n",
        b"\n\n",  # blank environment
        b"agi_network_script: verify\n" + b"agi_x: " + b"A" * 5000 + b"\n\n",  # overlong line (limit 512)
        b"".join(b"agi_x%d: y\n" % i for i in range(300)) + b"\n",  # too many lines
        b"agi_network: yes\nagi_network_script: verify\n",  # no blank line, then EOF
    ],
    ids=["http", "tls", "bad-line", "blank", "overlong", "many-lines", "eof-mid-env"],
)
async def test_garbage_is_closed_without_verifying(agi: FastAgiServer, recorder: Recorder, payload: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", agi.port)
    writer.write(payload)
    if payload.endswith(b"verify\n"):
        writer.write_eof()
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    sent = b""
    t0 = time.monotonic()
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(ENV_TIMEOUT + 2):
            while chunk := await reader.read(4096):
                sent += chunk
    writer.close()
    assert time.monotonic() - t0 < ENV_TIMEOUT  # closed at once, not at the env deadline
    assert sent == b""  # nothing sent to a peer that is not Asterisk
    assert recorder.calls == []
    assert await proper_request(agi.port) != []  # and the server still serves


def test_agi_helpers() -> None:
    assert quote_value('x"\\\n\x00é') == '"x\\"\\\\"'
    assert quote_value(None) == '""'
    assert script_of({"agi_network_script": "/verify?x=1"}) == "verify"
    assert script_of({}) is None
    assert agi_args({"agi_arg_1": "a", "agi_arg_2": "", "agi_arg_4": "d"}) == ["a", ""]
