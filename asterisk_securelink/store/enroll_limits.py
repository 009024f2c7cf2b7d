"""Enrollment attempts per client network in the shared store (`deviceapi.limits.RedeemLimits`; issue 22, M2).

Every node and every restart sees the same counts. The count is the generic cell rate algorithm: each network has
one row holding `tat_ms`, the time by which all its counted attempts have drained at `per_network / window`. An
attempt is allowed while `tat_ms - now <= window - window / per_network` (so `per_network` attempts at once, then one
each `window / per_network`: the same rate as "`per_network` in any `window`"), and the decision and the count are
one statement (INSERT .. ON CONFLICT DO UPDATE .. WHERE): 200 concurrent attempts on any number of nodes let exactly
`per_network` through. A redeem that succeeded gives its attempt back (`succeeded`). Rows whose allowance is whole
again are deleted by `purge`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import BigInteger, bindparam, case, delete, update
from sqlalchemy.dialects import postgresql, sqlite

from asterisk_securelink.deviceapi.limits import PER_NETWORK, WINDOW
from asterisk_securelink.store.api_models import EnrollLimit
from asterisk_securelink.store.lanes import Lanes, rowcount


class EnrollLimits:
    """`RedeemLimits` over the `enroll_limits` table. `clock_ms`: unix milliseconds."""

    def __init__(
        self,
        lanes: Lanes,
        dialect: str,
        *,
        per_network: int = PER_NETWORK,
        window_s: float = WINDOW,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        if per_network < 1 or window_s <= 0:
            raise ValueError("limits must be positive")
        self._lanes = lanes
        self.clock_ms = clock_ms
        self.interval_ms = max(1, int(window_s * 1000) // per_network)  # one attempt drains in this time
        self.burst_ms = self.interval_ms * (per_network - 1)  # how far ahead tat may be for one more attempt
        upsert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
        now = bindparam("now", type_=BigInteger)
        stmt = upsert(EnrollLimit).values(network=bindparam("network"), tat_ms=now + self.interval_ms)
        drained = case((EnrollLimit.tat_ms > now, EnrollLimit.tat_ms), else_=now)
        self._attempt = stmt.on_conflict_do_update(
            index_elements=[EnrollLimit.network],
            set_={"tat_ms": drained + self.interval_ms},
            where=EnrollLimit.tat_ms - now <= self.burst_ms,
        )
        self._give_back = (
            update(EnrollLimit)
            .where(EnrollLimit.network == bindparam("net"))
            .values(tat_ms=EnrollLimit.tat_ms - self.interval_ms)
        )

    async def attempt(self, network: str) -> bool:
        async with self._lanes.connection() as c:
            result = await c.execute(self._attempt, {"network": network, "now": self.clock_ms()})
        return rowcount(result) == 1

    async def succeeded(self, network: str) -> None:
        async with self._lanes.connection() as c:
            await c.execute(self._give_back, {"net": network})

    async def purge(self, now_ms: int) -> int:
        """Forget networks whose allowance is whole again."""
        async with self._lanes.connection() as c:
            return rowcount(await c.execute(delete(EnrollLimit).where(EnrollLimit.tat_ms < now_ms)))
