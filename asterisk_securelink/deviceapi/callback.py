"""`POST /v1/calls/callback` (CALLING.md, "Callback"): the PBX calls the phone back and connects it.

Body `{"destination": "[0-9]{1,20}"}` (anything else is 400). The checks, in order, each refusal audited as
`callback.request` `refused` with its reason:
- the device: 403 `revoked`, `suspended`, `not_registered`, as for an intent;
- the Stasis app (`Callbacks`, `calling.callback`): 202 `{"call_id"}` (placed), 409 `busy` (a callback of the device
  is live), 403 `denied` (the guard refuses the destination), 429 `rate_limited` (with `Retry-After`), 409
  `no_route` (no routing identity), 503 `unavailable` (it failed, or this node runs no Stasis app).
The phone then confirms by claiming the call's voucher with `{"call_id"}` once the PBX rings it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Final

from asterisk_securelink.deviceapi.intent import REFUSED_STATUS
from asterisk_securelink.deviceapi.ports import (
    ApiEvent,
    CallbackOutcome,
    CallbackResult,
    Callbacks,
    DeviceDirectory,
    DeviceView,
)
from asterisk_securelink.deviceapi.transport import ApiError, bad_request

log = logging.getLogger(__name__)

ACTION: Final = "callback.request"
DESTINATION: Final = re.compile(r"[0-9]{1,20}")
# outcome -> (status, code, message) of a refusal
_REFUSALS: Final[Mapping[CallbackOutcome, tuple[int, str, str]]] = {
    CallbackOutcome.BUSY: (409, "busy", "a callback of this device is already in progress"),
    CallbackOutcome.DENIED: (403, "denied", "the platform refuses this destination"),
    CallbackOutcome.RATE_LIMITED: (429, "rate_limited", "too many calls of this device; try again later"),
    CallbackOutcome.NO_ROUTE: (409, "no_route", "the platform has no route for this device's calls"),
    CallbackOutcome.UNAVAILABLE: (503, "unavailable", "the platform cannot call back right now"),
}


def destination_of(doc: Mapping[str, Any]) -> str:
    """The body's destination, `[0-9]{1,20}` (required). Raises ApiError 400."""
    value = doc.get("destination")
    if not isinstance(value, str) or not DESTINATION.fullmatch(value):
        raise bad_request("destination must be 1 to 20 digits 0-9")
    return value


async def request_callback(
    directory: DeviceDirectory,
    callbacks: Callbacks | None,
    view: DeviceView,
    doc: Mapping[str, Any],
    now_ms: int,
    source: str,
) -> dict[str, Any]:
    """The 202 answer's document, or the ApiError of a refusal (each audited)."""
    destination = destination_of(doc)

    def audit(result: str, call_id: str | None, **detail: str) -> None:
        event = ApiEvent(ACTION, result, device_id=view.device_id, call_id=call_id or None, source=source,
                         detail={"destination": destination, **detail})  # fmt: skip
        directory.audit(event)

    refused = REFUSED_STATUS.get(view.status)
    if refused is not None:
        audit("refused", None, reason=refused[0])
        raise ApiError(403, *refused)
    if callbacks is None:
        result = CallbackResult(CallbackOutcome.UNAVAILABLE, reason="no_stasis_app")
    else:
        try:
            result = await callbacks.request(view.device_id, destination, now_ms)
        except Exception as exc:  # noqa: BLE001 - fail closed: no call, 503
            log.warning("device api: callback of device %s failed (%s)", view.device_id, type(exc).__name__)
            result = CallbackResult(CallbackOutcome.UNAVAILABLE, reason="error")
    if result.outcome is CallbackOutcome.PLACED and result.call_id:
        audit(result.outcome.value, result.call_id)
        return {"call_id": result.call_id}
    outcome = result.outcome if result.outcome in _REFUSALS else CallbackOutcome.UNAVAILABLE
    status, code, message = _REFUSALS[outcome]
    audit("refused", result.call_id, reason=result.reason or code)
    headers = {"Retry-After": str(max(1, result.retry_after_s))} if outcome is CallbackOutcome.RATE_LIMITED else {}
    raise ApiError(status, code, message, headers=headers)
