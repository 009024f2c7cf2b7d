#!/usr/bin/env python3
"""Start-up and index rolls at scale: how long `securelink run` takes to be ready, and how long a call waits meanwhile.

One run, side by side for OLD (the index code of `--baseline-rev`, loaded from git) and NEW (this checkout), on one
real SQLite file holding `--devices` registered devices (SLK1 1.1 defaults: look_behind 1, look_ahead 1, three live
epochs), in alternating order, `--repeat` times (medians reported):

  start      `VerificationService.start()` until it returns (ready: calls are answered), with the event-loop lag a probe
             coroutine sees (it sleeps 1 ms in a loop; lag = how late it wakes: what a call arriving then would wait)
  rest       NEW only: the live epochs `start` left for later, built as `keep_fresh` does right after start
  sync       a full device reload (`sync_devices(full=True)`, nothing changed) with the index built: what a restart
             of the sync, or `device rotate --all`'s reload, costs the loop
  refresh    a full rebuild of the three live tables (tables dropped, `refresh()`)
  roll       an epoch roll: `refresh()` at the next epoch (one new table)

Lags are max and p99 of the probe's wake-ups during the phase; `idle` is the probe with nothing else running.

Usage:
    python bench/startup.py [--devices 100000] [--repeat 3] [--json bench/results/startup-2026-11-29.json]

Progress goes to stderr; a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from identify import MASTER, T_MS, TRUNKS, Clock, populate

from asterisk_securelink import config
from asterisk_securelink.audit import AuditWriter
from asterisk_securelink.inbound.guard import GuessGuard
from asterisk_securelink.inbound.service import VerificationService
from asterisk_securelink.livekeys import LiveKeys
from asterisk_securelink.store.lockout import LockoutStore
from asterisk_securelink.store.migrations import upgrade
from asterisk_securelink.store.store import Store

ROOT = Path(__file__).resolve().parent.parent
BASELINE_REV = "76c2324"  # the last commit before issue 13 goal 4 (start and roll at 100k devices)
PROBE_S = 0.001
_started = time.perf_counter()


def progress(msg: str) -> None:
    print(f"[{time.perf_counter() - _started:7.1f}s] {msg}", file=sys.stderr, flush=True)


def load_baseline(rev: str, into: Path) -> ModuleType:
    """The baseline's livekeys module, importing the baseline's keyindex (both from `git show`)."""
    for name, path in (
        ("keyindex", "asterisk_securelink/core/keyindex.py"),
        ("livekeys", "asterisk_securelink/livekeys.py"),
    ):
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True, capture_output=True,
                              text=True).stdout  # fmt: skip
        text = text.replace("from asterisk_securelink.core.keyindex import", "from baseline_keyindex import")
        (into / f"baseline_{name}.py").write_text(text)
    sys.path.insert(0, str(into))
    spec = importlib.util.spec_from_file_location("baseline_livekeys", into / "baseline_livekeys.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Probe:
    """Sleeps PROBE_S in a loop on the event loop and records how late each wake-up is."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(PROBE_S)
            self.lags.append(time.perf_counter() - t - PROBE_S)

    async def measure(self, phase: Callable[[], Awaitable[Any]]) -> dict[str, float]:
        self.lags = []
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.01)
        self.lags = []
        t = time.perf_counter()
        await phase()
        wall = time.perf_counter() - t
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return {"wall_s": wall, **lag_summary(self.lags)}


def lag_summary(lags: Sequence[float]) -> dict[str, float]:
    if not lags:
        return {"ticks": 0, "lag_max_ms": math.nan, "lag_p99_ms": math.nan}
    s = sorted(lags)
    p99 = s[max(0, math.ceil(0.99 * len(s)) - 1)]
    return {"ticks": len(s), "lag_max_ms": s[-1] * 1000, "lag_p99_ms": p99 * 1000}


