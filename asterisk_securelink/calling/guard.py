"""The guard against toll fraud (CALLING.md, "The guard"), decided before anything is dialled: the destination rules
(`core.tollguard`, pure), then the device's counts in the shared store (`store.routes.RouteLeases`): at most
`max_concurrent` call-through and callback calls at once and `max_per_day` in a rolling 24 h, each call holding a
lease until it ends. A count that cannot be read refuses the call (fail closed)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from asterisk_securelink.config import RoutingConfig
from asterisk_securelink.core.tollguard import check_destination
from asterisk_securelink.core.verdicts import Verdict
from asterisk_securelink.store.routes import Reservation

log = logging.getLogger(__name__)

Kind = Literal["through", "callback"]


class Leases(Protocol):
    """The counts in the shared store (`store.routes.RouteLeases`)."""

    async def reserve(
        self, device_id: int, call_id: str, kind: str, now_ms: int, *, max_concurrent: int, max_per_day: int
    ) -> Reservation: ...

    async def release(self, call_id: str) -> bool: ...


@dataclass(frozen=True)
class Decision:
    verdict: Verdict | None  # None: go on
    detail: dict[str, Any] = field(default_factory=dict)
    retry_after_s: int = 0

    @property
    def ok(self) -> bool:
        return self.verdict is None


GO = Decision(None)


class RouteGuard:
    def __init__(self, routing: RoutingConfig, leases: Leases) -> None:
        self.routing = routing
        self.leases = leases

    def check(self, destination: str) -> Decision:
        """The destination rules alone (no count): what the device API answers before it places anything."""
        refusal = check_destination(destination, self.routing)
        return GO if refusal is None else Decision(Verdict.DENIED, refusal.detail())

    async def admit(self, device_id: int, call_id: str, destination: str | None, kind: Kind, now_ms: int) -> Decision:
        """The rules for `destination` (None: the device's home extension, not subject to them), then a lease.
        On GO the call holds a lease until `release(call_id)`."""
        if destination is not None:
            ruled = self.check(destination)
            if not ruled.ok:
                return ruled
        r = self.routing
        try:
            got = await self.leases.reserve(device_id, call_id, kind, now_ms, max_concurrent=r.max_concurrent,
                                            max_per_day=r.max_per_day)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a count that cannot be read refuses the call
            log.error("guard: the counts of device %s cannot be read (%s); refused", device_id, type(exc).__name__)
            return Decision(Verdict.ERROR, {"reason": "guard unavailable"})
        if not got.ok:
            reason = "max_per_day" if got.limit == "daily" else "max_concurrent"
            return Decision(Verdict.RATE_LIMITED, {"reason": reason}, got.retry_after_s)
        return GO

    async def release(self, call_id: str) -> None:
        try:
            await self.leases.release(call_id)
        except Exception as exc:  # noqa: BLE001 - a lease not released goes stale by itself (store.routes)
            log.warning("guard: lease of call %s not released (%s)", call_id, type(exc).__name__)
