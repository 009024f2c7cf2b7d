"""The phone's side of the device API (`docs/device-api.md`): a small asyncio client over aiohttp.

    async with DeviceApiClient("https://pbx.example.com:8443", ca_file=None) as api:
        enrolled = await api.enroll("ABCD-EFGH-IJKL-MNOP")            # unsigned; the secret comes back once
        api.credentials = Credentials(enrolled.provisioning.key_id, enrolled.provisioning.secret)
        status = await api.device()                                   # GET /v1/device
        await api.set_fork(False)                                     # PUT /v1/device/fork
        voucher = await api.claim("+12677638475")                     # POST /v1/calls/claim
        intent = await api.intent("2001")                             # POST /v1/calls/intent
        call_id = await api.callback("2001")                          # POST /v1/calls/callback
        voucher = await api.claim_call(call_id)                       # POST /v1/calls/claim {"call_id"}

Every request but enrollment is signed as the spec says (`deviceapi.signing`), with the request-target exactly as
sent, the `public_host` the phone was given (the server URL's host[:port]), a fresh nonce and the platform's time as
far as the client knows it (`offset_ms`, learned from every `server_time_ms`). A claim carries an `Idempotency-Key`;
when its answer is lost (no answer, a 5xx) it is sent again with the same key (fresh nonce and signature), so the
phone gets the same voucher. A 401 is never retried: the answer's `Date` tells once whether the clock is the cause
(`AuthenticationFailed.clock_skew_ms`), and the user is told; a 403 `rotated` (`DeviceRotated`) means: ask for a new
activation code. TLS is verified against the system's CAs, or only `ca_file` when given; plain HTTP is allowed to a
loopback address only. The spec's error codes become the exceptions of `api_errors` (re-exported here); no message
holds a secret, a code or a call key.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from asterisk_securelink.core import b64
from asterisk_securelink.core.numbers import safe_display
from asterisk_securelink.core.provisioning import (
    ACCESS_MODES,
    VERSION,
    VERSION_1_2,
    DeviceParams,
    Provisioning,
    ProvisioningError,
)
from asterisk_securelink.core.slk1 import now_ms
from asterisk_securelink.device.api_errors import (
    AlreadyClaimed,
    AuthenticationFailed,
    CallRefused,
    DeviceApiError,
    DeviceRevoked,
    DeviceRotated,
    NotFound,
    RateLimited,
    Refused,
    RequestRejected,
    ServerError,
    TlsFailed,
    Unreachable,
    UpgradeRequired,
    UseDtmf,
    answer,
    retry_after_s,
)
from asterisk_securelink.deviceapi.codes import CodeError, check_public_host, normalize_code
from asterisk_securelink.deviceapi.settings import is_loopback
from asterisk_securelink.deviceapi.signing import api_key, authorization

__all__ = [  # the client, its values and its errors (from `api_errors`)
    "AlreadyClaimed", "AuthenticationFailed", "CallKey", "CallRefused", "Credentials", "DeviceApiClient",
    "DeviceApiError", "DeviceRevoked", "DeviceRotated", "DeviceStatus", "Enrolled", "Intent", "NotFound",
    "RateLimited", "Refused", "RequestRejected", "ServerError", "TlsFailed", "Unreachable", "UpgradeRequired",
    "UseDtmf", "check_server", "params_of", "tls_context",
]  # fmt: skip

TIMEOUT: Final = 10.0  # seconds for one request, connection included
ATTEMPTS: Final = 3  # sends of a retriable request (claim, status, fork) whose answer was lost
RETRY_DELAYS: Final = (0.25, 1.0)  # seconds before the 2nd and 3rd send
MAX_ANSWER: Final = 64 * 1024  # bytes of an answer body read at most
STATUSES: Final = frozenset({"provisioned", "registered", "suspended", "revoked"})
CALL_KEY_BYTES: Final = 32


# -- values ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class Credentials:
    """What signs a device's requests: its current key_id and secret."""

    key_id: str
    secret: bytes

    def __repr__(self) -> str:
        return f"Credentials(key_id={self.key_id!r}, secret=<hidden>)"


@dataclass(frozen=True, repr=False)
class Enrolled:
    """A redeemed activation code: the provisioning (with the secret) and the platform's time at the answer."""

    provisioning: Provisioning
    server_time_ms: int
    offset_ms: int  # the platform's clock minus this device's, at the answer

    def __repr__(self) -> str:
        return f"Enrolled(key_id={self.provisioning.key_id!r}, server_time_ms={self.server_time_ms})"