async def one_run(variant: str, url: str, workdir: Path, baseline: ModuleType) -> dict[str, Any]:
    store = Store.from_url(url)
    try:
        keys = {"look_behind": 1, "look_ahead": 1, "trunk_prefixes": list(TRUNKS)}
        cfg = config.build({"keys": keys}, {}, workdir)
        live = baseline.LiveKeys if variant == "old" else LiveKeys
        lk = live(cfg, store, MASTER, clock_ms=Clock(T_MS))
        strength = lambda: (lk.index.fmt.size, lk.window.width, len(lk.index))  # noqa: E731 - OLD has no method
        guard = GuessGuard(cfg.lockout, LockoutStore(store), strength)
        svc = VerificationService(cfg, store, lk, guard, AuditWriter(store.audit_many))
        probe = Probe()
        out: dict[str, Any] = {"idle": await probe.measure(lambda: asyncio.sleep(0.3))}
        out["start"] = await probe.measure(svc.start)
        out["start"]["epochs_at_ready"] = len(lk.index.epochs)
        out["rest"] = await probe.measure(lk.refresh)  # NEW: what keep_fresh builds first; OLD: nothing left
        assert len(lk.index.epochs) == 3
        out["sync"] = await probe.measure(lambda: lk.sync_devices(full=True))

        async def full_refresh() -> None:
            lk.index._by_epoch = {}
            await lk.refresh()

        out["refresh"] = await probe.measure(full_refresh)
        current = lk.index.current
        assert current is not None
        out["roll"] = await probe.measure(lambda: lk.refresh(lk.epoch_start_ms(current + 1)))
        assert len(lk.index) > 0 and len(lk.index.epochs) == 3
        return out
    finally:
        await store.close()


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for phase in runs[0]:
        out[phase] = {k: statistics.median(r[phase][k] for r in runs) for k in runs[0][phase]}
    return out


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
    }


def markdown(res: dict[str, Any]) -> str:
    old, new = res["old"]["median"], res["new"]["median"]
    rows = [
        "| phase | OLD wall | NEW wall | OLD lag max / p99 | NEW lag max / p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for phase in ("idle", "start", "rest", "sync", "refresh", "roll"):
        o, n = old[phase], new[phase]
        rows.append(
            f"| {phase} | {o['wall_s']:.2f} s | {n['wall_s']:.2f} s | {o['lag_max_ms']:.1f} / {o['lag_p99_ms']:.1f} ms "
            f"| {n['lag_max_ms']:.1f} / {n['lag_p99_ms']:.1f} ms |"
        )
    ready_old = old["start"]["wall_s"]
    ready_new = new["start"]["wall_s"]
    rows.append("")
    rows.append(
        f"{res['devices']} devices, median of {res['repeat']} runs each (alternating). Ready: OLD {ready_old:.2f} s "
        f"({old['start']['epochs_at_ready']:.0f} tables), NEW {ready_new:.2f} s ({new['start']['epochs_at_ready']:.0f} "
        f"table, the other two {new['rest']['wall_s']:.2f} s later): {ready_old / ready_new:.1f}x."
    )
    return "\n".join(rows)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    workdir = args.db_dir or Path(tempfile.mkdtemp(prefix="securelink-startup-"))
    db = workdir / f"startup-{args.devices}.sqlite3"
    url = f"sqlite+aiosqlite:///{db}"
    if not db.exists():
        progress(f"migrating and populating {args.devices} devices in {db}")
        await upgrade(url)
        store = Store.from_url(url)
        try:
            await populate(store, args.devices)
        finally:
            await store.close()
    with tempfile.TemporaryDirectory() as tmp:
        baseline = load_baseline(args.baseline_rev, Path(tmp))
        runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
        for i in range(args.repeat):
            for variant in ("old", "new") if i % 2 == 0 else ("new", "old"):
                progress(f"run {i + 1}/{args.repeat}: {variant}")
                runs[variant].append(await one_run(variant, url, workdir, baseline))
    if not args.db_dir:
        db.unlink(missing_ok=True)
    return {
        "bench": "startup",
        "devices": args.devices,
        "repeat": args.repeat,
        "baseline_rev": args.baseline_rev,
        "database": "sqlite (file, WAL)",
        "machine": machine(),
        "old": {"median": median_of(runs["old"]), "runs": runs["old"]},
        "new": {"median": median_of(runs["new"]), "runs": runs["new"]},
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision whose index code is OLD")
    ap.add_argument("--db-dir", type=Path, default=None, help="keep the SQLite file here (reused when present)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON to this path")
    ap.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after the imports (see the report)")
    args = ap.parse_args(argv)
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    res = asyncio.run(main_async(args))
    res["gc_freeze"] = args.gc_freeze
    print(markdown(res))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
