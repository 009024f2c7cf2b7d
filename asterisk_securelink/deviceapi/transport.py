"""The HTTP rules every device API answer follows (`docs/device-api.md`, "Transport"): the aiohttp middleware.

Per request, in this order: the request-target (400 `bad_request` for `%`, `//`, `..`), the route (404
`not_found`), `Content-Encoding` (415 `unsupported` unless identity), then the route's handler, which `with_body`
gives the body (413 `too_large` over 16 KiB). The request line, headers and body together must arrive within 10 s
of the connection (after TLS) or of the previous answer (`Protocol.deadline`), else the connection is cut; at most
`MAX_PER_ADDRESS` connections from one address are served at once (`AddressSlots`). Every answer carries
`Cache-Control: no-store`; every error is `{"error", "message"}`; an unexpected exception is logged here and
answered 500 `internal`, never with a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from asterisk_securelink.deviceapi.signing import BadTarget, check_target
from asterisk_securelink.errors import ProtocolError

if TYPE_CHECKING:
    from aiohttp.typedefs import Middleware

log = logging.getLogger(__name__)

MAX_BODY: Final = 16 * 1024
READ_TIMEOUT: Final = 10.0  # seconds: a client that has not sent its request by then is cut
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
    values = request.headers.getall("Content-Encoding", [])
    return all(v.strip().lower() in ("", "identity") for value in values for v in value.split(","))


def with_body(handler: BodyHandler, read_timeout: float = READ_TIMEOUT) -> Handler:
    """A route handler that gets the raw body (b"" when there is none), read within the limits."""

    async def route(request: web.Request) -> web.StreamResponse:
        protocol = request.protocol
        ours = protocol if isinstance(protocol, Protocol) and protocol.deadline is not None else None
        loop = asyncio.get_running_loop()
        left = read_timeout if ours is None or ours.deadline is None else max(0.0, ours.deadline - loop.time())
        try:
            return await handler(request, await read_body(request, timeout=left))  # the body: what the headers left
        finally:
            if ours is not None:  # the next request on this connection: its own time from this answer
                ours.deadline = loop.time() + read_timeout

    return route


def middleware() -> Middleware:
    """The middleware that applies the transport rules around every route's handler (`with_body` reads the body)."""

    @web.middleware
    async def transport(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await _checked(request, handler)
        except ApiError as err:
            response = error_answer(err)
        except SlowClient:
            log.info("device api: cut a client that did not send its request in time")
            if request.transport is not None:
                request.transport.close()
            response = error_answer(ApiError(408, "timeout", "request not received in time", close=True))
        except asyncio.CancelledError:
            raise
        except Exception:  # the client gets a one-line 500, the log gets the traceback
            log.exception("device api: %s %s failed", request.method, request.path)
            response = error_answer(ApiError(500, "internal", "internal error", close=True))
        response.headers["Cache-Control"] = "no-store"
        return response

    return transport


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


class Protocol(web.RequestHandler):
    """aiohttp's per-connection handler, answering a request it cannot even parse (bad request line, bad header,
    line too long) the API's way: JSON, `no-store`, connection closed, logged at debug only (it is client noise).

    `deadline` (loop time): when the current request must have arrived whole, `keepalive_timeout` after the
    connection was made (after TLS) and again after each answer (`with_body`); aiohttp's keep-alive timer cuts a
    connection whose headers are not in by then, `with_body` gives the body only what is left. With `slots`, a
    connection over its address's limit is closed at once."""

    def __init__(self, *args: Any, slots: AddressSlots | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots = slots
        self.deadline: float | None = None
        self._slot: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.deadline = asyncio.get_running_loop().time() + self.keepalive_timeout
        super().connection_made(transport)
        if self.slots is None:
            return
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if self.slots.take(address):
            self._slot = address
        else:
            log.info("device api: refused a connection from %s (%d open already)", address, self.slots.limit)
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._slot is not None and self.slots is not None:
            self.slots.give(self._slot)
            self._slot = None
        super().connection_lost(exc)

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
    if getattr(request.match_info, "http_exception", None) is not None:
        raise ApiError(404, "not_found", "no such route", close=True)
    if not _encoding_ok(request):
        raise ApiError(415, "unsupported", "Content-Encoding must be identity", close=True)
    try:
        return await handler(request)
    except web.HTTPException as exc:  # aiohttp's own (should not happen: handlers raise ApiError)
        raise ApiError(exc.status, "bad_request" if exc.status < 500 else "internal", "request refused") from None
