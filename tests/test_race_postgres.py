"""Two processes race to spend the same key on one PostgreSQL database: exactly one wins, every round."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
from collections.abc import AsyncIterator

import pytest
from support.pg import migrated_pg_database, pg_admin_url

from asterisk_securelink.core.slk1 import Direction
from asterisk_securelink.store.store import Store

pytestmark = pytest.mark.skipif(pg_admin_url() is None, reason="SECURELINK_TEST_DATABASE_URL not set")
ROUNDS = 30


def _racer(url: str, device_id: int, name: str, barrier: mp.synchronize.Barrier, out: mp.Queue, how: str) -> None:  # type: ignore[type-arg]
    async def go() -> list[bool]:
        store = Store.from_url(url, pool_size=1)
        wins = []
        try:
            async with store.engine.connect():  # warm the connection before the start line
                pass
            for epoch in range(ROUNDS):
                barrier.wait()
                if how == "check_and_spend":  # the verifier's one-statement path (store/spend.py)
                    r = await store.check_and_spend(device_id, "race", Direction.INBOUND, epoch, f"{name}-{epoch}", 0)
                    wins.append(r.spent)
                else:
                    wins.append(await store.spend(device_id, Direction.INBOUND, epoch, f"{name}-{epoch}", 0))
        finally:
            await store.close()
        return wins

    out.put((name, asyncio.run(go())))


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with migrated_pg_database() as url:
        yield url


@pytest.mark.parametrize("how", ["spend", "check_and_spend"])
async def test_two_processes_exactly_one_wins(pg_url: str, how: str) -> None:
    store = Store.from_url(pg_url)
    try:
        device = await store.add_device("A", "1555", None, "race", "t")
    finally:
        await store.close()
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_racer, args=(pg_url, device.id, n, barrier, out, how)) for n in ("node-a", "node-b")]
    for p in procs:
        p.start()
    results = dict(await asyncio.to_thread(lambda: [out.get(timeout=120) for _ in procs]))
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    a, b = results["node-a"], results["node-b"]
    assert len(a) == len(b) == ROUNDS
    for epoch in range(ROUNDS):
        assert a[epoch] != b[epoch], f"epoch {epoch}: node-a={a[epoch]} node-b={b[epoch]}"
    assert os.environ.get("SECURELINK_TEST_DATABASE_URL")
