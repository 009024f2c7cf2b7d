#!/usr/bin/env python3
"""What a hot SQLite transaction costs the event loop, with and without SQLAlchemy's pool check-out, side by side.

`store.driver.run_on_driver` runs a transaction as one function on aiosqlite's thread. It used to check the engine's
one connection out of the pool for each (SQLAlchemy's check-out and check-in); while that connection is idle it now
queues the function on its thread directly (`store.driver.keep_idle`). This measures both ways in one run,
interleaved (the machine's noise falls on both alike), on a migrated database in a temporary directory:

- `empty`: a function that does nothing: the hand-off alone;
- `spend`: `store.spend.check_and_spend` of a fresh key (BEGIN IMMEDIATE, read, conditional UPDATE, a durable commit).

`checked out` takes the idle connection's tracker away, so every call goes through the pool as before. Calls are
spaced by `--gap` ms, as calls at a modest rate are (the driver's thread goes to sleep between them).

    python3 bench/sqlite_handoff.py [--calls 400] [--gap 10] [--out bench/results/sqlite-handoff-DATE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import insert  # noqa: E402

from asterisk_securelink.core.slk1 import Direction  # noqa: E402
from asterisk_securelink.runner import SWITCH_INTERVAL  # noqa: E402
from asterisk_securelink.store import driver  # noqa: E402
from asterisk_securelink.store.migrations import upgrade  # noqa: E402
from asterisk_securelink.store.models import Device, KeyEpoch  # noqa: E402
from asterisk_securelink.store.spend import check_and_spend  # noqa: E402
from asterisk_securelink.store.store import Store  # noqa: E402


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(len(s) * p))] * 1000, 3)


async def spendable_store(directory: str, devices: int) -> Store:
    """A migrated SQLite store in `directory` with devices 1..`devices`, each registered with key id `k<id>` and no
    epoch spent yet (what `check_and_spend` of epoch 5 spends). Also used by `bench/group_commit.py`."""
    url = f"sqlite+aiosqlite:///{Path(directory) / 'bench.sqlite3'}"
    await upgrade(url)
    store = Store.from_url(url)
    now = datetime.now(UTC)
    async with store.engine.begin() as conn:
        await conn.execute(insert(Device), [
            {"id": i, "display_name": f"b{i}", "mobile_number": f"+1888{i:07d}", "desk_endpoint": None,
             "key_id": f"k{i}", "status": "registered", "fork_enabled": True, "created_at": now,
             "updated_at": now, "registered_at": now} for i in range(1, devices + 1)])  # fmt: skip
        await conn.execute(insert(KeyEpoch), [
            {"device_id": i, "direction": d.value, "last_epoch": -1, "drift": 0, "updated_at": now}
            for i in range(1, devices + 1) for d in Direction])  # fmt: skip
    return store


async def measure(calls: int, gap_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="securelink-handoff-") as tmp:
        store = await spendable_store(tmp, 2 * calls)
        try:
            sync = store.engine.sync_engine
            idle = getattr(sync, driver._IDLE)
            devices = iter(range(1, 2 * calls + 1))

            async def empty() -> None:
                await driver.run_on_driver(store.engine, lambda _db: None)

            async def spend() -> None:
                d = next(devices)
                got = await check_and_spend(store.engine, d, f"k{d}", Direction.INBOUND, 5, f"call-{d}", 0)
                assert got.spent

            out: dict[str, dict[str, list[float]]] = {}
            for _ in range(calls):
                for way in ("checked out", "idle"):
                    setattr(sync, driver._IDLE, idle if way == "idle" else None)
                    for name, op in (("empty", empty), ("spend", spend)):
                        out.setdefault(f"{name}, {way}", {"wall": [], "cpu": []})
                        await _one(op, out[f"{name}, {way}"])
                        await asyncio.sleep(gap_s)
            setattr(sync, driver._IDLE, idle)
        finally:
            await store.close()
    return {
        k: {"p50_ms": pct(v["wall"], 0.5), "p90_ms": pct(v["wall"], 0.9), "loop_cpu_p50_ms": pct(v["cpu"], 0.5)}
        for k, v in out.items()
    }


async def _one(op: Callable[[], Awaitable[None]], into: dict[str, list[float]]) -> None:
    wall, cpu = time.perf_counter(), time.thread_time()
    await op()
    into["wall"].append(time.perf_counter() - wall)
    into["cpu"].append(time.thread_time() - cpu)  # the loop's thread only (aiosqlite's is another)


def run_and_report(measure: Coroutine[Any, Any, Any], out: Path | None) -> None:
    """Run `measure` on uvloop with `securelink run`'s switch interval; print its results with the date, the machine
    and the command line, and write them to `out` too. Also used by `bench/group_commit.py`."""
    sys.setswitchinterval(SWITCH_INTERVAL)  # as `securelink run` has it
    import uvloop

    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {platform.platform()}",
        "argv": sys.argv[1:],
        "results": uvloop.run(measure),
    }
    print(json.dumps(result, indent=1))
    if out:
        out.write_text(json.dumps(result, indent=1) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=400, help="calls of each kind, each way")
    ap.add_argument("--gap", type=float, default=10.0, help="ms between calls")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    run_and_report(measure(args.calls, args.gap / 1000), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
