"""A device's routing identity (CALLING.md, "Routing identity"): the dialplan context its calls are placed in and the
caller ID a called party sees, each from the first place that has one:

1. the device itself (`device set --context --callerid`);
2. its desk endpoint's `context` / `callerid` (`PJSIP_ENDPOINT(...)`, read through ARI's view of res_pjsip's
   configuration when the call arrives; an empty value is unset);
3. `[routing] default_context` / `default_callerid`;

otherwise there is none, and the call gets verdict `no_route` (never a guess). A desk endpoint that cannot be read
(ARI fails) is not skipped: the resolution fails, and the caller fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from asterisk_securelink.config import RoutingConfig
from asterisk_securelink.core.callerid import check_context, parse_callerid
from asterisk_securelink.outbound.hooks import pjsip_endpoint_name

DEVICE = "device"
DEFAULT = "[routing] default"


class Routable(Protocol):
    """What routing reads of a device (`store.store.DeviceRow`, or the row the spend read: `SpendDevice`)."""

    @property
    def desk_endpoint(self) -> str | None: ...

    @property
    def context(self) -> str | None: ...

    @property
    def callerid(self) -> str | None: ...

    @property
    def home(self) -> str | None: ...


class EndpointConfig(Protocol):
    """res_pjsip's configuration as ARI shows it (`AriRest.get_config_object`)."""

    async def get_config_object(self, config_class: str, object_type: str, object_id: str) -> dict[str, str] | None: ...


@dataclass(frozen=True)
class Identity:
    context: str
    callerid: str  # as CALLERID(all) takes it
    context_from: str  # "device", "desk endpoint PJSIP/1001", "[routing] default"
    callerid_from: str


@dataclass(frozen=True)
class Sources:
    """Every candidate value, for `securelink device show` (None: that place has none, or was not read)."""

    device: tuple[str | None, str | None]
    desk: tuple[str | None, str | None] | None  # None: no desk endpoint, or not read
    desk_name: str | None
    default: tuple[str | None, str | None]

    def pick(self) -> Identity | None:
        context = self._first(0)
        callerid = self._first(1)
        if context is None or callerid is None:
            return None
        return Identity(context[0], callerid[0], context[1], callerid[1])

    def _first(self, i: int) -> tuple[str, str] | None:
        desk = self.desk[i] if self.desk is not None else None
        places = ((self.device[i], DEVICE), (desk, f"desk endpoint {self.desk_name}"), (self.default[i], DEFAULT))
        for value, where in places:
            if value:
                return value, where
        return None


def desk_values(fields: dict[str, str] | None) -> tuple[str | None, str | None]:
    """An endpoint's context and caller ID; values Asterisk would not take from us count as unset."""
    if not fields:
        return None, None
    context, callerid = fields.get("context", "").strip(), fields.get("callerid", "").strip()
    try:
        context = check_context(context) if context else ""
    except ValueError:
        context = ""
    try:
        callerid = str(parse_callerid(callerid)) if callerid else ""
    except ValueError:
        callerid = ""
    return context or None, callerid or None


class RoutingIdentity:
    """Resolves identities; `endpoints` None: no ARI (a desk endpoint is then not consulted)."""

    def __init__(self, routing: RoutingConfig, endpoints: EndpointConfig | None) -> None:
        self.routing = routing
        self.endpoints = endpoints

    async def sources(self, device: Routable) -> Sources:
        desk_name = pjsip_endpoint_name(device.desk_endpoint or "")
        desk = None
        needs_desk = not (device.context and device.callerid)
        if desk_name is not None and self.endpoints is not None and needs_desk:
            desk = desk_values(await self.endpoints.get_config_object("res_pjsip", "endpoint", desk_name))
        default = (self.routing.default_context or None, self.routing.default_callerid or None)
        return Sources((device.context, device.callerid), desk, device.desk_endpoint, default)

    async def resolve(self, device: Routable) -> Identity | None:
        return (await self.sources(device)).pick()
