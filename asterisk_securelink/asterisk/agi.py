"""FastAGI server (`securelink agi`): panoramisk's `Application` with its connection handler replaced.

panoramisk 1.4's `Application.handler` reads the AGI environment with `while b'\\n\\n' not in buffer: buffer +=
await reader.read(100)`. At EOF `read()` returns b'' at once without yielding, so a peer that connects and closes
before sending the environment (a port scan does it) pins the event loop at 100% CPU forever: every call in the
process stops. It also has no read timeout, no size limit, and `Request.send_command` reads results unbounded.

Here a connection is first admitted (`agi_access`: from an `allow_from` address, within the total and per-address
caps; anything else is closed before a byte is read). The environment is then read line by line (EOF ends it): each
line within `idle_timeout` (a connection that sends nothing is closed after it, not after the whole deadline), all of
it within `env_timeout`, with a line-length and a line-count limit; anything that is not `agi_*: value` closes the
connection. Every AGI command is bounded by `command_timeout`, the verify callback by `verify_timeout`. Whatever
happens, the connection is closed and the server keeps serving.

Routes: `verify` runs the injected callback `verify(env, args) -> {variable: value}` and sends
`SET VARIABLE name "value"` for each (`add_variables_route` adds more such routes, e.g. `register`); an unknown
script from an Asterisk channel sets `SECURELINK_RESULT=error` (the dialplan then rejects: fail closed). The
callback's `env` also holds `PEER_KEY`: the peer's IP address, added by the server (a peer can only send `agi_*`
keys, so it cannot choose it). The AGI environment holds the presented number, so it is never logged, nor is the
text of the callback's exception (only its type; the traceback at DEBUG).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from panoramisk.fast_agi import Application, Request
from panoramisk.utils import parse_agi_result

from asterisk_securelink.asterisk.agi_access import (
    DEFAULT_ALLOW_FROM,
    MAX_CONNECTIONS,
    MAX_PER_PEER,
    PeerSlots,
    Waiting,
    check_listen,
    oldest_silent,
    parse_allow_from,
    peer_address,
)
from asterisk_securelink.dialplan import RESULT_VAR
from asterisk_securelink.errors import ProtocolError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4573
ENV_TIMEOUT = 5.0  # seconds for the whole AGI environment
IDLE_TIMEOUT = 2.0  # seconds for each line of it, the first included (Asterisk sends it all at once)
COMMAND_TIMEOUT = 5.0  # seconds per AGI command (write + answer)
VERIFY_TIMEOUT = 10.0  # seconds for the verify callback
MAX_LINE = 4096  # bytes per line from the peer
MAX_ENV_LINES = 256  # Asterisk sends ~25 + one per argument
MAX_VALUE_LENGTH = 1024  # characters of a SET VARIABLE value
VERIFY_ROUTE = "verify"
REGISTER_ROUTE = "register"  # `[securelink-register-agi]`: a device's first verified call registers it
PEER_KEY = "securelink_peer"  # in the callback's env: the peer's IP address (not an `agi_*` key: never from the peer)
REFUSAL_LOG_INTERVAL = 10.0  # seconds; refused connections are logged at most this often (a scan is not a log flood)

VerifyCallback = Callable[[dict[str, str], list[str]], Awaitable[Mapping[str, str]]]
Endpoint = Callable[["AgiRequest"], Awaitable[None]]

_ENV_KEY = re.compile(r"agi_[a-z0-9_]{1,64}\Z")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,79}(\([A-Za-z0-9_,]{1,40}\))?\Z")  # a variable, or FUNC(args)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_ASTERISK_KEYS = ("agi_network", "agi_request", "agi_channel", "agi_uniqueid")
# technology/resource-suffix: PJSIP/carrier-0000002a, IAX2/peer-1234, DAHDI/i1/5551234-1, Local/7000@ctx-0000001f;1
_CHANNEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,15}/[\x21-\x7e]{1,100}-[0-9a-f]{1,8}(;[12])?\Z")


class AgiError(ProtocolError):
    """The AGI peer answered badly, too late, or not at all."""


class AgiHangup(AgiError):
    """The channel hung up or the connection closed."""


class _BadEnvironment(ProtocolError):
    pass


def quote_value(value: object, max_length: int = MAX_VALUE_LENGTH) -> str:
    """One AGI argument, double-quoted: printable ASCII only (no CR/LF: a newline would end the command and start
    another one), backslash and double quote escaped the way res_agi's argument parser undoes it."""
    text = _UNPRINTABLE.sub("", "" if value is None else str(value))[:max_length]
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_variable_name(name: str) -> str:
    if not _VAR_NAME.match(name):
        raise ValueError(f"invalid channel variable name {name[:40]!r}")
    return name


