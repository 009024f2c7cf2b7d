"""What a reference device enrolled through the device API keeps, in one state file (mode 0600). Pure.

A device provisioned by URI keeps only its SLK1 1.1 state (`reference.state_to_json`, format
`slk1-device-state/1`: key_id, period, t0, the last inbound epoch `L`, the outbound high-water mark `H`). A device
enrolled with an activation code (`securelink-device enroll`) keeps format `slk1-device-state/2`: the same fields plus
`enrollment`, which holds the secret and every provisioning parameter of the enrollment answer, the server it
talks to, the platform's clock offset and the status and fork toggle last seen:

```
{"format": "slk1-device-state/2", "key_id": "dev-0001", "period": 30, "t0": 0, "last_inbound_epoch": null,
 "outbound_high_water": null, "enrollment": {"server": "https://pbx.example.com:8443", "ca_file": null,
 "v": "1.1", "secret": "<base64url>", "in": "+1NXXNXXXXXX", "out": "XXXXXXXXXX", "look_behind": 1, "look_ahead": 1,
 "trunk": "0,00", "mode": "ani", "dial": "", "server_time_ms": 1790000000250, "clock_offset_ms": 250,
 "status": "provisioned", "fork": true}}
```

An older tool refuses a `/2` file instead of rewriting it without its enrollment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Final

from asterisk_securelink.core import b64
from asterisk_securelink.core.provisioning import (
    ACCESS_MODES,
    VERSION,
    VERSION_1_2,
    DeviceParams,
    Provisioning,
    ProvisioningError,
    params_document,
)
from asterisk_securelink.device.reference import (
    STATE_FORMAT,
    DeviceState,
    StateError,
    state_for,
    state_from_data,
    state_to_json,
)
from asterisk_securelink.deviceapi.ports import REVOKED

ENROLLED_FORMAT: Final = "slk1-device-state/2"
STATUSES: Final = ("provisioned", "registered", "suspended", REVOKED)


@dataclass(frozen=True, repr=False)
class Enrollment:
    """An enrollment through the device API: where, the provisioning (with the secret), the platform's clock."""

    server: str  # https://host[:port]; its host[:port] is the public_host every signature covers
    provisioning: Provisioning
    server_time_ms: int  # the platform's time in the last answer that carried it
    clock_offset_ms: int  # the platform's clock minus this device's, at that answer
    status: str | None = None  # as last seen; None: not asked yet
    fork: bool | None = None  # unknown until the first status
    ca_file: str | None = None  # the CA (PEM) that verifies the server's certificate; None: the system's CAs

    def __repr__(self) -> str:  # never show the secret
        return f"Enrollment(server={self.server!r}, key_id={self.provisioning.key_id!r}, status={self.status!r})"

    def platform_ms(self, local_ms: int) -> int:
        """The platform's time at this device's `local_ms`, by the last offset learned."""
        return local_ms + self.clock_offset_ms


@dataclass(frozen=True)
class DeviceFile:
    """A state file: the SLK1 state, and the enrollment when the device was enrolled through the API."""

    state: DeviceState
    enrollment: Enrollment | None = None


def enrolled(previous: DeviceFile | None, enrollment: Enrollment) -> DeviceFile:
    """The file after an enrollment: the previous state kept for the same key_id, period and t0, else fresh (a
    re-enrollment after a rotation has a new key_id)."""
    try:
        state = state_for(enrollment.provisioning, previous.state if previous is not None else None)
    except StateError:
        state = state_for(enrollment.provisioning, None)
    return DeviceFile(state, enrollment)


def with_status(
    file: DeviceFile, *, status: str, fork: bool, params: DeviceParams, server_time_ms: int, clock_offset_ms: int
) -> tuple[DeviceFile, list[str]]:
    """The file after a `GET /v1/device` answer for its key_id, and what changed (for the user). A change of
    period or t0 puts the keys on another timeline: L and H start afresh. Raises ProvisioningError."""
    e = file.enrollment
    if e is None:
        raise ValueError("the state file holds no enrollment")
    prov = Provisioning.of(params, key_id=e.provisioning.key_id, secret=e.provisioning.secret)
    before = params_document(e.provisioning)
    changed = [name for name, value in params_document(prov).items() if before[name] != value]
    state = file.state
    if (prov.period, prov.t0) != (e.provisioning.period, e.provisioning.t0):
        state = DeviceState(prov.key_id, prov.period, prov.t0)
    after = replace(e, provisioning=prov, server_time_ms=server_time_ms, clock_offset_ms=clock_offset_ms,
                    status=status, fork=fork)  # fmt: skip
    return DeviceFile(state, after), changed


