"""The dialplan contract of an admitted call (CALLING.md, "The dialplan contract"): the variables the app sets before
`[securelink-admitted]`, for the Stasis app (`calling.onward`) and for FastAGI alike.

FastAGI has no dial tone and no way to follow the call to its end, so an AGI-admitted call goes to its home
extension only (a `disa` or `hangup` home ends it), takes its routing identity from the device or `[routing]`
(the desk endpoint is read through ARI, which `securelink agi` does not use), and holds no lease.
"""

from __future__ import annotations

from typing import Protocol

from asterisk_securelink.calling.identity import Identity, RoutingIdentity
from asterisk_securelink.config import Config
from asterisk_securelink.core.tollguard import Home, HomeKind, parse_home
from asterisk_securelink.core.verdicts import Method, Verdict
from asterisk_securelink.dialplan import (
    CALLERID_VAR,
    CDR_DEVICE,
    CDR_METHOD,
    CONTEXT_VAR,
    DESTINATION_VAR,
    DEVICE_VAR,
    HOME_VAR,
    METHOD_VAR,
    MODE_VAR,
    RESULT_VAR,
    TIMEOUT_VAR,
)
from asterisk_securelink.store.store import DeviceRow


class Devices(Protocol):
    """The device rows (`store.store.Store`), for every part of `calling`."""

    async def get_device(self, ref: str | int) -> DeviceRow | None: ...


def home_of(device: DeviceRow, cfg: Config) -> Home:
    return parse_home(device.home) if device.home else cfg.routing.home_default


def route_variables(
    cfg: Config, device_id: int, method: Method, who: Identity, destination: str | None, home: Home
) -> dict[str, str]:
    """Every variable of the contract and the call's time limit."""
    m = method.value
    return {
        RESULT_VAR: Verdict.ADMITTED.value, DEVICE_VAR: str(device_id), MODE_VAR: m, METHOD_VAR: m,
        DESTINATION_VAR: destination or "", CONTEXT_VAR: who.context, CALLERID_VAR: who.callerid,
        HOME_VAR: home.exten if destination is None and home.kind is HomeKind.EXTENSION else "",
        TIMEOUT_VAR: str(cfg.routing.max_call_seconds),
    }  # fmt: skip


def cdr_fields(device_id: int, method: Method) -> dict[str, str]:
    """The CDR fields the app sets itself (a PBX with CDRs off refuses them: not a reason to refuse the call)."""
    return {CDR_DEVICE: str(device_id), CDR_METHOD: method.value}


async def agi_variables(cfg: Config, devices: Devices, device_id: int, method: Method) -> dict[str, str]:
    """An AGI-admitted call's variables, or `SECURELINK_RESULT=no_route` when it has no routing identity."""
    device = await devices.get_device(device_id)
    who = await RoutingIdentity(cfg.routing, None).resolve(device) if device is not None else None
    if device is None or who is None:
        return {RESULT_VAR: Verdict.NO_ROUTE.value}
    return {**route_variables(cfg, device_id, method, who, None, home_of(device, cfg)), **cdr_fields(device_id, method)}