@dataclass(frozen=True)
class DeviceStatus:
    """`GET /v1/device`."""

    key_id: str
    status: str  # provisioned | registered | suspended | revoked
    fork: bool
    params: DeviceParams
    server_time_ms: int
    offset_ms: int


@dataclass(frozen=True)
class Intent:
    """`POST /v1/calls/intent`: dial `dial` (from the registered number) while the intent lives."""

    intent_id: str
    call_id: str
    dial: str  # the access number, E.164
    expires_ms: int  # platform time
    server_time_ms: int
    received_ms: int  # this device's clock when the answer arrived

    def remaining_ms(self, now_ms: int) -> int:
        """How long the intent still lives at this device's `now_ms`, by the platform's clock of the answer."""
        return self.expires_ms - (self.server_time_ms + (now_ms - self.received_ms))


@dataclass(frozen=True, repr=False)
class CallKey:
    """A released voucher: the call's per-call key (32 bytes), to keep in memory for the call only."""

    call_id: str
    call_key_id: str
    call_key: bytes

    def __repr__(self) -> str:
        return f"CallKey(call_id={self.call_id!r}, call_key_id={self.call_key_id!r}, call_key=<hidden>)"

    @property
    def call_key_b64(self) -> str:
        """Unpadded base64url, as the API sends it."""
        return b64.encode(self.call_key)


def check_server(server: str) -> str:
    """`https://host[:port]` (`http://` only to a loopback address), without path, query or fragment; returned
    without a trailing `/`. Raises ValueError."""
    try:
        parts = urlsplit(server.strip())
        check_public_host(parts.netloc)
    except (ValueError, AttributeError):
        raise ValueError("the server must be an https://host[:port] URL") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username is not None:
        raise ValueError("the server must be an https://host[:port] URL, without a path")
    if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        raise ValueError("plain http:// is for a loopback address only; use https://")
    if parts.scheme not in ("https", "http"):
        raise ValueError("the server must be an https://host[:port] URL")
    return f"{parts.scheme}://{parts.netloc}"


def tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Verifying, TLS 1.2 or later: the system's CAs, or only `ca_file` (PEM) when given."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _b64url_bytes(value: object, name: str) -> bytes:
    try:
        return b64.decode(value if isinstance(value, str) else "")  # "" is refused too
    except ValueError:
        raise ServerError(f"the answer's {name} is not unpadded base64url") from None


def _field(doc: Mapping[str, Any], name: str, kind: type) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ServerError(f"the answer's {name} is missing or not a {kind.__name__}")
    return value


def params_of(doc: Mapping[str, Any]) -> DeviceParams:
    """The provisioning parameters of an answer (`trunk` comma-separated). Raises ServerError."""
    trunk = _field(doc, "trunk", str)
    mode = _field(doc, "mode", str)
    return DeviceParams(
        period=_field(doc, "period", int),
        t0=_field(doc, "t0", int),
        inbound_format=_field(doc, "in", str),
        outbound_format=_field(doc, "out", str),
        look_behind=_field(doc, "look_behind", int),
        look_ahead=_field(doc, "look_ahead", int),
        trunk=tuple(trunk.split(",")) if trunk else (),
        mode=mode,
        dial="" if mode in ACCESS_MODES else _field(doc, "dial", str),
        access=_field(doc, "access", str) if mode in ACCESS_MODES else "",
    )


