"""The device API's routes and its listener (`docs/device-api.md`, "Routes"). A thin shell over the pure core.

`DeviceApi` holds the handlers: `POST /v1/enroll`, `GET /v1/device`, `PUT /v1/device/fork`, `POST /v1/calls/claim`,
`POST /v1/calls/intent` (`intent.py`), `POST /v1/calls/callback` (`callback.py`).
Authentication follows `signing` in the spec's order: parse -> signature -> clock -> nonce (stored only after the
signature verified); any failure is the same 401. A key_id a rotation retired is checked with its old secret and,
once signature, clock and nonce passed, answered 403 `rotated` on every route (the phone asks for a new activation
code instead of retrying). A revoked device that authenticated gets 403 `revoked` on every route but
`GET /v1/device`. `DeviceApiServer` serves it on one host:port, HTTPS when given an `ssl.SSLContext`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import ssl
from collections.abc import Callable, Sequence
from email.utils import formatdate
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from asterisk_securelink.core import b64
from asterisk_securelink.core.provisioning import DeviceParams, ProvisioningError, params_document, phone_speaks_1_2
from asterisk_securelink.core.slk1 import now_ms
from asterisk_securelink.deviceapi.callback import request_callback
from asterisk_securelink.deviceapi.codes import CodeError, code_hash
from asterisk_securelink.deviceapi.intent import create_intent
from asterisk_securelink.deviceapi.limits import (
    IPNetwork,
    RedeemLimiter,
    RedeemLimits,
    client_address,
    client_network,
    is_trusted,
    parse_trusted,
)
from asterisk_securelink.deviceapi.ports import (
    ACTOR,
    REVOKED,
    ROTATED,
    ApiEvent,
    Callbacks,
    ClaimOutcome,
    ClaimResult,
    DeviceDirectory,
    DeviceView,
)
from asterisk_securelink.deviceapi.settings import DeviceApiConfig, listen_address, problems, public_host
from asterisk_securelink.deviceapi.signing import SCHEME, Unauthorized, parse_authorization, verify
from asterisk_securelink.deviceapi.tls import server_context
from asterisk_securelink.deviceapi.transport import (
    HANDSHAKE_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_BODY,
    MAX_PER_ADDRESS,
    READ_TIMEOUT,
    AddressSlots,
    ApiError,
    Protocol,
    bad_request,
    json_answer,
    json_object,
    middleware,
    with_body,
)

log = logging.getLogger(__name__)

MAX_PRESENTED: Final = 32  # characters of a presented number
_IDEMPOTENCY_KEY: Final = re.compile(r"[\x21-\x7e]{1,128}")
_CALL_ID: Final = re.compile(r"[\x21-\x7e]{1,128}")  # our call ids are channel ids: visible ASCII


class DeviceApi:
    """The routes over a `DeviceDirectory` (and the Stasis app's `Callbacks`). `clock` is unix milliseconds."""

    def __init__(
        self,
        directory: DeviceDirectory,
        *,
        public_host: str,
        trusted_proxy: Sequence[IPNetwork] = (),
        limiter: RedeemLimits | None = None,
        clock: Callable[[], int] = now_ms,
        read_timeout: float = READ_TIMEOUT,
        callbacks: Callbacks | None = None,
    ) -> None:
        """`callbacks`: the Stasis app's callbacks (`calling.callback.CallbackCalls`); None (a node without the
        Stasis app, or before it started): `POST /v1/calls/callback` answers 503. It may be set later."""
        self.directory = directory
        self.callbacks = callbacks
        self.public_host = public_host
        self.trusted_proxy = tuple(trusted_proxy)
        self.limiter: RedeemLimits = limiter or RedeemLimiter()
        self.clock = clock
        self.read_timeout = read_timeout

    def app(self) -> web.Application:
        app = web.Application(middlewares=[middleware()], client_max_size=MAX_BODY)
        for method, path, handler in (
            ("POST", "/v1/enroll", self.enroll),
            ("GET", "/v1/device", self.device),
            ("PUT", "/v1/device/fork", self.fork),
            ("POST", "/v1/calls/claim", self.claim),
            ("POST", "/v1/calls/intent", self.intent),
            ("POST", "/v1/calls/callback", self.callback),
        ):
            app.router.add_route(method, path, with_body(handler, self.read_timeout))
        return app

    # -- routes ------------------------------------------------------------------------------------------------
    async def enroll(self, request: web.Request, body: bytes) -> web.Response:
        """The attempt is counted before the code is looked up, and given back when the code was good."""
        source = self._client(request)
        network = client_network(source)
        doc = json_object(body)
        code = doc.get("code")
        if not isinstance(code, str):
            raise bad_request("code must be a string")
        params = self._params(doc.get("v"))  # before the code is spent: a phone to upgrade keeps its code
        try:
            hashed: str | None = code_hash(code)
        except CodeError:
            hashed = None  # malformed: answered and counted like an unknown code
        if not await self.limiter.attempt(network):
            raise ApiError(429, "rate_limited", "too many failed activation codes; try again later")
        now = self.clock()
        result = None if hashed is None else await self.directory.redeem_code(hashed, now)
        if result is None:
            self.directory.audit(ApiEvent("device.enroll", "not_found", source=source))
            raise ApiError(404, "not_found", "unknown, used or expired activation code")
        await self.limiter.succeeded(network)
        self.directory.audit(ApiEvent("device.enroll", "ok", device_id=result.device_id, source=source))
        return json_answer(
            {
                "key_id": result.key_id,
                "secret": b64.encode(result.secret),
                "v": params.version,
                **params_document(params),
                "server_time_ms": now,
            }
        )

    async def device(self, request: web.Request, body: bytes) -> web.Response:
        """`?v=1.2`: the phone speaks 1.2 (as at enrollment), so it is told the 1.2 parameters it was given then."""
        view = await self._authenticate(request, body)
        versions = request.query.getall("v", [])
        if len(versions) > 1:
            raise bad_request("v must be given at most once")
        params = self._params(versions[0] if versions else None)
        return json_answer(
            {
                "key_id": view.key_id,
                "status": view.status,
                "fork": view.fork,
                **params_document(params),
                "server_time_ms": self.clock(),
            }
        )

    async def fork(self, request: web.Request, body: bytes) -> web.Response:
        view = _not_revoked(await self._authenticate(request, body))
        enabled = json_object(body).get("enabled")
        if not isinstance(enabled, bool):
            raise bad_request("enabled must be true or false")
        await self.directory.set_fork(view.device_id, enabled, ACTOR)
        return json_answer({"key_id": view.key_id, "fork": enabled})

    async def claim(self, request: web.Request, body: bytes) -> web.Response:
        """`{"presented"}` (the number the call showed or the key it sent) or `{"call_id"}` (a call the platform
        named to this phone: an intent's, a callback's), exactly one."""
        view = _not_revoked(await self._authenticate(request, body))
        doc = json_object(body)
        if ("presented" in doc) == ("call_id" in doc):
            raise bad_request("give exactly one of presented and call_id")
        key = _idempotency_key(request, view, body)
        if "call_id" in doc:
            call_id = doc["call_id"]
            if not isinstance(call_id, str) or not _CALL_ID.fullmatch(call_id):
                raise bad_request("call_id must be 1 to 128 visible ASCII characters")
            result = await self.directory.claim_by_call_id(view.device_id, call_id, self.clock(), key)
            return self._claimed(request, view, result, "no live call of this device has that call_id", "call_id")
        presented = doc["presented"]
        if not isinstance(presented, str) or not 0 < len(presented) <= MAX_PRESENTED or not presented.isprintable():
            raise bad_request(f"presented must be a number of at most {MAX_PRESENTED} characters")
        result = await self.directory.claim(view.device_id, presented, self.clock(), key)
        return self._claimed(request, view, result, "no live call of this device presented that number")

    def _claimed(
        self, request: web.Request, view: DeviceView, result: ClaimResult, not_found: str, by: str = "presented"
    ) -> web.Response:
        """A claim's answer, audited (`voucher.claim`, with its reason and what it claimed by; a second claim of a
        released voucher is an alert)."""
        detail = {"reason": result.reason} if result.reason else {}
        if by != "presented":
            detail["by"] = by
        if result.outcome is ClaimOutcome.ALREADY_CLAIMED:
            detail["alert"] = "second claim of a released voucher: the device secret may be cloned"
            log.warning("device api: device %s claimed a released voucher again (cloned secret?)", view.device_id)
        self.directory.audit(
            ApiEvent(
                "voucher.claim",
                result.outcome.value,
                device_id=view.device_id,
                call_id=result.call_id,
                source=self._client(request),
                detail=detail,
            )
        )
        if result.outcome is ClaimOutcome.ALREADY_CLAIMED:
            raise ApiError(409, "already_claimed", "this call's key was already released")
        if result.outcome is ClaimOutcome.NOT_FOUND:
            raise ApiError(404, "not_found", not_found)
        if result.call_key is None or result.call_id is None or result.call_key_id is None:
            raise RuntimeError("a released voucher without its key")
        return json_answer(
            {"call_id": result.call_id, "call_key_id": result.call_key_id, "call_key": b64.encode(result.call_key)}
        )

    async def intent(self, request: web.Request, body: bytes) -> web.Response:
        view = await self._authenticate(request, body)
        doc = json_object(body)
        key = _idempotency_key(request, view, body)
        answer = await create_intent(self.directory, view, doc, key, self.clock(), self._client(request))
        return json_answer(answer, 201)

    async def callback(self, request: web.Request, body: bytes) -> web.Response:
        view = await self._authenticate(request, body)
        doc = json_object(body)
        answer = await request_callback(self.directory, self.callbacks, view, doc, self.clock(), self._client(request))
        return json_answer(answer, 202)

    # -- helpers -----------------------------------------------------------------------------------------------
    def _params(self, v: object) -> DeviceParams:
        """What the platform provisions for a phone that speaks `v`: 400 for a `v` that is not a version, 409
        `upgrade_required` when it offers nothing such a phone speaks."""
        try:
            speaks_1_2 = phone_speaks_1_2(v)
        except ProvisioningError as exc:
            raise bad_request(str(exc)) from None
        params = self.directory.offer.for_phone(speaks_1_2)
        if params is None:
            raise ApiError(409, "upgrade_required", "this platform needs a phone that speaks SLK1 1.2")
        return params

    def _client(self, request: web.Request) -> str:
        return client_address(request.remote, request.headers.getall("X-Forwarded-For", []), self.trusted_proxy)

    async def _authenticate(self, request: web.Request, body: bytes) -> DeviceView:
        """parse -> signature -> clock -> nonce; any failure is the same 401."""
        try:
            values = request.headers.getall("Authorization", [])
            if len(values) != 1:
                raise Unauthorized("not exactly one Authorization header")
            auth = parse_authorization(values[0])
            secret = self.directory.secret_of(auth.key_id)
            view = await self.directory.by_key_id(auth.key_id)
            retired = view is None and await self.directory.retired(auth.key_id)
            expires = verify(
                auth,
                secret if view is not None or retired else None,
                method=request.method,
                host=self.public_host,
                target=request.raw_path,
                body=body,
                now=self.clock() // 1000,
            )
            if not await self.directory.nonce_insert_if_absent(auth.key_id, auth.nonce, expires):
                raise Unauthorized("nonce replayed")
        except Unauthorized as exc:
            log.debug("device api: %s %s unauthorized: %s", request.method, request.path, exc)
            # Date: the clock TS was judged by, for the phone's one clock check (an error has no server_time_ms)
            date = formatdate(self.clock() // 1000, usegmt=True)
            raise ApiError(401, "unauthorized", "authentication failed",
                           headers={"WWW-Authenticate": SCHEME, "Date": date}) from None  # fmt: skip
        if view is None:  # verify() passed without a device: the key_id was retired by a rotation
            log.info("device api: a request signed with key_id %s, which a rotation retired: 403 rotated", auth.key_id)
            raise ApiError(403, ROTATED, "this device's key was rotated: ask for a new activation code")
        return view


def _idempotency_key(request: web.Request, view: DeviceView, body: bytes) -> str | None:
    """The `Idempotency-Key` bound to what the signature covers (L5, issue 22): the header is not signed, so what
    the store keeps and compares is SHA-256 over (key_id, method, request-target, body, header). A repeat replays the
    first answer only when all five are the same: another route, another body or another key_id with the same header
    is a new request (and a released voucher's second claim: 409)."""
    keys = request.headers.getall("Idempotency-Key", [])
    if len(keys) > 1 or (keys and not _IDEMPOTENCY_KEY.fullmatch(keys[0])):
        raise bad_request("Idempotency-Key must be one header of 1..128 visible ASCII characters")
    if not keys:
        return None
    bound = hashlib.sha256()
    for part in (view.key_id.encode(), request.method.encode(), request.raw_path.encode(), body, keys[0].encode()):
        bound.update(len(part).to_bytes(8, "big") + part)  # length-prefixed: no two tuples give the same bytes
    return bound.hexdigest()


def _not_revoked(view: DeviceView) -> DeviceView:
    if view.status == REVOKED:
        raise ApiError(403, "revoked", "this device is revoked")
    return view


class DeviceApiServer:
    """Serves a `DeviceApi` on host:port; HTTPS with `ssl_context` (see `tls.server_context`). The TLS handshake
    must finish within `handshake_timeout` (10 s) of the connection; the whole request (line, headers, body) within
    the API's `read_timeout` (10 s) after the handshake, or after the first byte of the next request on a kept-alive
    connection, which may wait `idle_timeout` (30 s) for it (`transport.Protocol`); at most `max_per_address`
    connections per client address."""

    def __init__(
        self,
        api: DeviceApi,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
        *,
        max_per_address: int = MAX_PER_ADDRESS,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        """`max_per_address`: connections served at once from one client address (a trusted proxy's are not
        counted: it carries many clients)."""
        self.api = api
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        trusted = api.trusted_proxy
        self.slots = AddressSlots(max_per_address, lambda address: is_trusted(address, trusted))
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.bound_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        timeout = self.api.read_timeout
        # keepalive_timeout: aiohttp's own timer, a backstop beyond Protocol's (which close first); auto_decompress
        # off: an encoded body is refused (415), never inflated
        backstop = timeout + self.idle_timeout + 1
        options: dict[str, Any] = {"keepalive_timeout": backstop, "auto_decompress": False, "max_headers": 64}
        self._runner = web.AppRunner(self.api.app(), access_log=None, **options)
        await self._runner.setup()
        server = self._runner.server
        assert server is not None  # set by setup()
        loop = asyncio.get_running_loop()
        limits = {"request_timeout": timeout, "idle_timeout": self.idle_timeout}
        self._server = await loop.create_server(
            lambda: Protocol(server, loop=loop, access_log=None, slots=self.slots, **limits, **options),
            self.host,
            self.port,
            ssl=self.ssl_context,
            ssl_handshake_timeout=self.handshake_timeout if self.ssl_context is not None else None,
        )
        self.bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self.port
        scheme = "https" if self.ssl_context is not None else "http"
        log.info("device api on %s://%s:%s (public host %s)", scheme, self.host, self.bound_port, self.api.public_host)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._server is not None:
            await self._server.wait_closed()


def server_from_config(
    cfg: DeviceApiConfig,
    directory: DeviceDirectory,
    path: Callable[[str], Path] = Path,
    *,
    callbacks: Callbacks | None = None,
    limiter: RedeemLimits | None = None,
) -> DeviceApiServer:
    """The listener `[device_api]` describes (`path` resolves the certificate paths, e.g. `Config.path`), with the
    Stasis app's `callbacks` when this node runs it (else, or until `api.callbacks` is set, 503), counting
    enrollment attempts in `limiter` (the shared store's `store.enroll_limits.EnrollLimits`). Raises
    ValueError with one line (`device_api.<key>: ...`) when the settings are wrong or the certificate cannot load;
    a non-loopback address without TLS is refused here."""
    found = problems(cfg)
    if not cfg.enabled:
        found.insert(0, "device_api.listen: not set (the device API is off)")
    if found:
        raise ValueError(found[0])
    host, port = listen_address(cfg)
    context = server_context(path(cfg.tls_cert), path(cfg.tls_key)) if cfg.tls_configured else None
    api = DeviceApi(directory, public_host=public_host(cfg), trusted_proxy=parse_trusted(cfg.trusted_proxy),
                    callbacks=callbacks, limiter=limiter)  # fmt: skip
    return DeviceApiServer(api, host, port, context)
