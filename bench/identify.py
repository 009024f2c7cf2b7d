#!/usr/bin/env python3
"""Identification cost against population size: our KeyIndex, a naive per-device scan, and full verify().

One run measures, side by side for every size in `--sizes`:

  SLK1 1.1 defaults throughout: look_behind 1, look_ahead 1 (three live epochs), keys indexed by their significant
  part, trunk prefixes `TRUNKS` configured.

  (a) KeyIndex: one `lookup()` + `confirm()` (exactly what `LiveKeys.candidates` does) for hits (the key as
      rendered, and in another form: behind a trunk prefix) and for misses (random 10-digit numbers); the initial
      build of the three live epoch tables; `advance()` (missing + build + install) rolling one epoch (one new
      table); and the service's refresh path (snapshot + build in a thread + install with patch, as
      `LiveKeys.refresh` does).
  (b) the naive, pyotp-style approach: for every device render its key for the live windows (previous, current,
      next) and compare it in constant time; first match wins (hits stop early, misses scan everything).
  (c) `VerificationService.verify()` on a real, migrated SQLite database holding N registered devices: admitted
      verifications (each on a different device: no replays) and mismatches, with the time spent in each store
      call (check_and_spend, audit_many, list_devices) broken out.
  memory: tracemalloc and RSS of an index of N devices (derived secrets + 3 epoch tables), each size in a fresh
      child process so freed memory of a previous size is not reused.

Usage:
    python bench/identify.py [--sizes 1000,10000,100000 | --quick] [--json results.json]

Progress goes to stderr; a markdown report to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import math
import os
import platform
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from asterisk_securelink import config
from asterisk_securelink.app import verifier
from asterisk_securelink.audit import AuditWriter
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.keyindex import KeyIndex, Window
from asterisk_securelink.core.numbers import key_digits
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret, epoch_at_ms
from asterisk_securelink.core.verdicts import Verdict
from asterisk_securelink.inbound.service import VerifyRequest
from asterisk_securelink.store.migrations import upgrade
from asterisk_securelink.store.models import Device, KeyEpoch
from asterisk_securelink.store.store import Store

MASTER = bytes(range(32))
T_MS = 1_790_000_000_000  # a fixed "now" in unix ms: epoch 59666666 at period 30
PERIOD = 30
FORMAT = "XXXXXXXXXX"  # the default inbound format: 10 digits, 10^10 keys
LOOK_BEHIND, LOOK_AHEAD = 1, 1  # SLK1 1.1 defaults: three live epochs
TRUNKS = ("0", "00", "011", "1")  # keys.trunk_prefixes: every lookup also runs the prefix rule
OTHER_FORM = "011"  # a hit "in another form": the key behind this trunk prefix
DEFAULT_SIZES = (1000, 10_000, 100_000)
QUICK_SIZES = (1000, 10_000)
NAIVE_KEY_BUDGET = 4_000_000  # key derivations per naive miss series at one size; bounds the run time
INSERT_CHUNK = 5000

_started = time.perf_counter()


def window() -> Window:
    return Window(PERIOD, 0, LOOK_BEHIND, LOOK_AHEAD)


def new_index() -> KeyIndex:
    return KeyIndex(Direction.INBOUND, NumberFormat(FORMAT), window(), TRUNKS)


def advance(idx: KeyIndex, current: int) -> int:
    """Make exactly the live epochs of `current` present, synchronously. Returns how many epochs were built."""
    missing = idx.missing(current)
    idx.install(current, {e: idx.build(e) for e in missing})
    return len(missing)


def progress(msg: str) -> None:
    print(f"[{time.perf_counter() - _started:7.1f}s] {msg}", file=sys.stderr, flush=True)


def key_id(i: int) -> str:
    return f"bench-{i:07d}"


def random_number(rng: random.Random) -> str:
    return f"{rng.randrange(10**10):010d}"


def percentile(samples_ns: Sequence[int], q: float) -> float:
    """Nearest-rank percentile, in microseconds (with few samples p99 is the maximum)."""
    s = sorted(samples_ns)
    return s[max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))] / 1000.0


def summary(samples_ns: Sequence[int]) -> dict[str, float]:
    return {
        "n": len(samples_ns),
        "p50_us": percentile(samples_ns, 0.50),
        "p99_us": percentile(samples_ns, 0.99),
        "mean_us": sum(samples_ns) / len(samples_ns) / 1000.0,
        "max_us": max(samples_ns) / 1000.0,
    }


def fmt_us(us: float) -> str:
    if us < 1000:
        return f"{us:.1f} µs"
    if us < 1_000_000:
        return f"{us / 1000:.2f} ms"
    return f"{us / 1_000_000:.2f} s"


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def warm_cpu(seconds: float) -> int:
    """Busy-run the key derivation before measuring: the first seconds of a run were measurably slower (VM clock
    ramp-up), which skewed the smallest size."""
    fmt = NumberFormat(FORMAT)
    secret = device_secret(MASTER, key_id(0))
    deadline = time.perf_counter() + seconds
    done = 0
    while time.perf_counter() < deadline:
        for e in range(1000):
            derive_key(secret, Direction.INBOUND, e, fmt)
        done += 1000
    return done


def derive_secrets(n: int) -> dict[int, bytes]:
    return {i: device_secret(MASTER, key_id(i)) for i in range(1, n + 1)}


# -- (a) the key index --------------------------------------------------------------------------------------------
def bench_index(n: int, secrets: dict[int, bytes], rng: random.Random, samples: int) -> dict[str, Any]:
    idx = new_index()
    for i, s in secrets.items():
        idx.set_device(i, s)
    current = epoch_at_ms(T_MS, PERIOD)

    t = time.perf_counter()
    advance(idx, current)
    initial_build_s = time.perf_counter() - t

    rolls = 5 if n <= 10_000 else 3
    roll_s: list[float] = []
    for _ in range(rolls):
        t = time.perf_counter()
        built = advance(idx, idx.current + 1 if idx.current is not None else current)
        roll_s.append(time.perf_counter() - t)
        assert built == 1

    # the service's path (VerificationService.refresh): snapshot, build from it, install with patching
    refresh_s: list[float] = []
    patch_s: list[float] = []
    for _ in range(rolls):
        assert idx.current is not None
        nxt = idx.current + 1
        t = time.perf_counter()
        snap = idx.snapshot()
        tables = {e: idx.build(e, snap) for e in idx.missing(nxt)}
        t_install = time.perf_counter()
        idx.install(nxt, tables, snap)
        done = time.perf_counter()
        refresh_s.append(done - t)
        patch_s.append(done - t_install)

    assert idx.current is not None
    now = idx.current
    ids = list(secrets)

    def identify(digits: str) -> list[int]:
        return [c.device_id for c in idx.lookup(digits) if idx.confirm(c, digits)]

    for _ in range(500):  # warm-up, both paths
        identify(random_number(rng))
        identify(idx.key_for(secrets[rng.choice(ids)], now))
    hit_ns: list[int] = []
    other_form_ns: list[int] = []
    lookup_only_ns: list[int] = []
    for _ in range(samples):
        d = rng.choice(ids)
        digits = idx.key_for(secrets[d], rng.choice(list(window().live_epochs(now))))
        t0 = time.perf_counter_ns()
        found = identify(digits)
        hit_ns.append(time.perf_counter_ns() - t0)
        assert d in found
        t0 = time.perf_counter_ns()
        found = identify(OTHER_FORM + digits)
        other_form_ns.append(time.perf_counter_ns() - t0)
        assert d in found
        t0 = time.perf_counter_ns()
        idx.lookup(digits)
        lookup_only_ns.append(time.perf_counter_ns() - t0)
    miss_ns: list[int] = []
    accidental = 0
    for _ in range(samples):
        digits = random_number(rng)
        t0 = time.perf_counter_ns()
        found = identify(digits)
        miss_ns.append(time.perf_counter_ns() - t0)
        accidental += bool(found)

    # refresh() builds the next table in a worker thread; the HMAC loop holds the GIL, so a call arriving meanwhile
    # waits for it. Measured: wake from a 1 ms sleep + identify one hit, minus the 1 ms, idle vs during a build.
    def wake_and_identify(digits: str) -> int:
        t0 = time.perf_counter_ns()
        time.sleep(0.001)
        identify(digits)
        return time.perf_counter_ns() - t0 - 1_000_000

    hit_digits = [idx.key_for(secrets[rng.choice(ids)], now) for _ in range(200)]
    idle_ns = [wake_and_identify(d) for d in hit_digits]
    busy_ns: list[int] = []
    snap = idx.snapshot()
    for _ in range(3 if n >= 100_000 else 20):
        worker = threading.Thread(target=idx.build, args=(now + 1, snap))
        worker.start()
        i = 0
        while worker.is_alive():
            busy_ns.append(wake_and_identify(hit_digits[i % len(hit_digits)]))
            i += 1
        worker.join()
    return {
        "hit": summary(hit_ns),
        "hit_other_form": summary(other_form_ns),
        "hit_lookup_only": summary(lookup_only_ns),
        "miss": summary(miss_ns),
        "miss_accidental_hits": accidental,
        "wake_identify_idle": summary(idle_ns),
        "wake_identify_during_build": summary(busy_ns),
        "initial_build_3_epochs_s": initial_build_s,
        "advance_one_epoch_s": sorted(roll_s)[len(roll_s) // 2],
        "advance_one_epoch_all_s": roll_s,
        "refresh_path_one_epoch_s": sorted(refresh_s)[len(refresh_s) // 2],
        "refresh_install_patch_s": sorted(patch_s)[len(patch_s) // 2],
        "period_s": PERIOD,
    }


# -- (b) naive per-device scan --------------------------------------------------------------------------------------
def bench_naive(n: int, secrets: dict[int, bytes], rng: random.Random, cap: int) -> dict[str, Any]:
    fmt = NumberFormat(FORMAT)
    current = epoch_at_ms(T_MS, PERIOD)
    windows = tuple(window().live_epochs(current))
    devices = list(secrets.items())

    def naive_verify(digits: str) -> int | None:
        presented = digits.encode()
        for device_id, secret in devices:
            for epoch in windows:
                expected = key_digits(derive_key(secret, Direction.INBOUND, epoch, fmt))
                if hmac.compare_digest(expected.encode(), presented):
                    return device_id
        return None

    samples = max(10, min(cap, NAIVE_KEY_BUDGET // (len(windows) * n)))
    hit_ns: list[int] = []
    for _ in range(samples):
        d = rng.randrange(1, n + 1)
        digits = key_digits(derive_key(secrets[d], Direction.INBOUND, rng.choice(windows), fmt))
        t0 = time.perf_counter_ns()
        found = naive_verify(digits)
        hit_ns.append(time.perf_counter_ns() - t0)
        assert found is not None
    miss_ns: list[int] = []
    for _ in range(samples):
        digits = random_number(rng)
        t0 = time.perf_counter_ns()
        naive_verify(digits)
        miss_ns.append(time.perf_counter_ns() - t0)
    return {"samples": samples, "hit": summary(hit_ns), "miss": summary(miss_ns)}


# -- (c) full verify() on SQLite ---------------------------------------------------------------------------------------
class Clock:
    def __init__(self, t_ms: int) -> None:
        self.t_ms = t_ms

    def __call__(self) -> int:
        return self.t_ms


class StoreTimer:
    """Wraps store methods on one Store instance to attribute verify() time to database calls."""

    NAMES = ("check_and_spend", "list_devices")  # audit rows are written in the background (AuditWriter)

    def __init__(self, store: Store) -> None:
        self.acc: dict[str, int] = dict.fromkeys(self.NAMES, 0)
        self.calls: dict[str, int] = dict.fromkeys(self.NAMES, 0)
        for name in self.NAMES:
            setattr(store, name, self._wrap(name, getattr(store, name)))

    def _wrap(self, name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.acc[name] += time.perf_counter_ns() - t0
                self.calls[name] += 1

        return timed

    def take(self) -> dict[str, int]:
        out = dict(self.acc)
        self.acc = dict.fromkeys(self.NAMES, 0)
        return out


async def populate(store: Store, n: int) -> None:
    old = datetime.now(UTC) - timedelta(hours=1)  # not "recently changed": incremental syncs stay empty
    async with store.engine.begin() as conn:
        for lo in range(1, n + 1, INSERT_CHUNK):
            hi = min(n, lo + INSERT_CHUNK - 1)
            await conn.execute(
                insert(Device),
                [
                    {
                        "id": i,
                        "display_name": f"Bench {i}",
                        "mobile_number": f"1555{i:07d}",
                        "desk_endpoint": None,
                        "key_id": key_id(i),
                        "status": "registered",
                        "fork_enabled": True,
                        "created_at": old,
                        "updated_at": old,
                        "registered_at": old,
                    }
                    for i in range(lo, hi + 1)
                ],
            )
            await conn.execute(
                insert(KeyEpoch),
                [
                    {"device_id": i, "direction": d.value, "last_epoch": -1, "drift": 0, "updated_at": old}
                    for i in range(lo, hi + 1)
                    for d in Direction
                ],
            )


async def bench_verify(n: int, rng: random.Random, samples: int, workdir: Path) -> dict[str, Any]:
    url = f"sqlite+aiosqlite:///{workdir / f'bench-{n}.sqlite3'}"
    t = time.perf_counter()
    await upgrade(url)
    migrate_s = time.perf_counter() - t
    store = Store.from_url(url)
    try:
        t = time.perf_counter()
        await populate(store, n)
        populate_s = time.perf_counter() - t
        keys = {"look_behind": LOOK_BEHIND, "look_ahead": LOOK_AHEAD, "trunk_prefixes": list(TRUNKS)}
        cfg = config.build({"keys": keys}, {}, workdir)
        svc = verifier(cfg, store, MASTER, AuditWriter(store.audit_many), clock_ms=Clock(T_MS))
        t = time.perf_counter()
        await svc.start()
        start_s = time.perf_counter() - t
        timer = StoreTimer(store)
        fmt = cfg.inbound_fmt
        epoch = svc.keys.epoch_now()
        warm = 10
        chosen = rng.sample(range(1, n + 1), min(n, samples + warm))

        async def run(digits: str, call_id: str) -> tuple[Verdict, int, dict[str, int]]:
            timer.take()
            t0 = time.perf_counter_ns()
            out = await svc.verify(VerifyRequest(presented=digits, call_id=call_id))
            return out.verdict, time.perf_counter_ns() - t0, timer.take()

        for i, d in enumerate(chosen[:warm]):
            await run(derive_key(device_secret(MASTER, key_id(d)), Direction.INBOUND, epoch, fmt), f"warm-{i}")
            await run(random_number(rng), f"warm-miss-{i}")

        hit_ns: list[int] = []
        hit_db: list[dict[str, int]] = []
        not_admitted = 0
        for i, d in enumerate(chosen[warm:]):
            digits = derive_key(device_secret(MASTER, key_id(d)), Direction.INBOUND, epoch, fmt)
            verdict, ns, db = await run(digits, f"hit-{i}")
            not_admitted += verdict is not Verdict.ADMITTED
            hit_ns.append(ns)
            hit_db.append(db)
        miss_ns: list[int] = []
        miss_db: list[dict[str, int]] = []
        not_mismatch = 0
        syncs_before = timer.calls["list_devices"]
        t_miss = time.perf_counter()
        for i in range(samples):
            verdict, ns, db = await run(random_number(rng), f"miss-{i}")
            not_mismatch += verdict is not Verdict.MISMATCH
            miss_ns.append(ns)
            miss_db.append(db)
        miss_wall_s = time.perf_counter() - t_miss
        miss_syncs = timer.calls["list_devices"] - syncs_before

        def breakdown(total: list[int], parts: list[dict[str, int]]) -> dict[str, float]:
            """Mean microseconds per verification spent in each store call, and in everything else."""
            out = {name: sum(p[name] for p in parts) / len(parts) / 1000.0 for name in StoreTimer.NAMES}
            out["other"] = sum(total) / len(total) / 1000.0 - sum(out.values())
            return out

        return {
            "migrate_s": migrate_s,
            "populate_s": populate_s,
            "start_s": start_s,
            "admitted": summary(hit_ns),
            "admitted_breakdown_mean_us": breakdown(hit_ns, hit_db),
            "admitted_unexpected_verdicts": not_admitted,
            "mismatch": summary(miss_ns),
            "mismatch_breakdown_mean_us": breakdown(miss_ns, miss_db),
            "mismatch_unexpected_verdicts": not_mismatch,
            "mismatch_device_syncs": miss_syncs,
            "mismatch_wall_s": miss_wall_s,
            "device_sync_interval_s": svc.keys.device_sync_interval,
            "audit_drained": await svc.audit.drain(),
        }
    finally:
        await store.close()


# -- memory (in a child process) ------------------------------------------------------------------------------------
def memory_child(n: int) -> dict[str, Any]:
    """Run in a fresh interpreter: RSS growth of building the index, then tracemalloc of a second build."""
    current = epoch_at_ms(T_MS, PERIOD)
    rss0 = rss_bytes()
    idx = new_index()
    for i in range(1, n + 1):
        idx.set_device(i, device_secret(MASTER, key_id(i)))
    rss1 = rss_bytes()
    advance(idx, current)
    rss2 = rss_bytes()
    del idx

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    idx2 = new_index()
    for i in range(1, n + 1):
        idx2.set_device(i, device_secret(MASTER, key_id(i)))
    after_secrets = tracemalloc.get_traced_memory()[0]
    advance(idx2, current)
    after_tables = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(idx2.epochs) == window().width
    return {
        "rss_secrets_bytes": rss1 - rss0,
        "rss_tables_bytes": rss2 - rss1,
        "rss_total_bytes": rss2 - rss0,
        "traced_secrets_bytes": after_secrets - base,
        "traced_tables_bytes": after_tables - after_secrets,
        "traced_total_bytes": after_tables - base,
    }


def measure_memory(n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# -- report -----------------------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "git_commit": commit,
        "loadavg_at_start": os.getloadavg(),
    }


def markdown(res: dict[str, Any]) -> str:
    sizes = res["sizes"]
    lines = [
        f"Format `{FORMAT}`, period {PERIOD} s, look_behind {LOOK_BEHIND} + look_ahead {LOOK_AHEAD} (3 live epochs), "
        f"trunk prefixes {', '.join(TRUNKS)}; commit {res['machine']['git_commit']}, {res['machine']['date']}.",
        "",
        "### (a) KeyIndex: one lookup() + confirm()",
        "",
        f"| devices | hit p50 | hit p99 | hit behind `{OTHER_FORM}` p50 | miss p50 | miss p99 | lookup only (hit p50) "
        "| initial build (3 epochs) | advance(): roll 1 epoch | service refresh path (1 epoch) | roll / period |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        a = res["index"][str(n)]
        lines.append(
            f"| {n:,} | {fmt_us(a['hit']['p50_us'])} | {fmt_us(a['hit']['p99_us'])} "
            f"| {fmt_us(a['hit_other_form']['p50_us'])} | {fmt_us(a['miss']['p50_us'])} "
            f"| {fmt_us(a['miss']['p99_us'])} | {fmt_us(a['hit_lookup_only']['p50_us'])} "
            f"| {fmt_us(a['initial_build_3_epochs_s'] * 1e6)} | {fmt_us(a['advance_one_epoch_s'] * 1e6)} "
            f"| {fmt_us(a['refresh_path_one_epoch_s'] * 1e6)} | {a['advance_one_epoch_s'] / PERIOD:.2%} |"
        )
    lines += [
        "",
        "A call arriving while refresh() builds a table in its worker thread waits for the GIL (the HMAC loop holds "
        "it): extra latency of wake-up + one hit identification, idle vs during a build:",
        "",
        "| devices | idle p50 | idle p99 | during build p50 | during build p99 | samples during build |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        a = res["index"][str(n)]
        idle, busy = a["wake_identify_idle"], a["wake_identify_during_build"]
        lines.append(
            f"| {n:,} | {fmt_us(idle['p50_us'])} | {fmt_us(idle['p99_us'])} | {fmt_us(busy['p50_us'])} "
            f"| {fmt_us(busy['p99_us'])} | {busy['n']} |"
        )
    lines += [
        "",
        "### (b) Naive per-device scan (render each device's previous, current and next key, compare)",
        "",
        "| devices | samples | hit p50 | hit p99 | miss p50 | miss p99 | miss p50 vs KeyIndex |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        b = res["naive"][str(n)]
        ratio = b["miss"]["p50_us"] / res["index"][str(n)]["miss"]["p50_us"]
        lines.append(
            f"| {n:,} | {b['samples']} | {fmt_us(b['hit']['p50_us'])} | {fmt_us(b['hit']['p99_us'])} "
            f"| {fmt_us(b['miss']['p50_us'])} | {fmt_us(b['miss']['p99_us'])} | {ratio:,.0f}x slower |"
        )
    lines += [
        "",
        "### (c) Full VerificationService.verify() on SQLite (file on local disk, WAL)",
        "",
        "| devices | samples | admitted p50 | admitted p99 | mismatch p50 | mismatch p99 | start() (load + 3 tables) "
        "| bulk insert |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in res["verify_sizes"]:
        c = res["verify"][str(n)]
        lines.append(
            f"| {n:,} | {c['admitted']['n']} | {fmt_us(c['admitted']['p50_us'])} | {fmt_us(c['admitted']['p99_us'])} "
            f"| {fmt_us(c['mismatch']['p50_us'])} | {fmt_us(c['mismatch']['p99_us'])} "
            f"| {fmt_us(c['start_s'] * 1e6)} | {fmt_us(c['populate_s'] * 1e6)} |"
        )
    lines += [
        "",
        "Where verify() time goes (mean per verification):",
        "",
        "| devices | verdict | check_and_spend | list_devices (sync) | everything else |",
        "|---:|---|---:|---:|---:|",
    ]
    for n in res["verify_sizes"]:
        c = res["verify"][str(n)]
        for label, key in (("admitted", "admitted_breakdown_mean_us"), ("mismatch", "mismatch_breakdown_mean_us")):
            bd = c[key]
            lines.append(
                f"| {n:,} | {label} | {fmt_us(bd['check_and_spend'])} "
                f"| {fmt_us(bd['list_devices'])} | {fmt_us(bd['other'])} |"
            )
    lines += [
        "",
        "### Memory of the index (derived secrets + 3 epoch tables), fresh process per size",
        "",
        "| devices | tracemalloc secrets | tracemalloc 3 tables | tracemalloc total | per device | RSS growth "
        "| per 100k devices (tracemalloc) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        m = res["memory"][str(n)]
        lines.append(
            f"| {n:,} | {fmt_bytes(m['traced_secrets_bytes'])} | {fmt_bytes(m['traced_tables_bytes'])} "
            f"| {fmt_bytes(m['traced_total_bytes'])} | {m['traced_total_bytes'] / n:.0f} B "
            f"| {fmt_bytes(m['rss_total_bytes'])} | {fmt_bytes(m['traced_total_bytes'] / n * 100_000)} |"
        )
    return "\n".join(lines) + "\n"


def parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers, e.g. 1000,10000")
    return sizes


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes: list[int] = list(QUICK_SIZES) if args.quick else args.sizes
    verify_sizes = [n for n in sizes if n <= args.verify_max]
    rng = random.Random(args.seed)
    res: dict[str, Any] = {
        "machine": machine(),
        "params": {
            "format": FORMAT,
            "period": PERIOD,
            "look_behind": LOOK_BEHIND,
            "look_ahead": LOOK_AHEAD,
            "trunk_prefixes": list(TRUNKS),
            "seed": args.seed,
            "index_samples": args.samples,
            "warmup_s": args.warmup,
            "verify_samples": args.verify_samples,
        },
        "sizes": sizes,
        "verify_sizes": verify_sizes,
        "index": {},
        "naive": {},
        "verify": {},
        "memory": {},
    }
    progress(f"warming the CPU up for {args.warmup:.1f}s")
    warm_cpu(args.warmup)
    for n in sizes:
        progress(f"n={n:,}: deriving {n:,} device secrets")
        t = time.perf_counter()
        secrets = derive_secrets(n)
        derive_s = time.perf_counter() - t
        progress(f"n={n:,}: KeyIndex ({args.samples} hits, {args.samples} misses, epoch rolls)")
        res["index"][str(n)] = bench_index(n, secrets, rng, args.samples) | {"derive_secrets_s": derive_s}
        progress(f"n={n:,}: naive per-device scan")
        res["naive"][str(n)] = bench_naive(n, secrets, rng, args.naive_samples)
        del secrets
        progress(f"n={n:,}: memory (child process)")
        res["memory"][str(n)] = measure_memory(n)
        if n in verify_sizes:
            progress(f"n={n:,}: full verify() on SQLite ({args.verify_samples} admitted, {args.verify_samples} misses)")
            with tempfile.TemporaryDirectory(prefix="securelink-bench-", dir=args.db_dir) as tmp:
                res["verify"][str(n)] = await bench_verify(n, rng, args.verify_samples, Path(tmp))
    res["elapsed_s"] = time.perf_counter() - _started
    return res


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", type=parse_sizes, default=list(DEFAULT_SIZES), help="comma-separated device counts")
    ap.add_argument("--quick", action="store_true", help=f"sizes {','.join(map(str, QUICK_SIZES))}")
    ap.add_argument("--json", type=Path, help="also write the results as JSON to this path")
    ap.add_argument("--samples", type=int, default=5000, help="KeyIndex hits and misses per size")
    ap.add_argument("--naive-samples", type=int, default=100, help="cap on naive verifications per size and kind")
    ap.add_argument("--verify-samples", type=int, default=500, help="full verify() admitted and mismatches per size")
    ap.add_argument("--verify-max", type=int, default=100_000, help="largest size for the full verify() benchmark")
    ap.add_argument("--db-dir", type=Path, default=None, help="where the SQLite databases go (default: $TMPDIR)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of busy key derivation before measuring")
    ap.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child)))
        return 0
    res = asyncio.run(main_async(args))
    report = markdown(res)
    print(report)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        progress(f"JSON written to {args.json}")
    progress(f"done in {res['elapsed_s']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
