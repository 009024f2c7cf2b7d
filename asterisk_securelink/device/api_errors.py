"""The device API's answers as the phone sees them (`docs/device-api.md`): the spec's error codes become these
exceptions (`answer` maps a status and body to a document or an exception). No message holds a secret, a code or a
call key."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from asterisk_securelink.core.numbers import safe_display
from asterisk_securelink.errors import ProtocolError


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
    """401 `unauthorized`: wrong key_id or secret, a clock off by more than 60 s, or a replayed nonce."""


class DeviceRevoked(Refused):
    """403 `revoked`: the device is revoked; delete its secret."""


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
    """400, 408, 413, 415: the server did not take the request as sent (a client bug, not a verdict)."""


class ServerError(DeviceApiError):
    """A 5xx, or an answer that is not what the spec says."""


class Unreachable(DeviceApiError):
    """No answer: the connection failed, was cut, or timed out."""


class TlsFailed(Unreachable):
    """The TLS handshake failed: the server's certificate is not trusted (see `ca_file`) or TLS is not spoken."""


_BY_CODE: Final[Mapping[str, type[Refused]]] = {
    "unauthorized": AuthenticationFailed,
    "revoked": DeviceRevoked,
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
    "too_large": RequestRejected,
    "unsupported": RequestRejected,
    "timeout": RequestRejected,
}
_MESSAGES: Final[Mapping[type[Refused], str]] = {
    AuthenticationFailed: "authentication failed: wrong key_id or secret, a clock off by more than 60 s, "
    "or a replayed nonce",
    DeviceRevoked: "this device is revoked: its secret must be deleted and the device enrolled again",
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


def answer(status: int, raw: bytes, not_found: str) -> dict[str, Any]:
    """The JSON object of a 200, 201 or 202, or the exception for anything else."""
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
    kind = _BY_CODE.get(code) or {401: AuthenticationFailed, 403: DeviceRevoked, 404: NotFound,
                                  409: AlreadyClaimed, 429: RateLimited}.get(status, RequestRejected)  # fmt: skip
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
