"""The dialplan contract of an admitted call (CALLING.md, "The dialplan contract"): the variables an admitted call
has in `[securelink-admitted]`, handed over by the Stasis app (`calling.onward`) or set by FastAGI alike.

FastAGI has no dial tone and no way to follow the call to its end, so an AGI-admitted call goes to its home
extension only (a `disa` or `hangup` home ends it), takes its routing identity from the device or `[routing]`
(the desk endpoint is read through ARI, which `securelink agi` does not use), and holds no lease.
"""

from __future__ import annotations

from typing import Protocol

from asterisk_securelink.calling.identity import Identity, Routable, RoutingIdentity
from asterisk_securelink.config import Config
from asterisk_securelink.core.handoff import Handoff
from asterisk_securelink.core.tollguard import Home, HomeKind, parse_home
from asterisk_securelink.core.verdicts import Method, Verdict
from asterisk_securelink.dialplan import ADMITTED_CONTEXT, CALL_KEY_VAR, RESULT_VAR
from asterisk_securelink.store.store import DeviceRow


class Devices(Protocol):
    """The device rows (`store.store.Store`), for every part of `calling`."""

    async def get_device(self, ref: str | int) -> DeviceRow | None: ...


def home_of(device: Routable, cfg: Config) -> Home:
    return parse_home(device.home) if device.home else cfg.routing.home_default


def admitted_handoff(
    cfg: Config, device_id: int, method: Method, who: Identity, destination: str | None, home: Home,
    call_key_id: str = "", *, emit_verdict: bool = False, report_end: bool = False,
) -> Handoff:  # fmt: skip
    """Every variable of the contract and the call's time limit, as the hand-off to `[securelink-verdict]` carries
    them (`core.handoff`); `home` counts only when there is no destination."""
    admitted_context = cfg.inbound.admitted_context
    return Handoff(
        "a", Verdict.ADMITTED.value, device_id, method.value, destination or "",
        home.exten if destination is None and home.kind is HomeKind.EXTENSION else "",
        cfg.routing.max_call_seconds, who.context, who.callerid, call_key_id,
        "" if admitted_context == ADMITTED_CONTEXT else admitted_context, emit_verdict, report_end,
    )  # fmt: skip


async def agi_variables(cfg: Config, devices: Devices, device_id: int, method: Method) -> dict[str, str]:
    """An AGI-admitted call's variables, or `SECURELINK_RESULT=no_route` when it has no routing identity."""
    device = await devices.get_device(device_id)
    who = await RoutingIdentity(cfg.routing, None).resolve(device) if device is not None else None
    if device is None or who is None:
        return {RESULT_VAR: Verdict.NO_ROUTE.value}
    variables = admitted_handoff(cfg, device_id, method, who, None, home_of(device, cfg)).variables()
    del variables[CALL_KEY_VAR]  # the per-call key's, set beside these (`Handlers._voucher`)
    return variables
