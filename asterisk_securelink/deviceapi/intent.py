"""`POST /v1/calls/intent` (CALLING.md, "Intent"): call setup over data, the access number to dial now.

Body `{"destination": "[0-9]{1,20}" | null}` (an absent `destination` is null; anything else is 400). The checks,
in order, each refusal audited as `intent.create` `refused` with its reason (never the Idempotency-Key):
- the device: 403 `revoked`, `suspended`, `not_registered` (still `provisioned`: an intent call carries no key, so it
  can never be the verified call that registers a device, and the access entry would not admit it);
- `[calling]`: 409 `use_dtmf` when intents are not offered (`intent = off`, or no access numbers);
- the destination: 403 `denied` without one ("no dial tone by intent": allowed only when the device's home, or
  `[routing] home`, is `extension:`), or when the guard's rules refuse it (`core.tollguard`: emergency numbers,
  `denied`, not `allowed`);
- the store: 201 (created, or the same intent again for the same Idempotency-Key), 429 `rate_limited` with
  `Retry-After`, 409 `use_dtmf` (a noise record within `intent_quiet`), 503 `unavailable` when it fails.
The access number is drawn from the pool with `secrets.choice` (a CSPRNG), so a spoofer cannot predict it.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping
from typing import Any, Final

from asterisk_securelink.core.tollguard import check_destination
from asterisk_securelink.deviceapi.ports import (
    PROVISIONED,
    REVOKED,
    SUSPENDED,
    ApiEvent,
    DeviceDirectory,
    DeviceView,
    DirectoryUnavailable,
    IntentOutcome,
)
from asterisk_securelink.deviceapi.transport import ApiError, bad_request

log = logging.getLogger(__name__)

ACTION: Final = "intent.create"
DESTINATION: Final = re.compile(r"[0-9]{1,20}")
# status -> (code, message): a device that may not ask for an intent
REFUSED_STATUS: Final = {
    REVOKED: ("revoked", "this device is revoked"),
    SUSPENDED: ("suspended", "this device is suspended"),
    PROVISIONED: ("not_registered", "this device is not registered yet: its first keyed call registers it"),
}


def destination_of(doc: Mapping[str, Any]) -> str | None:
    """The body's destination: `[0-9]{1,20}` or None (null or absent). Raises ApiError 400."""
    value = doc.get("destination")
    if value is None:
        return None
    if not isinstance(value, str) or not DESTINATION.fullmatch(value):
        raise bad_request("destination must be 1 to 20 digits 0-9, or null")
    return value


async def create_intent(
    directory: DeviceDirectory,
    view: DeviceView,
    doc: Mapping[str, Any],
    idempotency_key: str | None,
    now_ms: int,
    source: str,
) -> dict[str, Any]:
    """The 201 answer's document, or the ApiError of a refusal (each audited)."""
    destination = destination_of(doc)

    def refuse(status: int, code: str, message: str, reason: str, **headers: str) -> ApiError:
        detail = {"reason": reason}
        directory.audit(ApiEvent(ACTION, "refused", device_id=view.device_id, source=source, detail=detail))
        return ApiError(status, code, message, headers=headers)

    refused = REFUSED_STATUS.get(view.status)
    if refused is not None:
        raise refuse(403, *refused, refused[0])
    settings = directory.intents
    if not settings.offered:
        raise refuse(409, "use_dtmf", "intents are off on this platform: call the access number and send the key",
                     "intent_off")  # fmt: skip
    if destination is None and not (view.home or settings.home).startswith("extension:"):
        raise refuse(403, "denied", "an intent needs a destination (no dial tone by intent)", "no_destination")
    if destination is not None and settings.policy is not None:
        refusal = check_destination(destination, settings.policy)
        if refusal is not None:  # the guard's rules, before anything is set up (the call checks them again)
            raise refuse(403, "denied", "this destination may not be called through the PBX", refusal.reason.value)
    access = secrets.choice(settings.access_numbers)
    try:
        result = await directory.create_intent(view.device_id, access, destination, now_ms, idempotency_key)
    except DirectoryUnavailable as exc:
        log.warning("device api: intent of device %s not created: %s", view.device_id, exc)
        raise refuse(
            503, "unavailable", "the platform cannot set up calls right now; use DTMF", "unavailable"
        ) from None
    if result.outcome is IntentOutcome.RATE_LIMITED:
        retry = str(max(1, result.retry_after_s))
        raise refuse(429, "rate_limited", "too many intents; try again later", "rate_limited", **{"Retry-After": retry})
    if result.outcome is IntentOutcome.USE_DTMF:
        raise refuse(409, "use_dtmf", "call the access number and send the key", "noise")
    detail = {"intent": result.intent_id, "access": result.access_number, "destination": destination or ""}
    directory.audit(
        ApiEvent(ACTION, result.outcome.value, device_id=view.device_id, call_id=result.call_id, source=source,
                 detail=detail)
    )  # fmt: skip
    return {
        "intent_id": result.intent_id,
        "call_id": result.call_id,
        "dial": result.access_number,
        "expires_ms": result.expires_ms,
        "server_time_ms": now_ms,
    }