def agi_args(env: Mapping[str, str]) -> list[str]:
    """agi_arg_1 .. agi_arg_N, in order, up to the first missing one."""
    args: list[str] = []
    while (value := env.get(f"agi_arg_{len(args) + 1}")) is not None:
        args.append(value)
    return args


def is_channel_name(value: str) -> bool:
    """Whether `value` has the shape of an Asterisk channel name (technology/resource-uniquesuffix, printable ASCII)."""
    return bool(_CHANNEL_NAME.match(value))


def script_of(env: Mapping[str, str]) -> str | None:
    """The route: `agi_network_script` without its query string and outer slashes (`/a/verify?x=1` -> `a/verify`)."""
    script = env.get("agi_network_script")
    if script is None:
        return None
    return script.split("?", 1)[0].strip("/")


class AgiRequest(Request):  # type: ignore[misc]
    """panoramisk's Request with bounded commands: a timeout per command, `HANGUP` and multi-line 520 handled."""

    def __init__(self, *args: Any, timeout: float = COMMAND_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self.hung_up = False

    @property
    def env(self) -> dict[str, str]:
        return dict(self.headers)

    async def send_command(self, command: str) -> dict[str, Any]:
        """Send one command, return panoramisk's parsed result. AgiError/AgiHangup instead of hanging."""
        if "\n" in command or "\r" in command:
            raise ValueError("an AGI command is one line")
        try:
            async with asyncio.timeout(self.timeout):
                self.writer.write(command.encode("ascii") + b"\n")
                await self.writer.drain()
                while True:
                    line = await self._line()
                    if line == "HANGUP":  # asynchronous hangup notice; the answer follows
                        self.hung_up = True
                        continue
                    if line.startswith("100"):  # "100 Trying..."
                        continue
                    if line.startswith("520-"):  # usage text until "520 End of proper usage."
                        while not (await self._line()).startswith("520 "):
                            pass
                        return {"status_code": 520, "error": "AGIUsageError", "msg": line}
                    if not line[:3].isdigit():
                        raise AgiError("unexpected AGI answer")
                    result: dict[str, Any] = parse_agi_result(line)
                    return result
        except TimeoutError:
            raise AgiError(f"no AGI answer within {self.timeout:g}s") from None
        except (ConnectionError, ValueError) as exc:  # ValueError: line over the reader's limit
            raise AgiHangup(f"AGI connection: {exc}") from exc

    async def _line(self) -> str:
        raw = await self.reader.readline()
        if not raw.endswith(b"\n"):
            raise AgiHangup("AGI connection closed")
        return str(raw.decode("utf-8", "replace").rstrip("\r\n"))

    async def set_variable(self, name: str, value: object) -> bool:
        """`SET VARIABLE name "value"`; True when Asterisk answered `200 result=1`."""
        check_variable_name(name)
        result = await self.send_command(f"SET VARIABLE {name} {quote_value(value)}")
        return result.get("status_code") == 200 and result.get("result", ("",))[0] == "1"


class GuardedApplication(Application):  # type: ignore[misc]
    """panoramisk's Application with a handler that cannot spin, hang, or be flooded."""

    def __init__(
        self,
        *,
        env_timeout: float = ENV_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        command_timeout: float = COMMAND_TIMEOUT,
        max_env_lines: int = MAX_ENV_LINES,
        slots: PeerSlots | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(default_encoding="utf-8", loop=loop or asyncio.get_running_loop())
        self.env_timeout = env_timeout
        self.idle_timeout = idle_timeout
        self.command_timeout = command_timeout
        self.max_env_lines = max_env_lines
        self.slots = slots if slots is not None else PeerSlots()
        self.active: set[asyncio.Task[Any]] = set()
        self._waiting: dict[asyncio.Task[Any], Waiting] = {}  # connected, no complete AGI environment yet
        self._refused = 0
        self._refusal_logged = -REFUSAL_LOG_INTERVAL

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_address(writer.get_extra_info("peername"))
        refusal = self.slots.take(peer)
        if refusal is not None and peer is not None and self.slots.allowed(peer) and self._evict_for(peer):
            refusal = self.slots.take(peer)  # the slot the evicted connection held
        if refusal is not None or peer is None:  # not read from, holds no slot
            self._log_refusal(peer, refusal or "no peer address")
            writer.transport.abort()
            return
        task = asyncio.current_task()
        me = Waiting(time.monotonic(), peer, writer)
        try:
            if task is not None:
                self.active.add(task)
                self._waiting[task] = me
            await self._handle(reader, writer, peer)
        except Exception:
            log.exception("FastAGI handler failed")
        finally:
            if task is not None:
                self.active.discard(task)
                self._waiting.pop(task, None)
            if not me.evicted:
                self.slots.release(peer)
            await _close(writer)

    def _evict_for(self, peer: str) -> bool:
        """The slots are full: drop the connection `agi_access.oldest_silent` picks and give its slot back."""
        victim = oldest_silent(self._waiting.values(), peer, self.slots)
        if victim is None:
            return False
        victim.evicted = True
        self.slots.release(victim.peer)
        victim.writer.transport.abort()
        log.info("FastAGI: slots full; dropped a connection from %s that sent nothing for %.1fs", victim.peer,
                 time.monotonic() - victim.since)  # fmt: skip
        return True

    def _log_refusal(self, peer: str | None, reason: str) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged >= REFUSAL_LOG_INTERVAL:
            log.warning(
                "FastAGI: refused a connection from %s (%s); %d refused in the last %gs",
                peer or "an unknown peer",
                reason,
                self._refused,
                REFUSAL_LOG_INTERVAL,
            )
            self._refused, self._refusal_logged = 0, now

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        try:
            async with asyncio.timeout(self.env_timeout):
                env = await self._read_env(reader)
        except TimeoutError:
            log.info(
                "FastAGI: no complete AGI environment from %s within %gs (%gs per line); closing",
                peer,
                self.env_timeout,
                self.idle_timeout,
            )
            return
        except (_BadEnvironment, ValueError, ConnectionError) as exc:  # ValueError: line over the limit
            log.info("FastAGI: bad AGI environment from %s (%s); closing", peer, exc)
            return
        if env is None:
            log.debug("FastAGI: %s closed before sending an AGI environment", peer)
            return
        task = asyncio.current_task()
        if task is not None:
            self._waiting.pop(task, None)  # a whole environment: a call, never evicted
        env[PEER_KEY] = peer
        request = AgiRequest(
            app=self, headers=env, reader=reader, writer=writer, encoding="utf-8", timeout=self.command_timeout
        )
        script = script_of(env)
        route = self._route.get(script) if script is not None else None
        if route is None:
            log.warning("FastAGI: no route for script %r from %s", (script or "")[:40], peer)
            if any(k in env for k in _ASTERISK_KEYS):  # an Asterisk channel waits for a verdict: fail closed
                with contextlib.suppress(AgiError):
                    await request.set_variable(RESULT_VAR, "error")
            return
        try:
            await route(request)
        except AgiHangup as exc:
            log.info("FastAGI %s: peer gone (%s)", script, exc)
        except AgiError as exc:
            log.warning("FastAGI %s: %s", script, exc)

    async def _read_env(self, reader: asyncio.StreamReader) -> OrderedDict[str, str] | None:
        """The `agi_key: value` lines up to the blank line; None when the peer closed first."""
        env: OrderedDict[str, str] = OrderedDict()
        for _ in range(self.max_env_lines + 1):
            async with asyncio.timeout(self.idle_timeout):
                raw = await reader.readline()  # b'' at EOF: returned, never looped on
            if not raw.endswith(b"\n"):
                return None
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if not env:
                    raise _BadEnvironment("empty environment")
                return env
            key, sep, value = line.partition(":")
            if not sep or not _ENV_KEY.match(key):
                raise _BadEnvironment("not an AGI environment line")
            env.setdefault(key, value[1:] if value.startswith(" ") else value)
        raise _BadEnvironment(f"more than {self.max_env_lines} lines")


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close, and abort when the peer does not take the last bytes within a second."""
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            with contextlib.suppress(OSError):  # reset by the peer: nothing left to close
                await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()


class FastAgiServer:
    """The FastAGI listener. `verify` decides; this only speaks AGI.

    >>> server = FastAgiServer(verify)          # async def verify(env, args) -> {"SECURELINK_RESULT": ...}
    >>> await server.serve("127.0.0.1", 4573)   # port 0: any free port, see .port
    >>> await server.stop()
    """

    def __init__(
        self,
        verify: VerifyCallback,
        *,
        env_timeout: float = ENV_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        command_timeout: float = COMMAND_TIMEOUT,
        verify_timeout: float = VERIFY_TIMEOUT,
        max_line: int = MAX_LINE,
        max_env_lines: int = MAX_ENV_LINES,
        max_connections: int = MAX_CONNECTIONS,
        max_per_peer: int = MAX_PER_PEER,
        allow_from: Iterable[str] = DEFAULT_ALLOW_FROM,
        allow_remote: bool = False,
    ) -> None:
        """`allow_from`: the addresses / networks Asterisk connects from (ValueError when one is not);
        `allow_remote`: whether `serve` may listen on a non-loopback address (`agi_access.check_listen`)."""
        self.verify = verify
        self.env_timeout = env_timeout
        self.idle_timeout = idle_timeout
        self.command_timeout = command_timeout
        self.verify_timeout = verify_timeout
        self.max_line = max_line
        self.max_env_lines = max_env_lines
        self.allow_from = tuple(allow_from)
        self.allow_remote = allow_remote
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        parse_allow_from(self.allow_from)  # validated now, not at serve()
        self.app: GuardedApplication | None = None
        self.server: asyncio.Server | None = None
        self._routes: dict[str, Endpoint] = {VERIFY_ROUTE: self.verify_route}

    def add_route(self, path: str, endpoint: Endpoint) -> None:
        """Another script name (before serve()); `endpoint(request: AgiRequest)` is a coroutine function."""
        if path in self._routes:
            raise ValueError(f"route {path!r} exists")
        self._routes[path] = endpoint

    def add_variables_route(self, path: str, callback: VerifyCallback) -> None:
        """A route that works like `verify`: `callback(env, args) -> {variable: value}`, then `SET VARIABLE` each
        (bounded by `verify_timeout`; a failure or timeout sets `SECURELINK_RESULT=error`)."""

        async def endpoint(request: AgiRequest) -> None:
            await self._set_variables(request, callback, path)

        self.add_route(path, endpoint)

    @property
    def port(self) -> int:
        if self.server is None or not self.server.sockets:
            raise RuntimeError("not serving")
        return int(self.server.sockets[0].getsockname()[1])

    async def serve(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> asyncio.Server:
        if self.server is not None:
            raise RuntimeError("already serving")
        problem = check_listen(host, self.allow_remote)
        if problem is not None:
            raise ValueError(problem)
        app = GuardedApplication(
            env_timeout=self.env_timeout,
            idle_timeout=self.idle_timeout,
            command_timeout=self.command_timeout,
            max_env_lines=self.max_env_lines,
            slots=PeerSlots(self.allow_from, self.max_connections, self.max_per_peer),
        )
        for path, endpoint in self._routes.items():
            app.add_route(path, endpoint)
        self.server = await asyncio.start_server(app.handler, host, port, limit=self.max_line)
        self.app = app
        log.info("FastAGI listening on %s:%d (from %s)", host, self.port, ", ".join(self.allow_from))
        return self.server

    async def stop(self, grace: float = 2.0) -> None:
        """Stop listening; give calls in progress `grace` seconds, then cancel them."""
        server, self.server = self.server, None
        if server is None:
            return
        server.close()
        active = set(self.app.active) if self.app is not None else set()
        if active:
            _done, pending = await asyncio.wait(active, timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await server.wait_closed()

    async def __aenter__(self) -> FastAgiServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def verify_route(self, request: AgiRequest) -> None:
        """The `verify` endpoint: callback, then `SET VARIABLE` for each variable it returned."""
        await self._set_variables(request, self.verify, VERIFY_ROUTE)

    async def _set_variables(self, request: AgiRequest, callback: VerifyCallback, route: str) -> None:
        env = dict(request.headers)
        args = agi_args(env)
        variables: Mapping[str, str]
        try:
            async with asyncio.timeout(self.verify_timeout):
                variables = await callback(env, args)
            if not isinstance(variables, Mapping):
                raise TypeError(f"{route} returned {type(variables).__name__}, not a mapping")
        except TimeoutError:
            log.error("FastAGI %s: no decision within %gs; result=error", route, self.verify_timeout)
            variables = {RESULT_VAR: "error"}
        except Exception as exc:  # its text can hold the caller number, which can be a key
            log.error("FastAGI %s failed: %s; result=error", route, type(exc).__name__)
            log.debug("FastAGI %s traceback", route, exc_info=True)
            variables = {RESULT_VAR: "error"}
        for name, value in variables.items():
            try:
                check_variable_name(name)
            except ValueError as exc:
                log.error("FastAGI %s: %s; skipped", route, exc)
                continue
            if not await request.set_variable(name, value):
                log.warning("FastAGI %s: SET VARIABLE %s refused", route, name)
