"""FastAGI server (`securelink agi`): panoramisk's `Application` with its connection handler replaced.

panoramisk 1.4's `Application.handler` reads the AGI environment with `while b'\\n\\n' not in buffer: buffer +=
await reader.read(100)`. At EOF `read()` returns b'' at once without yielding, so a peer that connects and closes
before sending the environment (a port scan does it) pins the event loop at 100% CPU forever: every call in the
process stops. It also has no read timeout, no size limit, and `Request.send_command` reads results unbounded.

Here the environment is read line by line (EOF ends it), with one deadline for the whole environment
(`env_timeout`), a line-length and a line-count limit; anything that is not `agi_*: value` closes the connection.
Every AGI command is bounded by `command_timeout`, the verify callback by `verify_timeout`. Whatever happens,
the connection is closed and the server keeps serving.

Routes: `verify` runs the injected callback `verify(env, args) -> {variable: value}` and sends
`SET VARIABLE name "value"` for each; an unknown script from an Asterisk channel sets `SECURELINK_RESULT=error`
(the dialplan then rejects: fail closed). The AGI environment holds the presented number, so it is never logged,
nor is the text of the callback's exception (only its type; the traceback at DEBUG).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from panoramisk.fast_agi import Application, Request
from panoramisk.utils import parse_agi_result

from asterisk_securelink.dialplan import RESULT_VAR

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4573
ENV_TIMEOUT = 5.0  # seconds for the whole AGI environment
COMMAND_TIMEOUT = 5.0  # seconds per AGI command (write + answer)
VERIFY_TIMEOUT = 10.0  # seconds for the verify callback
MAX_LINE = 4096  # bytes per line from the peer
MAX_ENV_LINES = 256  # Asterisk sends ~25 + one per argument
MAX_CONNECTIONS = 256  # concurrent; more are closed at once
MAX_VALUE_LENGTH = 1024  # characters of a SET VARIABLE value
VERIFY_ROUTE = "verify"

VerifyCallback = Callable[[dict[str, str], list[str]], Awaitable[Mapping[str, str]]]
Endpoint = Callable[["AgiRequest"], Awaitable[None]]

_ENV_KEY = re.compile(r"agi_[a-z0-9_]{1,64}\Z")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,79}\Z")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_ASTERISK_KEYS = ("agi_network", "agi_request", "agi_channel", "agi_uniqueid")


class AgiError(Exception):
    """The AGI peer answered badly, too late, or not at all."""


class AgiHangup(AgiError):
    """The channel hung up or the connection closed."""


class _BadEnvironment(Exception):
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
        command_timeout: float = COMMAND_TIMEOUT,
        max_env_lines: int = MAX_ENV_LINES,
        max_connections: int = MAX_CONNECTIONS,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(default_encoding="utf-8", loop=loop or asyncio.get_running_loop())
        self.env_timeout = env_timeout
        self.command_timeout = command_timeout
        self.max_env_lines = max_env_lines
        self.max_connections = max_connections
        self.active: set[asyncio.Task[Any]] = set()

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        try:
            if len(self.active) >= self.max_connections:
                log.warning("FastAGI: %d connections open, refusing another", len(self.active))
                return
            if task is not None:
                self.active.add(task)
            await self._handle(reader, writer)
        except Exception:
            log.exception("FastAGI handler failed")
        finally:
            if task is not None:
                self.active.discard(task)
            await _close(writer)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            async with asyncio.timeout(self.env_timeout):
                env = await self._read_env(reader)
        except TimeoutError:
            log.info("FastAGI: no complete AGI environment from %r within %gs; closing", peer, self.env_timeout)
            return
        except (_BadEnvironment, ValueError, ConnectionError) as exc:  # ValueError: line over the limit
            log.info("FastAGI: bad AGI environment from %r (%s); closing", peer, exc)
            return
        if env is None:
            log.debug("FastAGI: %r closed before sending an AGI environment", peer)
            return
        request = AgiRequest(
            app=self, headers=env, reader=reader, writer=writer, encoding="utf-8", timeout=self.command_timeout
        )
        script = script_of(env)
        route = self._route.get(script) if script is not None else None
        if route is None:
            log.warning("FastAGI: no route for script %r from %r", (script or "")[:40], peer)
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
        command_timeout: float = COMMAND_TIMEOUT,
        verify_timeout: float = VERIFY_TIMEOUT,
        max_line: int = MAX_LINE,
        max_env_lines: int = MAX_ENV_LINES,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.verify = verify
        self.env_timeout = env_timeout
        self.command_timeout = command_timeout
        self.verify_timeout = verify_timeout
        self.max_line = max_line
        self.max_env_lines = max_env_lines
        self.max_connections = max_connections
        self.app: GuardedApplication | None = None
        self.server: asyncio.Server | None = None
        self._routes: dict[str, Endpoint] = {VERIFY_ROUTE: self.verify_route}

    def add_route(self, path: str, endpoint: Endpoint) -> None:
        """Another script name (before serve()); `endpoint(request: AgiRequest)` is a coroutine function."""
        if path in self._routes:
            raise ValueError(f"route {path!r} exists")
        self._routes[path] = endpoint

    @property
    def port(self) -> int:
        if self.server is None or not self.server.sockets:
            raise RuntimeError("not serving")
        return int(self.server.sockets[0].getsockname()[1])

    async def serve(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> asyncio.Server:
        if self.server is not None:
            raise RuntimeError("already serving")
        app = GuardedApplication(
            env_timeout=self.env_timeout,
            command_timeout=self.command_timeout,
            max_env_lines=self.max_env_lines,
            max_connections=self.max_connections,
        )
        for path, endpoint in self._routes.items():
            app.add_route(path, endpoint)
        self.server = await asyncio.start_server(app.handler, host, port, limit=self.max_line)
        self.app = app
        log.info("FastAGI listening on %s:%d", host, self.port)
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
        env = dict(request.headers)
        args = agi_args(env)
        variables: Mapping[str, str]
        try:
            async with asyncio.timeout(self.verify_timeout):
                variables = await self.verify(env, args)
            if not isinstance(variables, Mapping):
                raise TypeError(f"verify returned {type(variables).__name__}, not a mapping")
        except TimeoutError:
            log.error("FastAGI verify: no decision within %gs; result=error", self.verify_timeout)
            variables = {RESULT_VAR: "error"}
        except Exception as exc:  # its text can hold the caller number, which can be a key
            log.error("FastAGI verify failed: %s; result=error", type(exc).__name__)
            log.debug("FastAGI verify traceback", exc_info=True)
            variables = {RESULT_VAR: "error"}
        for name, value in variables.items():
            try:
                check_variable_name(name)
            except ValueError as exc:
                log.error("FastAGI verify: %s; skipped", exc)
                continue
            if not await request.set_variable(name, value):
                log.warning("FastAGI verify: SET VARIABLE %s refused", name)
