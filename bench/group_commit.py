#!/usr/bin/env python3
"""Spends arriving together on SQLite, one transaction each or as a group commit, side by side.

`store.spend.check_and_spend` on SQLite runs its transaction (BEGIN IMMEDIATE, read, conditional UPDATE, a durable
commit) on aiosqlite's one thread. `alone`: each spend its own transaction and its own wait for the disk
(`store.driver.run_on_driver`, as before); `together`: spends that arrive while one is written share the next
transaction (`store.driver.run_together`). Spends arrive at `--rates` per second, evenly spaced, each a fresh key of
its own device, on a migrated database in a temporary directory; both ways run in turn at each rate (alone,
together, together, alone), so the machine's noise falls on both alike.

Reported per rate and way: latency p50/p99 of one spend, the rate achieved, commits per spend, and the process's CPU
per spend (the loop's thread and aiosqlite's).

    python3 bench/group_commit.py [--spends 1000] [--rates 100,300,1000] [--out bench/results/group-commit-DATE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlite_handoff import pct, run_and_report, spendable_store  # noqa: E402 - bench/, the script's own directory

from asterisk_securelink.core.slk1 import Direction  # noqa: E402
from asterisk_securelink.store import driver, spend  # noqa: E402
from asterisk_securelink.store.store import Store  # noqa: E402

WAYS = {"alone": driver.run_on_driver, "together": driver.run_together}
ORDER = ("alone", "together", "together", "alone")


async def measure(spends: int, rates: list[float]) -> dict[str, Any]:
    devices_needed = spends * len(rates) * len(ORDER)
    with tempfile.TemporaryDirectory(prefix="securelink-group-") as tmp:
        store = await spendable_store(tmp, devices_needed)
        try:
            commits: list[int] = []
            await driver.run_on_driver(
                store.engine, lambda db: db.set_trace_callback(lambda s: s == "COMMIT" and commits.append(1))
            )
            devices = iter(range(1, devices_needed + 1))
            runs: list[dict[str, Any]] = []
            for rate in rates:
                for way in ORDER:
                    spend.run_together = WAYS[way]  # type: ignore[attr-defined]
                    runs.append({"rate": rate, "way": way, **await _run(store, devices, spends, rate, commits)})
            spend.run_together = driver.run_together  # type: ignore[attr-defined]
        finally:
            await store.close()
    return {"runs": runs}


async def _run(store: Store, devices: Any, n: int, rate: float, commits: list[int]) -> dict[str, Any]:
    latencies: list[float] = []

    async def one(d: int) -> None:
        t = time.perf_counter()
        got = await spend.check_and_spend(store.engine, d, f"k{d}", Direction.INBOUND, 5, f"call-{d}", 0)
        latencies.append(time.perf_counter() - t)
        assert got.spent

    before, cpu, start = len(commits), time.process_time(), time.perf_counter()
    tasks = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(next(devices))))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return {
        "p50_ms": pct(latencies, 0.5),
        "p99_ms": pct(latencies, 0.99),
        "achieved_per_s": round(n / elapsed, 1),
        "commits_per_spend": round((len(commits) - before) / n, 3),
        "cpu_ms_per_spend": round((time.process_time() - cpu) * 1000 / n, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spends", type=int, default=1000, help="spends per rate, each way, each turn")
    ap.add_argument("--rates", default="100,300,1000", help="offered spends per second, comma separated")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    run_and_report(measure(args.spends, [float(r) for r in args.rates.split(",")]), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