def with_fork(file: DeviceFile, fork: bool) -> DeviceFile:
    return file if file.enrollment is None else replace(file, enrollment=replace(file.enrollment, fork=fork))


def forget(file: DeviceFile) -> DeviceFile:
    """The file of a revoked device: the enrollment (and its secret) dropped, the state kept."""
    return DeviceFile(file.state)


# -- JSON -----------------------------------------------------------------------------------------------------------


def to_json(file: DeviceFile) -> str:
    """`slk1-device-state/1` without an enrollment (exactly `reference.state_to_json`), `/2` with one."""
    if file.enrollment is None:
        return state_to_json(file.state)
    doc: dict[str, Any] = json.loads(state_to_json(file.state))
    doc["format"] = ENROLLED_FORMAT
    e = file.enrollment
    fields = params_document(e.provisioning)
    del fields["period"], fields["t0"]  # the state's own
    doc["enrollment"] = {
        "server": e.server,
        "ca_file": e.ca_file,
        "v": e.provisioning.version,
        "secret": b64.encode(e.provisioning.secret),
        **fields,
        "server_time_ms": e.server_time_ms,
        "clock_offset_ms": e.clock_offset_ms,
        "status": e.status,
        "fork": e.fork,
    }
    return json.dumps(doc)


def from_json(text: str) -> DeviceFile:
    """A state file of either format. Raises StateError (never echoing the secret)."""
    try:
        data = json.loads(text)
    except ValueError:
        raise StateError("not a device state (JSON expected)") from None
    if not isinstance(data, dict) or data.get("format") not in (STATE_FORMAT, ENROLLED_FORMAT):
        raise StateError(f"not a device state (format {STATE_FORMAT!r} or {ENROLLED_FORMAT!r} expected)")
    state = state_from_data(data)
    if data["format"] == STATE_FORMAT:
        return DeviceFile(state)
    e = data.get("enrollment")
    if not isinstance(e, dict):
        raise StateError("device state: enrollment must be an object")
    return DeviceFile(state, _enrollment(state, e))


def _get(doc: dict[str, Any], name: str, kind: type, optional: bool = False) -> Any:
    value = doc.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise StateError(f"device state: enrollment.{name} must be a {kind.__name__}")
    return value


def _enrollment(state: DeviceState, e: dict[str, Any]) -> Enrollment:
    secret_text = _get(e, "secret", str)
    try:
        secret = b64.decode(secret_text)
    except ValueError:
        raise StateError("device state: enrollment.secret is not unpadded base64url") from None
    if e.get("v") not in (VERSION, VERSION_1_2):
        raise StateError(f"device state: enrollment.v must be {VERSION!r} or {VERSION_1_2!r}")
    trunk = _get(e, "trunk", str)
    mode = _get(e, "mode", str)
    access = mode in ACCESS_MODES
    p = DeviceParams(state.period, state.t0, _get(e, "in", str), _get(e, "out", str), _get(e, "look_behind", int),
                     _get(e, "look_ahead", int), tuple(trunk.split(",")) if trunk else (), mode,
                     "" if access else _get(e, "dial", str), _get(e, "access", str) if access else "")  # fmt: skip
    try:
        prov = Provisioning.of(p, key_id=state.key_id, secret=secret)
    except ProvisioningError as exc:
        raise StateError(f"device state: enrollment: {exc}") from None
    status = _get(e, "status", str, optional=True)
    if status is not None and status not in STATUSES:
        raise StateError(f"device state: enrollment.status must be one of {', '.join(STATUSES)}")
    return Enrollment(
        server=_get(e, "server", str),
        provisioning=prov,
        server_time_ms=_get(e, "server_time_ms", int),
        clock_offset_ms=_get(e, "clock_offset_ms", int),
        status=status,
        fork=_get(e, "fork", bool, optional=True),
        ca_file=_get(e, "ca_file", str, optional=True),
    )
