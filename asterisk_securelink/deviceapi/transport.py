"""The HTTP rules every device API answer follows (`docs/device-api.md`, "Transport"): the aiohttp middleware.

Per request, in this order: the request-target (400 `bad_request` unless origin-form visible ASCII without `%`, `//`,
`..`), the route (404 `not_found` for an unknown path, 405 `method_not_allowed` with `Allow` for a known path with
another method), `Content-Encoding` (415 `unsupported` unless identity), then the route's handler, which `with_body`
gives the body (413 `too_large` over 16 KiB). Time limits (`Protocol`): the TLS handshake within 10 s of the
connection (`DeviceApiServer`); the request line, headers and body together within 10 s after the handshake, or
after the first byte of the next request on a kept-alive connection (else 408 `timeout` and the connection closed);
a kept-alive connection idle for 30 s is closed. At most `MAX_PER_ADDRESS` connections from one address are served
at once (`AddressSlots`). Every answer carries `Cache-Control: no-store`; every error is `{"error", "message"}`; an
unexpected exception is logged here and answered 500 `internal`, never with a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from asterisk_securelink.core.ascii import ascii_lower
from asterisk_securelink.deviceapi.signing import BadTarget, check_target
from asterisk_securelink.errors import ProtocolError

if TYPE_CHECKING:
    from aiohttp.typedefs import Middleware

log = logging.getLogger(__name__)

MAX_BODY: Final = 16 * 1024
READ_TIMEOUT: Final = 10.0  # seconds for the whole request (line, headers, body): a client slower than that is cut
HANDSHAKE_TIMEOUT: Final = 10.0  # seconds from the connection to the end of the TLS handshake
IDLE_TIMEOUT: Final = 30.0  # seconds a kept-alive connection may wait, silent, for its next request
MAX_PER_ADDRESS: Final = 64  # connections at once from one client address (a trusted proxy is not counted)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BodyHandler = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


class ApiError(ProtocolError):
    """An answer with one of the spec's error codes. `message` is one line shown to the client."""

    def __init__(
        self, status: int, code: str, message: str, *, close: bool = False, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.close = close  # the rest of the request was not read: close the connection after answering
        self.headers = dict(headers or {})


class SlowClient(ProtocolError):
    """The request was not received within READ_TIMEOUT."""


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def json_answer(doc: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.json_response(dict(doc), status=status, dumps=lambda d: json.dumps(d, separators=(",", ":")))


def error_answer(err: ApiError) -> web.Response:
    resp = json_answer({"error": err.code, "message": err.message}, err.status)
    resp.headers.update(err.headers)
    if err.close:
        resp.force_close()
    return resp


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object (UTF-8). Raises ApiError 400."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad_request("the body is not JSON") from None
    if not isinstance(doc, dict):
        raise bad_request("the body must be a JSON object")
    return doc


async def read_body(request: web.Request, limit: int = MAX_BODY, timeout: float = READ_TIMEOUT) -> bytes:  # noqa: ASYNC109
    """At most `limit` bytes of body within `timeout` seconds. Raises ApiError 413 or SlowClient."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise ApiError(413, "too_large", f"the body must be at most {limit} bytes", close=True)
    buf = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.read(limit + 1 - len(buf)):
                buf += chunk
                if len(buf) > limit:
                    raise ApiError(413, "too_large", f"the body must be at most {limit} bytes", close=True)
    except TimeoutError:
        raise SlowClient from None
    return bytes(buf)


def _encoding_ok(request: web.Request) -> bool:
    """Identity only: the coding names compare ASCII case-insensitively, around them only spaces and tabs (OWS)."""
    values = request.headers.getall("Content-Encoding", [])
    return all(ascii_lower(v.strip(" \t")) in ("", "identity") for value in values for v in value.split(","))


def with_body(handler: BodyHandler, read_timeout: float = READ_TIMEOUT) -> Handler:
    """A route handler that gets the raw body (b"" when there is none), read within what is left of the request's
    time (`Protocol.deadline`)."""

    async def route(request: web.Request) -> web.StreamResponse:
        ours = _ours(request)
        loop = asyncio.get_running_loop()
        left = read_timeout if ours is None or ours.deadline is None else max(0.0, ours.deadline - loop.time())
        body = await read_body(request, timeout=left)  # the body: what the headers left
        if ours is not None:
            ours.received()
        return await handler(request, body)

    return route


def _ours(request: web.Request) -> Protocol | None:
    protocol = request.protocol
    return protocol if isinstance(protocol, Protocol) else None


def middleware() -> Middleware:
    """The middleware that applies the transport rules around every route's handler (`with_body` reads the body)."""

    @web.middleware
    async def transport(request: web.Request, handler: Handler) -> web.StreamResponse:
        ours = _ours(request)
        if ours is not None:
            ours.headers_received()
        try:
            response = await _checked(request, handler)
        except ApiError as err:
            response = error_answer(err)
        except SlowClient:
            log.info("device api: cut a client that did not send its request in time")
            return await _timed_out(request)
        except asyncio.CancelledError:
            raise
        except Exception:  # the client gets a one-line 500, the log gets the traceback
            log.exception("device api: %s %s failed", request.method, request.path)
            response = error_answer(ApiError(500, "internal", "internal error", close=True))
        finally:
            if ours is not None:
                ours.answered()
        response.headers["Cache-Control"] = "no-store"
        return response

    return transport


async def _timed_out(request: web.Request) -> web.StreamResponse:
    """408 `timeout`, sent now, then the connection closed: the rest of the body is not waited for."""
    response = error_answer(ApiError(408, "timeout", "request not received in time", close=True))
    response.headers["Cache-Control"] = "no-store"
    try:
        await response.prepare(request)
        await response.write_eof()
    finally:
        ours = _ours(request)
        if ours is not None:
            ours.force_close()  # closes the transport once the answer is flushed; no lingering read of the body
        elif request.transport is not None:
            request.transport.close()
    return response


def _raw_answer(status: str, doc: Mapping[str, str]) -> bytes:
    """A whole HTTP/1.1 answer as bytes, for a connection that has no request object to answer (headers unfinished)."""
    body = json.dumps(dict(doc), separators=(",", ":")).encode("utf-8")
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n")  # fmt: skip
    return head.encode("ascii") + body


_TIMEOUT_ANSWER: Final = _raw_answer(
    "408 Request Timeout", {"error": "timeout", "message": "request not received in time"}
)


class AddressSlots:
    """How many connections each client address has open; `exempt`: addresses never counted (trusted proxies)."""

    def __init__(self, limit: int = MAX_PER_ADDRESS, exempt: Callable[[str], bool] = lambda address: False) -> None:
        if limit < 1:
            raise ValueError("the per-address connection limit must be positive")
        self.limit = limit
        self.exempt = exempt
        self.open: dict[str, int] = {}

    def take(self, address: str) -> bool:
        """One more connection from `address`; False (nothing counted) when it already has `limit` open."""
        if self.exempt(address):
            return True
        n = self.open.get(address, 0)
        if n >= self.limit:
            return False
        self.open[address] = n + 1
        return True

    def give(self, address: str) -> None:
        if self.exempt(address):
            return
        n = self.open.get(address, 0) - 1
        if n > 0:
            self.open[address] = n
        else:
            self.open.pop(address, None)


_READING, _HANDLING, _IDLE = "reading", "handling", "idle"  # what a connection is doing (`Protocol.phase`)


class Protocol(web.RequestHandler):
    """aiohttp's per-connection handler with the API's time limits, answering a request it cannot even parse (bad
    request line, bad header, line too long) the API's way: JSON, `no-store`, connection closed, logged at debug only
    (it is client noise).

    A connection is `reading` a request from when it is made (after TLS: asyncio calls `connection_made` once the
    handshake is done), or from the first byte after an answer, until `with_body` has its body: that must take at most
    `request_timeout` (`deadline`); if the headers are not in by then, 408 is sent here and the connection closed
    (`with_body` answers 408 for a body still missing). Then `handling` until the answer; then `idle`, closed when
    no byte comes for `idle_timeout`. (The spec's "within 10 s after the previous answer" and "an idle kept-alive
    connection is closed after 30 s" cannot both hold; the 10 s run from the next request's first byte.) aiohttp's own
    keep-alive timer (`keepalive_timeout`) is set beyond both, as a backstop. With `slots`, a connection over its
    address's limit is closed at once."""

    def __init__(
        self,
        *args: Any,
        slots: AddressSlots | None = None,
        request_timeout: float = READ_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.slots = slots
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.phase = _READING
        self.deadline: float | None = None  # loop time by which the request being read must be whole
        self._timer: asyncio.TimerHandle | None = None
        self._next_started = False  # bytes of the next request came while this one was handled (pipelining)
        self._slot: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._reading()
        super().connection_made(transport)
        if self.slots is None:
            return
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if self.slots.take(address):
            self._slot = address
        else:
            log.info("device api: refused a connection from %s (%d open already)", address, self.slots.limit)
            self._cancel_timer()
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timer()
        if self._slot is not None and self.slots is not None:
            self.slots.give(self._slot)
            self._slot = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self.phase == _IDLE:
            self._reading()
        elif data and self.phase == _HANDLING:
            self._next_started = True
        super().data_received(data)

    # -- what the middleware and `with_body` tell ----------------------------------------------------------------
    def headers_received(self) -> None:
        """A request's headers are in: the body (if any) is `with_body`'s to time, by `deadline`."""
        self._cancel_timer()

    def received(self) -> None:
        """The whole request is in: no time limit while it is handled."""
        self.phase = _HANDLING
        self.deadline = None
        self._cancel_timer()

    def answered(self) -> None:
        """The answer is made: the connection waits for the next request (or reads it, if it began already)."""
        self._cancel_timer()
        if self.transport is None:
            return
        if self._next_started:
            self._next_started = False
            self._reading()
            return
        self.phase = _IDLE
        self.deadline = None
        self._timer = asyncio.get_running_loop().call_later(self.idle_timeout, self._idle_too_long)

    # -- timers --------------------------------------------------------------------------------------------------
    def _reading(self) -> None:
        self._cancel_timer()
        loop = asyncio.get_running_loop()
        self.phase = _READING
        self.deadline = loop.time() + self.request_timeout
        self._timer = loop.call_at(self.deadline, self._request_too_slow)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _request_too_slow(self) -> None:
        """The request line and headers did not come in time: 408, and the connection closed."""
        self._timer = None
        if self.phase != _READING or self.transport is None:
            return
        log.info("device api: cut a client that did not send its request in time")
        self.transport.write(_TIMEOUT_ANSWER)
        self.force_close()  # the transport sends what it holds, then closes

    def _idle_too_long(self) -> None:
        self._timer = None
        if self.phase == _IDLE:
            self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        log.debug("device api: unparseable request from %s (%s)", request.remote, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer was partly sent already")
        code, text = ("bad_request", "malformed HTTP request") if status < 500 else ("internal", "internal error")
        response = error_answer(ApiError(status, code, text, close=True))
        response.headers["Cache-Control"] = "no-store"
        return response


async def _checked(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        check_target(request.raw_path)
    except BadTarget as exc:
        raise ApiError(400, "bad_request", str(exc), close=True) from None
    refused = getattr(request.match_info, "http_exception", None)
    if isinstance(refused, web.HTTPMethodNotAllowed):
        allow = ", ".join(sorted(refused.allowed_methods))
        raise ApiError(405, "method_not_allowed", f"this path takes {allow}", close=True, headers={"Allow": allow})
    if refused is not None:
        raise ApiError(404, "not_found", "no such route", close=True)
    if not _encoding_ok(request):
        raise ApiError(415, "unsupported", "Content-Encoding must be identity", close=True)
    try:
        return await handler(request)
    except web.HTTPException as exc:  # aiohttp's own (should not happen: handlers raise ApiError)
        raise ApiError(exc.status, "bad_request" if exc.status < 500 else "internal", "request refused") from None
