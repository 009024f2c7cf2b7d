"""The device API's answers as the phone sees them (`docs/device-api.md`): the spec's error codes become these
exceptions (`answer` maps a status and body to a document or an exception). No message holds a secret, a code or a
call key.

A 401 is never retried: the phone checks its clock once and tells its user (revision 2). The 401 carries no
`server_time_ms` (an error is `{"error", "message"}` only) and a signed `GET /v1/device` fails the same way when the
clock is the cause, so the check compares the platform's time the phone signed by with the answer's `Date` header
(`clock_skew_ms`): more than 60 s apart, the clock is the cause; else the key_id and secret are not accepted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Final

from asterisk_securelink.core.numbers import safe_display
from asterisk_securelink.errors import ProtocolError

CLOCK_WINDOW_MS: Final = 60_000  # the API's |now - TS| limit


# -- errors ------------------------------------------------------------------------------------------------------
class DeviceApiError(ProtocolError):
    """A request failed. `status` is the HTTP status (0: no answer), `code` the spec's error code (empty: none)."""

    def __init__(self, message: str, *, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Refused(DeviceApiError):
    """The server answered with one of the spec's errors."""


class AuthenticationFailed(Refused):
    """401 `unauthorized`: wrong key_id or secret, a clock off by more than 60 s, or a replayed nonce. Not retried.
    `clock_skew_ms`: the platform's clock (by the answer's `Date`) minus the time this device signed by; None when
    the answer had no usable `Date`."""

    clock_skew_ms: int | None = None


class DeviceRevoked(Refused):
    """403 `revoked`: the device is revoked; delete its secret."""


class DeviceRotated(Refused):
    """403 `rotated`: a rotation retired this device's key_id, so its secret works nowhere any more. Do not retry:
    ask for a new activation code and enroll again."""


class NotFound(Refused):
    """404 `not_found`: enrollment: an unknown, used or expired code; claim: no live call of this device presented
    that number (in `outbound.present = number` mode: the platform is not calling this device from that number)."""


class AlreadyClaimed(Refused):
    """409 `already_claimed`: this call's key was released before to another claim (a cloned secret?)."""


class RateLimited(Refused):
    """429 `rate_limited`: too many failed activation codes from this network or overall, or too many intents;
    wait (`retry_after_s` when the server said)."""

    retry_after_s: int | None = None


class UseDtmf(Refused):
    """409 `use_dtmf`: no intent now (intents off, or this number is noisy): call the access number and send the key
    by DTMF."""


class UpgradeRequired(Refused):
    """409 `upgrade_required`: the platform provisions only phones that speak a later SLK1."""


class CallRefused(Refused):
    """403 `denied`, `not_registered`, `suspended`, 409 `no_route`, `busy`: this call cannot be set up; tell the
    user."""


class RequestRejected(Refused):
    """400, 405, 408, 413, 415, or an error this client does not know (a 403 of a proxy): the server did not take the
    request as sent (a client bug, not a verdict; never a reason to delete the secret)."""


class ServerError(DeviceApiError):
    """A 5xx, or an answer that is not what the spec says."""


class Unreachable(DeviceApiError):
    """No answer: the connection failed, was cut, or timed out."""


class TlsFailed(Unreachable):
    """The TLS handshake failed: the server's certificate is not trusted (see `ca_file`) or TLS is not spoken."""


_BY_CODE: Final[Mapping[str, type[Refused]]] = {
    "unauthorized": AuthenticationFailed,
    "revoked": DeviceRevoked,
    "rotated": DeviceRotated,
    "not_found": NotFound,
    "already_claimed": AlreadyClaimed,
    "rate_limited": RateLimited,
    "use_dtmf": UseDtmf,
    "upgrade_required": UpgradeRequired,
    "denied": CallRefused,
    "not_registered": CallRefused,
    "suspended": CallRefused,
    "no_route": CallRefused,
    "busy": CallRefused,
    "bad_request": RequestRejected,
    "method_not_allowed": RequestRejected,
    "too_large": RequestRejected,
    "unsupported": RequestRejected,
    "timeout": RequestRejected,
}
_MESSAGES: Final[Mapping[type[Refused], str]] = {
    AuthenticationFailed: "authentication failed: wrong key_id or secret, a clock off by more than 60 s, "
    "or a replayed nonce",
    DeviceRevoked: "this device is revoked: its secret must be deleted and the device enrolled again",
    DeviceRotated: "this device's key was rotated: its secret no longer works; ask for a new activation code and "
    "enroll again",
    AlreadyClaimed: "this call's key was already released to another claim (is the device secret cloned?)",
    RateLimited: "rate limited (too many failed activation codes, or intents); try again later",
    UseDtmf: "no intent now: call the access number and send the key by DTMF",
    UpgradeRequired: "the platform needs a phone that speaks a later SLK1 version",
}
_CALL_REFUSED: Final[Mapping[str, str]] = {
    "denied": "the platform refuses this destination (an intent needs one)",
    "not_registered": "this device is not registered yet: its first keyed call registers it",
    "suspended": "this device is suspended",
    "no_route": "the platform has no route for this device's calls",
    "busy": "a callback of this device is already in progress",
}


def clock_skew_ms(date: str | None, signed_ms: int) -> int | None:
    """The platform's clock by an answer's `Date` header (RFC 9110, whole seconds) minus `signed_ms`, the platform
    time this device signed by; None when there is no usable `Date`."""
    try:
        when = parsedate_to_datetime(date or "")
    except (TypeError, ValueError, IndexError):
        return None
    return None if when.tzinfo is None else int(when.timestamp() * 1000) - signed_ms


def retry_after_s(value: str) -> int | None:
    """A `Retry-After` of delay-seconds (ASCII digits only: `int` would take other Unicode digits), else None."""
    return int(value) if value.isascii() and value.isdigit() else None


def _unauthorized(skew_ms: int | None) -> str:
    if skew_ms is None:
        return _MESSAGES[AuthenticationFailed]
    seconds = abs(skew_ms) // 1000
    if abs(skew_ms) > CLOCK_WINDOW_MS:
        side = "behind" if skew_ms > 0 else "ahead of"
        return (f"authentication failed: this device's clock is {seconds} s {side} the platform's (the API allows "
                "60 s); correct the clock, then try again")  # fmt: skip
    return (f"authentication failed, the clock agreeing with the platform's (within {seconds} s): the platform does "
            "not accept this key_id and secret; ask for a new activation code")  # fmt: skip


def answer(status: int, raw: bytes, not_found: str, *, date: str | None = None, signed_ms: int = 0) -> dict[str, Any]:
    """The JSON object of a 200, 201 or 202, or the exception for anything else. `date` (the answer's `Date`
    header) and `signed_ms` (the platform time the request was signed by) make the clock check of a 401."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        doc = None
    if status in (200, 201, 202):
        if not isinstance(doc, dict):
            raise ServerError("the answer is not a JSON object", status=status)
        return doc
    code = doc.get("error") if isinstance(doc, dict) else None
    code = code if isinstance(code, str) else ""
    server_message = doc.get("message") if isinstance(doc, dict) else None
    if status >= 500 or not 400 <= status < 500:
        detail = f" ({safe_display(server_message, 120)})" if isinstance(server_message, str) else ""
        raise ServerError(f"the server failed: HTTP {status}{detail}", status=status, code=code)
    kind = _BY_CODE.get(code) or {401: AuthenticationFailed, 404: NotFound, 409: AlreadyClaimed,
                                  429: RateLimited}.get(status, RequestRejected)  # fmt: skip
    if kind is AuthenticationFailed:
        failed = AuthenticationFailed(_unauthorized(skew := clock_skew_ms(date, signed_ms)), status=status, code=code)
        failed.clock_skew_ms = skew
        raise failed
    if kind is NotFound:
        message = not_found
    elif kind is CallRefused:
        message = _CALL_REFUSED.get(code, "refused")
    elif kind is RequestRejected:
        shown = safe_display(server_message, 120) if isinstance(server_message, str) else "no detail"
        message = f"the server refused the request: HTTP {status} {code or 'error'} ({shown})"
    else:
        message = _MESSAGES[kind]
    raise kind(message, status=status, code=code)
