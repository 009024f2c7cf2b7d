"""`securelink device add|set --context --callerid --home` and the routing part of `device show`: a device's own
routing identity and home, checked before they are stored, and where each value a call would use comes from
(CALLING.md, "Where an admitted call goes": the device, its desk endpoint, `[routing]`, or none: `no_route`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from asterisk_securelink.asterisk.ari.errors import AriError
from asterisk_securelink.calling.identity import DEVICE, desk_values
from asterisk_securelink.cli.context import CliError
from asterisk_securelink.config import Config
from asterisk_securelink.core.callerid import check_context, parse_callerid
from asterisk_securelink.core.numbers import safe_display
from asterisk_securelink.core.tollguard import parse_home
from asterisk_securelink.outbound.hooks import pjsip_endpoint_name
from asterisk_securelink.store.store import DeviceRow

ROUTING = ("context", "callerid", "home")
ARI_TIMEOUT = 3.0  # seconds `device show` waits for ARI before it says the desk endpoint was not read
NO_ROUTE = "none: calls get no_route"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--context", help="dialplan context its calls are placed in ('' clears: desk endpoint, [routing])")
    p.add_argument("--callerid", help="caller ID a called party sees, e.g. '\"Alice\" <1001>' ('' clears)")
    p.add_argument(
        "--home", help="where a call without a destination goes: disa, hangup or extension:EXTEN ('' clears)"
    )


def routing_values(args: argparse.Namespace) -> dict[str, str | None]:
    """The routing options given, checked and in the form Asterisk takes (`''`: None, the fallbacks apply)."""
    out: dict[str, str | None] = {}
    for name, check in (("context", check_context), ("callerid", _callerid), ("home", _home)):
        raw = getattr(args, name, None)
        if raw is None:
            continue
        try:
            out[name] = check(raw.strip()) if raw.strip() else None
        except ValueError as exc:
            raise CliError(f"--{name}: {exc}") from None
    return out


def _callerid(text: str) -> str:
    if not text.isprintable():
        raise ValueError(f"caller ID {safe_display(text)!r}: control characters are not allowed")
    return str(parse_callerid(text))


def _home(text: str) -> str:
    return str(parse_home(text))


@dataclass(frozen=True)
class Shown:
    value: str | None
    source: str  # "device", "desk endpoint PJSIP/1001", "[routing] default_context", or NO_ROUTE

    def text(self) -> str:
        return f"{self.value} ({self.source})" if self.value is not None else self.source


async def read_desk(cfg: Config, device: DeviceRow) -> tuple[tuple[str | None, str | None] | None, str]:
    """The desk endpoint's context and caller ID as Asterisk has them now (None: not read) and what was done."""
    name = pjsip_endpoint_name(device.desk_endpoint or "")
    if device.context and device.callerid:
        return None, "not read (the device has its own context and caller ID)"
    if name is None:
        return None, "no PJSIP desk endpoint"
    if not cfg.ari.password:
        return None, "not read: [ari] is not configured (ari.password); Asterisk is asked when a call arrives"
    from asterisk_securelink.app import ari_client

    ari = ari_client(cfg)
    ari.request_timeout = ARI_TIMEOUT
    try:
        fields = await ari.get_config_object("res_pjsip", "endpoint", name)
    except (AriError, OSError) as exc:
        reason = f"HTTP {exc.status}" if isinstance(exc, AriError) and exc.status else type(exc).__name__
        return None, f"not read: ARI unreachable now ({reason}); Asterisk is asked when a call arrives"
    finally:
        await ari.close()
    if fields is None:
        return (None, None), f"endpoint {name} not found in Asterisk"
    return desk_values(fields), "read now over ARI"


def shown(cfg: Config, device: DeviceRow, desk: tuple[str | None, str | None] | None) -> dict[str, Shown]:
    """Each routing value a call of `device` would use and where it comes from (the order of `calling.identity`).
    `desk` None: the desk endpoint was not read, so a value the device lacks is its desk endpoint's, when it has
    one, else the fallback named."""
    defaults = (cfg.routing.default_context, cfg.routing.default_callerid)
    out: dict[str, Shown] = {}
    for i, name in enumerate(("context", "callerid")):
        own = (device.context, device.callerid)[i]
        if own:
            out[name] = Shown(own, DEVICE)
            continue
        fallback = Shown(defaults[i], f"[routing] default_{name}") if defaults[i] else Shown(None, NO_ROUTE)
        if desk is not None and desk[i]:
            out[name] = Shown(desk[i], f"desk endpoint {device.desk_endpoint}")
        elif desk is None and pjsip_endpoint_name(device.desk_endpoint or "") is not None:
            out[name] = Shown(None, f"desk endpoint {device.desk_endpoint} when a call arrives, else {fallback.text()}")
        else:
            out[name] = fallback
    out["home"] = Shown(device.home, DEVICE) if device.home else Shown(cfg.routing.home, "[routing] home")
    return out


def routing_public(routing: dict[str, Shown], desk_note: str) -> dict[str, Any]:
    return {**{k: {"value": v.value, "from": v.source} for k, v in routing.items()}, "desk_endpoint_read": desk_note}
