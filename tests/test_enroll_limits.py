"""M2 (issue 22): enrollment attempts counted per client network in the shared store, on SQLite and PostgreSQL:
decided and counted in one statement (concurrent attempts on two nodes cannot race past the limit), seen by every
node and after a restart, successes given back, no global limit, rows purged once their allowance is whole."""

from __future__ import annotations

import asyncio

from asterisk_securelink.store.enroll_limits import EnrollLimits
from asterisk_securelink.store.lanes import lanes_for
from asterisk_securelink.store.store import Store

NOW = 1_790_000_000_000


def limits(store: Store, clock: list[int], per_network: int = 10) -> EnrollLimits:
    return EnrollLimits(lanes_for(store.engine), store.engine.dialect.name, per_network=per_network, window_s=600,
                        clock_ms=lambda: clock[0])  # fmt: skip


async def test_two_nodes_racing_200_attempts_let_exactly_the_limit_through(db_url: str) -> None:
    clock = [NOW]
    a, b = Store.from_url(db_url), Store.from_url(db_url)
    try:
        la, lb = limits(a, clock), limits(b, clock)
        results = await asyncio.gather(*(lim.attempt("203.0.113.9/32") for lim in (la, lb) * 100))
        assert results.count(True) == 10
        assert await la.attempt("198.51.100.1/32")  # another network is not affected: no global limit
        clock[0] += 59_999
        assert not await lb.attempt("203.0.113.9/32")
        clock[0] += 1  # one attempt drains every window / limit = 60 s
        assert await lb.attempt("203.0.113.9/32")
        assert not await la.attempt("203.0.113.9/32")
    finally:
        await a.close()
        await b.close()


async def test_counts_survive_a_restart_and_a_success_is_given_back(db_url: str) -> None:
    clock = [NOW]
    store = Store.from_url(db_url)
    try:
        lim = limits(store, clock, per_network=3)
        assert [await lim.attempt("n") for _ in range(3)] == [True] * 3
        await lim.succeeded("n")  # the third was a good code
    finally:
        await store.close()
    store = Store.from_url(db_url)  # a restarted node
    try:
        lim = limits(store, clock, per_network=3)
        assert await lim.attempt("n")
        assert not await lim.attempt("n")
        assert await lim.purge(NOW) == 0  # its allowance is not whole yet
        assert await lim.purge(NOW + 600_001) == 1
        assert await lim.attempt("n")
    finally:
        await store.close()