# -- the client --------------------------------------------------------------------------------------------------
class DeviceApiClient:
    """One device's (or, without credentials, an enrolling phone's) client of one server. `clock` is this device's
    clock (unix ms); `offset_ms` is added to it to sign by the platform's time. Pass `session` to share one
    connection pool between clients (it is then not closed here), and the same `tls` context (`tls_context`) so they
    share its connections too (aiohttp pools connections per context)."""

    def __init__(
        self,
        server: str,
        credentials: Credentials | None = None,
        *,
        ca_file: Path | None = None,
        tls: ssl.SSLContext | None = None,
        offset_ms: int = 0,
        timeout: float = TIMEOUT,
        attempts: int = ATTEMPTS,
        clock: Callable[[], int] = now_ms,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.server = check_server(server)
        self.public_host = urlsplit(self.server).netloc
        self.credentials = credentials
        self.offset_ms = offset_ms
        self.attempts = max(1, attempts)
        self.clock = clock
        https = self.server.startswith("https:")
        self._ssl: ssl.SSLContext | bool = (tls or tls_context(ca_file)) if https else False
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> DeviceApiClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def platform_ms(self) -> int:
        """The platform's time as far as this client knows it (unix ms)."""
        return self.clock() + self.offset_ms

    # -- routes --------------------------------------------------------------------------------------------------
    async def enroll(self, code: str) -> Enrolled:
        """`POST /v1/enroll`: redeem a one-time activation code (dashes, spaces, ASCII case ignored), saying it speaks
        SLK1 1.2. Sent once, never retried: a lost answer has used the code. Raises ValueError for a malformed code,
        NotFound, RateLimited, UpgradeRequired, ..."""
        try:
            body = {"code": normalize_code(code), "v": VERSION_1_2}
        except CodeError as exc:
            raise ValueError(str(exc)) from None
        doc, sent, received = await self._request("POST", "/v1/enroll", body, signed=False, attempts=1,
                                                  not_found="unknown, used or expired activation code")  # fmt: skip
        if doc.get("v") not in (VERSION, VERSION_1_2):
            raise ServerError(f"the enrollment answer is not provisioning version {VERSION} or {VERSION_1_2}")
        key_id = _field(doc, "key_id", str)
        secret = _b64url_bytes(doc.get("secret"), "secret")
        try:
            prov = Provisioning.of(params_of(doc), key_id=key_id, secret=secret)
        except ProvisioningError as exc:
            raise ServerError(f"the enrollment answer is not a usable provisioning: {exc}") from None
        server_ms = _field(doc, "server_time_ms", int)
        self.offset_ms = _offset(server_ms, sent, received)
        self.credentials = Credentials(prov.key_id, prov.secret)
        return Enrolled(prov, server_ms, self.offset_ms)

    async def device(self) -> DeviceStatus:
        """`GET /v1/device`: status, fork toggle, parameters and the platform's time (learned as `offset_ms`)."""
        doc, sent, received = await self._request("GET", f"/v1/device?v={VERSION_1_2}", None)
        status = _field(doc, "status", str)
        if status not in STATUSES:
            raise ServerError(f"the answer's status is not one of {', '.join(sorted(STATUSES))}")
        server_ms = _field(doc, "server_time_ms", int)
        self.offset_ms = _offset(server_ms, sent, received)
        return DeviceStatus(_field(doc, "key_id", str), status, _field(doc, "fork", bool), params_of(doc), server_ms,
                            self.offset_ms)  # fmt: skip

    async def set_fork(self, enabled: bool) -> bool:
        """`PUT /v1/device/fork`: the user's own toggle of desk + mobile ringing. Returns the toggle as set."""
        doc, _, _ = await self._request("PUT", "/v1/device/fork", {"enabled": bool(enabled)})
        return bool(_field(doc, "fork", bool))

    async def claim(self, presented: str, idempotency_key: str | None = None) -> CallKey:
        """`POST /v1/calls/claim`: the per-call key of this device's live call that presented `presented` (the
        caller number shown for a call from the PBX; the key the phone called with for a call to it). A lost answer
        is claimed again with the same `Idempotency-Key` (a fresh one when None). Raises NotFound (no such call:
        in number mode, the platform is not calling), AlreadyClaimed, DeviceRevoked, AuthenticationFailed, ..."""
        body = {"presented": presented}
        return await self._claim(body, idempotency_key, "no live call of this device presented that number")

    async def intent(self, destination: str | None, idempotency_key: str | None = None) -> Intent:
        """`POST /v1/calls/intent`: the access number to dial now for `destination`. A lost answer is asked again
        with the same `Idempotency-Key` (the same intent). Raises UseDtmf (call by DTMF), RateLimited (wait),
        CallRefused, DeviceRevoked, ServerError (503: call by DTMF), Unreachable (call by DTMF), ..."""
        key = idempotency_key or secrets.token_urlsafe(18)
        doc, _, received = await self._request("POST", "/v1/calls/intent", {"destination": destination},
                                               headers={"Idempotency-Key": key})  # fmt: skip
        return Intent(_field(doc, "intent_id", str), _field(doc, "call_id", str), _field(doc, "dial", str),
                      _field(doc, "expires_ms", int), _field(doc, "server_time_ms", int), received)  # fmt: skip

    async def callback(self, destination: str) -> str:
        """`POST /v1/calls/callback`: the PBX calls this phone back and connects it to `destination`; returns the
        call's `call_id` (confirm with `claim_call`). Sent once: a lost answer may have placed the call (a second
        request would be 409 `busy`). Raises CallRefused (`busy`, `denied`, `no_route`, ...), RateLimited,
        ServerError (503 `unavailable`), ..."""
        doc, _, _ = await self._request("POST", "/v1/calls/callback", {"destination": destination}, attempts=1)
        return str(_field(doc, "call_id", str))

    async def claim_call(self, call_id: str, idempotency_key: str | None = None) -> CallKey:
        """`POST /v1/calls/claim` `{"call_id"}`: the per-call key of a call the platform named to this phone (an
        intent's, a callback's). NotFound until the platform has placed it (a callback: the phone rings)."""
        return await self._claim({"call_id": call_id}, idempotency_key, "no live call of this device has that call_id")

    async def _claim(self, body: Mapping[str, str], idempotency_key: str | None, not_found: str) -> CallKey:
        key = idempotency_key or secrets.token_urlsafe(18)
        doc, _, _ = await self._request("POST", "/v1/calls/claim", body, headers={"Idempotency-Key": key},
                                        not_found=not_found)  # fmt: skip
        call_key = _b64url_bytes(doc.get("call_key"), "call_key")
        if len(call_key) != CALL_KEY_BYTES:
            raise ServerError(f"the answer's call_key is not {CALL_KEY_BYTES} bytes")
        return CallKey(_field(doc, "call_id", str), _field(doc, "call_key_id", str), call_key)

    # -- one request ---------------------------------------------------------------------------------------------
    async def _request(
        self,
        method: str,
        target: str,
        body: Mapping[str, Any] | None,
        *,
        signed: bool = True,
        attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
        not_found: str = "not found",
    ) -> tuple[dict[str, Any], int, int]:
        """(answer document, local ms sent, local ms received). A lost answer (no answer, 5xx) is retried with a
        fresh nonce and signature, up to `attempts` sends in all."""
        if signed and self.credentials is None:
            raise ValueError("this request is signed: the client needs the device's credentials")
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        total = self.attempts if attempts is None else attempts
        for attempt in range(total):
            try:
                return await self._send(method, target, data, signed, headers or {}, not_found)
            except (Unreachable, ServerError) as exc:
                if isinstance(exc, TlsFailed) or attempt + 1 >= total or (exc.status and exc.status < 500):
                    raise
            await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
        raise AssertionError("not reached")  # pragma: no cover

    async def _send(
        self, method: str, target: str, data: bytes, signed: bool, extra: Mapping[str, str], not_found: str
    ) -> tuple[dict[str, Any], int, int]:
        headers = {"Accept": "application/json", **extra}
        if data:
            headers["Content-Type"] = "application/json"
        sent = self.clock()
        signed_ms = sent + self.offset_ms  # the platform's time as this client knows it: what TS says
        if signed:
            assert self.credentials is not None  # checked by _request
            headers["Authorization"] = authorization(
                self.credentials.key_id, api_key(self.credentials.secret), method=method, host=self.public_host,
                target=target, body=data, ts=signed_ms // 1000, nonce=secrets.token_urlsafe(18),
            )  # fmt: skip
        session = self._get_session()
        try:
            async with session.request(method, URL(self.server + target, encoded=True), data=data or None,
                                       headers=headers, ssl=self._ssl, allow_redirects=False) as resp:  # fmt: skip
                status = resp.status
                raw = await _read_limited(resp)
                retry_after, date = resp.headers.get("Retry-After", ""), resp.headers.get("Date")
        except aiohttp.ClientConnectorCertificateError as exc:
            why = getattr(exc.certificate_error, "verify_message", "") or "not trusted"
            raise TlsFailed(f"TLS with {self.public_host} failed: its certificate is {safe_display(why, 80)} "
                            "(a test server's own CA: --ca / ca_file)") from None  # fmt: skip
        except aiohttp.ClientSSLError:
            raise TlsFailed(f"TLS with {self.public_host} failed: no TLS 1.2+ handshake") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unreachable(f"no answer from {self.public_host}: {_reason(exc)}") from None
        received = self.clock()
        try:
            return answer(status, raw, not_found, date=date, signed_ms=signed_ms), sent, received
        except RateLimited as exc:
            exc.retry_after_s = retry_after_s(retry_after)
            raise

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session


async def _read_limited(resp: aiohttp.ClientResponse) -> bytes:
    buf = bytearray()
    while chunk := await resp.content.read(MAX_ANSWER + 1 - len(buf)):
        buf += chunk
        if len(buf) > MAX_ANSWER:
            raise ServerError(f"the answer is larger than {MAX_ANSWER} bytes", status=resp.status)
    return bytes(buf)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({safe_display(exc.os_error.strerror or type(exc.os_error).__name__, 80)})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    return safe_display(f"{type(exc).__name__}: {exc}", 160)


def _offset(server_ms: int, sent: int, received: int) -> int:
    """The platform's clock minus ours: the answer's time against the midpoint of the round trip."""
    return server_ms - (sent + received) // 2
