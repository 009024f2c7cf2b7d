#!/usr/bin/env python3
"""End to end on the real Asterisk testbed: call setup rate and INVITE -> final response latency, same run:

  (a) direct   - a dialplan that answers at once            (testbed 7000: Answer)
  (b) stasis   - a trivial Stasis app that only continues   (testbed 7002: Stasis(testbed-probe), our ARI client)
  (c) securelink - securelink admission of a genuine key    (testbed 1XX: Stasis(securelink,inbound,ani))

SIPp measures the response time itself (its microsecond clock, read before the INVITE and at the final
response). The runs are interleaved so drift of the machine hits the targets alike. Needs the testbed up
(`make testbed`). Every securelink call is a different device (keys are single use); devices are bulk-inserted.

    python3 bench/e2e.py [--calls 300] [--rate 20] [--rounds 3] [--out bench/results/e2e-DATE.json]

`--find-max` searches, for (b) and (c) side by side, the highest offered rate that is *sustained*: every call
answered 200, p99 < 100 ms, and the setup rate at least 95% of the offered rate, over `--seconds` per try (rates grow
by x1.5 from `--start-rate` until a try fails, then bisect `--bisect` times; a failed try is run once more, and the
rate fails only if that fails too). `--overload` then offers (c) twice its
maximum with `--forged` of the calls carrying a wrong key: admitted calls' p99, how fast the excess is turned away,
and that no forged call was admitted. `--py-spy FILE` records a flame graph of securelink during its runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "e2e")]

from sipp import SCENARIO_DIR, SIPP, _csv_row, _free_udp_port  # noqa: E402

from asterisk_securelink import masterkey  # noqa: E402
from asterisk_securelink.asterisk.ari.client import AriClient  # noqa: E402
from asterisk_securelink.asterisk.ari.events import Event, StasisStart  # noqa: E402
from asterisk_securelink.core.formats import NumberFormat  # noqa: E402
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret, epoch_at_ms, now_ms  # noqa: E402
from testbed import AMI_SECRET, AMI_USER, ARI_PASSWORD, ARI_USER, ari_get  # noqa: E402

PERIOD = 30


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def timed_scenario(dest: Path) -> Path:
    """uac.xml with SIPp's own microsecond clock read just before the INVITE goes out and when the final 200 or 403
    arrives (`gettimeofday` actions), logged as `TIME|<call>|<code>|<latency us>`."""
    text = (SCENARIO_DIR / "uac.xml").read_text()
    stamp = '<gettimeofday assign_to="{0}s,{0}u"/>'
    text = text.replace(
        '  <send retrans="500">', f'  <nop><action>{stamp.format("t0")}</action></nop>\n  <send retrans="500">', 1
    )
    text = text.replace(
        '<action><assignstr assign_to="code" value="403"/></action>',
        f'<action><assignstr assign_to="code" value="403"/>{stamp.format("t1")}</action>',
        1,
    )
    text = text.replace(
        '<action><assignstr assign_to="code" value="503"/></action>',
        f'<action><assignstr assign_to="code" value="503"/>{stamp.format("t1")}</action>',
        1,
    )
    text = text.replace(
        '<action><assignstr assign_to="code" value="200"/></action>',
        f'<action><assignstr assign_to="code" value="200"/>{stamp.format("t1")}</action>',
        1,
    )
    text = text.replace('<log message="RESULT|[call_number]|[field0]|[field1]|[$code]"/>',
                        '<log message="RESULT|[call_number]|[field0]|[field1]|[$code]"/>'
                        '<log message="TIME|[call_number]|[$code]|[$t0s]|[$t0u]|[$t1s]|[$t1u]"/>', 1)  # fmt: skip
    assert text.count("gettimeofday") == 4 and "TIME|" in text, "uac.xml changed: update bench/e2e.py"
    dest.write_text(text)
    return dest


def run_sipp(calls: list[tuple[str, str]], rate: float, scenario: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="securelink-bench-") as tmp:
        d = Path(tmp)
        (d / "calls.csv").write_text("SEQUENTIAL\n" + "".join(_csv_row(a, b) for a, b in calls))
        cmd = [SIPP, "127.0.0.1:5060", "-sf", str(scenario), "-inf", str(d / "calls.csv"), "-m", str(len(calls)),
               "-r", str(rate), "-l", "2000", "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", "0",
               "-mp", str(_free_udp_port()), "-nostdin", "-trace_logs",
               "-log_file", str(d / "results.log"), "-timeout", f"{int(len(calls) / rate) + 60}s"]  # fmt: skip
        t0 = time.monotonic()
        subprocess.run(cmd, cwd=d, stdin=subprocess.DEVNULL, capture_output=True, timeout=len(calls) / rate + 90)
        wall = time.monotonic() - t0
        rtts: list[float] = []
        per_code: dict[str, list[float]] = {}
        for line in (d / "results.log").read_text().splitlines():
            if line.startswith("TIME|"):
                _, _, code, s0, u0, s1, u1 = line.split("|")
                with contextlib.suppress(ValueError):
                    rtt = ((float(s1) - float(s0)) * 1e6 + float(u1) - float(u0)) / 1000.0
                    rtts.append(rtt)
                    per_code.setdefault(code, []).append(rtt)
        results = [line.split("|") for line in (d / "results.log").read_text().splitlines()
                   if line.startswith("RESULT|")]  # fmt: skip
        codes = [r[4] for r in results]
        # in the order calls ended, not placed: which caller got which answer is by the caller number
        by_caller = {r[2]: r[4] for r in results}
    return {"rtts_ms": rtts, "codes": codes, "wall_s": wall, "by_code": per_code, "by_caller": by_caller}


def print_result(result: dict[str, Any], out: Path | None) -> None:
    """The run's result as JSON on stdout, and in `out` (`--out`) when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if len(values) > 1 else values[0]


@contextlib.contextmanager
def probe_app() -> Iterator[None]:
    """The trivial Stasis app of (b): `continue` every call, nothing else (our ARI client, its own thread)."""
    stop = threading.Event()

    def main() -> None:
        async def go() -> None:
            ari = AriClient("http://127.0.0.1:8088/ari", ARI_USER, ARI_PASSWORD, "testbed-probe")

            async def on_event(event: Event) -> None:
                if isinstance(event, StasisStart):
                    with contextlib.suppress(Exception):
                        await ari.continue_in_dialplan(event.channel.id)

            task = asyncio.create_task(ari.run(on_event))
            while not stop.is_set():  # noqa: ASYNC110 - stop is a threading.Event set from another thread
                await asyncio.sleep(0.1)
            await ari.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        asyncio.run(go())

    t = threading.Thread(target=main, daemon=True)
    t.start()
    wait(lambda: registered("testbed-probe"), 15)
    try:
        yield
    finally:
        stop.set()
        t.join(10)


def registered(name: str) -> bool:
    try:
        return any(a.get("name") == name for a in ari_get("/applications"))
    except Exception:  # noqa: BLE001
        return False


def wait(pred: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise SystemExit("bench: timed out waiting for an app to register")


def cli(home: Path, env: dict[str, str], *args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "asterisk_securelink.cli", *args], cwd=home, env=env,
                       capture_output=True, text=True, timeout=600, check=True)  # fmt: skip
    return p.stdout


def summarize(got: dict[str, Any], offered: float) -> dict[str, Any]:
    rtts, codes = got["rtts_ms"], got["codes"]
    ok = sum(1 for c in codes if c == "200")
    out: dict[str, Any] = {
        "offered_rate": round(offered, 1),
        "calls": len(codes),
        "answered_200": ok,
        "other": {c: codes.count(c) for c in sorted(set(codes)) if c != "200"},
        "setup_rate_per_s": round(ok / got["wall_s"], 1) if got["wall_s"] else None,
        "p50_ms": round(pct(rtts, 50), 2),
        "p90_ms": round(pct(rtts, 90), 2),
        "p99_ms": round(pct(rtts, 99), 2),
        "samples": len(rtts),
    }
    if "db" in got:
        out["db"] = got["db"]
    if "cpu_ms_per_answered_call" in got:
        out["cpu_ms_per_answered_call"] = got["cpu_ms_per_answered_call"]
    for code, values in sorted(got["by_code"].items()):
        out[f"code_{code}"] = {"n": len(values), "p50_ms": round(pct(values, 50), 2),
                               "p99_ms": round(pct(values, 99), 2), "max_ms": round(max(values), 2)}  # fmt: skip
    return out


def sustained(s: dict[str, Any], calls: int) -> bool:
    """Every call answered 200, p99 < 100 ms, and SIPp kept to the offered rate (a queue would slow it down)."""
    return bool(
        s["answered_200"] == calls and s["p99_ms"] < 100.0 and (s["setup_rate_per_s"] or 0) >= 0.95 * s["offered_rate"]
    )


class Bench:
    """The testbed, a securelink home with `devices` enrolled and `securelink run` started, and the probe app."""

    def __init__(self, args: argparse.Namespace, devices: int) -> None:
        self.args = args
        self.home = Path(tempfile.mkdtemp(prefix="securelink-bench-home-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SECURELINK_")}
        self.env["PYTHONPATH"] = str(REPO)
        self.metrics_port = _free_tcp_port()
        (self.home / "securelink.toml").write_text(
            f'[ari]\nurl = "http://127.0.0.1:8088"\nusername = "{ARI_USER}"\npassword = "{ARI_PASSWORD}"\n'
            f'[ami]\nusername = "{AMI_USER}"\nsecret = "{AMI_SECRET}"\n[lockout]\nmax_guess_probability = 1.0\n'
            f'[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n'
            # admitted calls go on as a routed call would: to an extension that answers, waits 1 s and hangs up
            # (the testbed's [testbed-routed] _X., like the trivial app's dialplan)
            '[routing]\ndefault_context = "testbed-routed"\ndefault_callerid = \'"Mobile" <1000>\'\n'
            'home = "extension:10"\nallowed = ["_X."]\nmax_concurrent = 100\nmax_per_day = 100000\n'
            + (f"[inbound]\nmax_in_flight = {args.max_in_flight}\n" if args.max_in_flight is not None else "")
            + (f'[database]\nurl = "{args.database_url}"\n' if args.database_url else "")
        )
        cli(self.home, self.env, "init")
        progress(f"enrolling {devices} devices (one genuine call each: every key is single use)")
        key_ids = asyncio.run(self._enroll(devices))
        master = masterkey.load(self.home / "master.key")
        self.secrets = [device_secret(master, k) for k in key_ids]
        self.used = 0
        self.fmt = NumberFormat("XXXXXXXXXX")
        self.scenario = timed_scenario(self.home / "uac_timed.xml")
        self.app: subprocess.Popen[bytes] | None = None
        self.spy: subprocess.Popen[bytes] | None = None
        self.last_forged: set[str] = set()  # the caller numbers of the last `calls()` batch that carry a wrong key

    async def _enroll(self, n: int) -> list[str]:
        from sqlalchemy import insert

        import asterisk_securelink.config as config
        from asterisk_securelink.store.models import Device, KeyEpoch
        from asterisk_securelink.store.store import Store

        cfg = config.load(self.home / "securelink.toml", env={})
        store = Store.from_url(cfg.database_url)
        old = datetime.now(UTC) - timedelta(hours=1)
        key_ids = [f"bench-{i}" for i in range(1, n + 1)]
        try:
            async with store.engine.begin() as conn:
                for lo in range(1, n + 1, 5000):
                    ids = range(lo, min(n, lo + 4999) + 1)
                    await conn.execute(insert(Device), [
                        {"id": i, "display_name": f"b{i}", "mobile_number": f"+1888{i:07d}", "desk_endpoint": None,
                         "key_id": key_ids[i - 1], "status": "registered", "fork_enabled": True, "created_at": old,
                         "updated_at": old, "registered_at": old} for i in ids])  # fmt: skip
                    await conn.execute(insert(KeyEpoch), [
                        {"device_id": i, "direction": d.value, "last_epoch": -1, "drift": 0, "updated_at": old}
                        for i in ids for d in Direction])  # fmt: skip
        finally:
            await store.close()
        return key_ids

    def start(self) -> None:
        wait(lambda: not registered("securelink"), 15)
        log = (self.home / "run.log").open("ab")
        started = time.monotonic()
        cmd = [sys.executable, "-m", "asterisk_securelink.cli", "run"]
        self.app = subprocess.Popen(
            cmd, cwd=self.home, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait(lambda: registered("securelink"), 60)
        progress(f"securelink run registered with ARI in {time.monotonic() - started:.2f} s")

    def stop(self) -> None:
        if self.app is not None:
            os.killpg(self.app.pid, signal.SIGTERM)
            self.app.wait(15)

    def calls(self, target: str, n: int, forged: float = 0.0) -> list[tuple[str, str]]:
        if target == "direct":
            return [("15550001000", "7000")] * n
        if target == "stasis":
            return [("15550001000", "7002")] * n
        if self.used + n > len(self.secrets):
            raise SystemExit(f"bench: out of devices ({len(self.secrets)}): raise --devices")
        # a key of the current epoch stays live through the next one (look_behind 1): >= 30 s, longer than a try
        e = epoch_at_ms(now_ms(), PERIOD)
        rng = random.Random(self.used)
        out = []
        self.last_forged = set()
        for s in self.secrets[self.used : self.used + n]:
            if forged and rng.random() < forged:
                number = f"{rng.randrange(10**10):010d}"
                self.last_forged.add(number)
                out.append((number, "100"))
            else:
                out.append((derive_key(s, Direction.INBOUND, e, self.fmt), "100"))
        self.used += n
        return out

    def run(self, target: str, rate: float, n: int, forged: float = 0.0) -> dict[str, Any]:
        calls = self.calls(target, n, forged)
        progress(f"{target}: {n} calls at {rate:.1f}/s")
        self._spy(target)
        db_before = self.pg_stats() if target == "securelink" else None
        cpu_before = self.cpu()
        try:
            got = run_sipp(calls, rate, self.scenario)
        finally:
            self._unspy()
        cpu_after = self.cpu()
        ok = max(1, got["codes"].count("200"))
        got["cpu_ms_per_answered_call"] = {k: round((cpu_after[k] - cpu_before[k]) * 1000 / ok, 3) for k in cpu_after}
        if db_before is not None:
            time.sleep(1.5)  # backends report their statistics at most once a second
            after = self.pg_stats()
            if after is not None:
                got["db"] = per_call(db_before, after, max(1, got["codes"].count("200")))
        return got

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by securelink, Asterisk, this process (which runs the trivial Stasis app) and, with a
        PostgreSQL store, its server processes (backends that ended meanwhile are not counted)."""
        tick = os.sysconf("SC_CLK_TCK")

        def of(pid: int | None) -> float:
            if pid is None:
                return 0.0
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return 0.0
            return (int(fields[11]) + int(fields[12])) / tick

        asterisk = subprocess.run(["pgrep", "-x", "asterisk"], capture_output=True, text=True).stdout.split()
        out = {
            "securelink": of(self.app.pid if self.app is not None else None),
            "asterisk": of(int(asterisk[0]) if asterisk else None),
            "bench_and_trivial_app": time.process_time(),
        }
        if "postgres" in (self.args.database_url or ""):  # its backends share the cores too
            pids = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True).stdout.split()
            out["postgresql"] = sum(of(int(pid)) for pid in pids)
        return out

    def pg_stats(self) -> dict[str, float] | None:
        """PostgreSQL's own account of this database (`pg_stat_database`): time spent executing statements
        (active_time, ms), transactions, rows written, and lock waits seen now (`pg_locks` not granted)."""
        url = self.args.database_url or ""
        if "postgres" not in url:
            return None
        plain = url.replace("postgresql+asyncpg://", "postgresql://")
        q = ("SELECT active_time, xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted, "
             "(SELECT count(*) FROM pg_locks WHERE NOT granted) FROM pg_stat_database "
             "WHERE datname = current_database()")  # fmt: skip
        out = subprocess.run(["psql", plain, "-Atc", q], capture_output=True, text=True, timeout=30).stdout.strip()
        try:
            active, xacts, rows, waiting = (float(v) for v in out.split("|"))
        except ValueError:
            return None
        return {"active_ms": active, "xacts": xacts, "rows_written": rows, "lock_waits_now": waiting}

    def _spy(self, target: str) -> None:
        if self.args.py_spy and target == "securelink" and self.app is not None and self.spy is None:
            out = Path(self.args.py_spy)
            fmt = "raw" if out.suffix == ".txt" else "flamegraph"
            cmd = ["py-spy", "record", "--pid", str(self.app.pid), "--rate", "200", "--subprocesses",
                   "--output", str(out), "--format", fmt]  # fmt: skip
            if self.args.py_spy_gil:
                cmd += ["--gil", "--nonblocking"]  # the thread holding the GIL, not paused: where Python's CPU goes
            self.spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _unspy(self) -> None:
        if self.spy is not None:
            self.spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.spy.wait(30)
            self.spy = None

    def metrics(self) -> dict[str, float]:
        """The securelink_* samples of /metrics (name{labels} -> value)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("securelink_") and " " in line:
                name, value = line.rsplit(" ", 1)
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out


def per_call(before: dict[str, float], after: dict[str, float], admitted: int) -> dict[str, float]:
    """Database work per admitted call between two `pg_stats` readings (every statement of the service counts:
    the spend, audit batches, guard reads)."""
    return {
        "admitted": admitted,
        "active_ms_per_admission": round((after["active_ms"] - before["active_ms"]) / admitted, 3),
        "xacts_per_admission": round((after["xacts"] - before["xacts"]) / admitted, 2),
        "rows_written_per_admission": round((after["rows_written"] - before["rows_written"]) / admitted, 2),
        "lock_waits_at_end": after["lock_waits_now"],
    }


def _free_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fixed_rate(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """The original measurement: `--rounds` rounds of `--calls` calls per target at `--rate`, interleaved."""
    results: dict[str, dict[str, Any]] = {k: {"rtts_ms": [], "codes": [], "wall_s": 0.0, "by_code": {}}
                                          for k in ("direct", "stasis", "securelink")}  # fmt: skip
    for r in range(args.rounds):
        for target in ("direct", "stasis", "securelink"):
            progress(f"round {r + 1}/{args.rounds}")
            got = bench.run(target, args.rate, args.calls)
            res = results[target]
            res["rtts_ms"] += got["rtts_ms"]
            res["codes"] += got["codes"]
            res["wall_s"] += got["wall_s"]
            for code, values in got["by_code"].items():
                res["by_code"].setdefault(code, []).extend(values)
            res.setdefault("cpu_rounds", []).append(got["cpu_ms_per_answered_call"])
    for res in results.values():  # CPU per answered call: the mean over the rounds
        rounds = res.pop("cpu_rounds", [])
        if rounds:
            res["cpu_ms_per_answered_call"] = {k: round(statistics.mean(r[k] for r in rounds), 3) for k in rounds[0]}
    targets = {t: summarize(res, args.rate) for t, res in results.items()}
    b, c = targets["stasis"]["p50_ms"], targets["securelink"]["p50_ms"]
    return {
        "calls_per_target": args.calls * args.rounds,
        "offered_rate": args.rate,
        "targets": targets,
        "securelink_minus_stasis_p50_ms": round(c - b, 2),
        "securelink_vs_stasis_p50": f"{(c / b - 1) * 100:+.1f}%" if b else None,
    }


def find_max(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """Both targets' highest sustained rate, searched side by side (one try of each per step): x1.5 from
    `--start-rate` until a try fails, then `--bisect` tries between the best sustained and the lowest failed rate."""
    state: dict[str, dict[str, Any]] = {
        t: {"ok": 0.0, "bad": None, "rate": args.start_rate, "bisected": 0, "tries": []}
        for t in ("stasis", "securelink")
    }

    def done(st: dict[str, Any]) -> bool:
        return bool(st["bisected"] >= args.bisect or st["rate"] > args.max_rate)

    for target in state:  # warm-up, not counted: first connections, the epoch tables `keep_fresh` builds after start
        bench.run(target, 20.0, 100)

    while not all(done(st) for st in state.values()):
        for target, st in state.items():
            if done(st):
                continue
            rate = st["rate"]
            n = max(50, int(rate * args.seconds))
            s = summarize(bench.run(target, rate, n), rate)
            s["sustained"] = sustained(s, n)
            if not s["sustained"]:  # once more before it counts: one stall of a shared machine is not a limit
                st["tries"].append(s)
                s = summarize(bench.run(target, rate, n), rate)
                s["sustained"] = sustained(s, n)
            st["tries"].append(s)
            verdict = "sustained" if s["sustained"] else "NOT sustained"
            progress(f"  {target} at {rate:.1f}/s: {verdict} (200: {s['answered_200']}/{n}, p99 {s['p99_ms']} ms, "
                     f"setup {s['setup_rate_per_s']}/s)")  # fmt: skip
            if st["bad"] is not None:
                st["bisected"] += 1
            if s["sustained"]:
                st["ok"] = max(st["ok"], rate)
            else:
                st["bad"] = rate if st["bad"] is None else min(st["bad"], rate)
            st["rate"] = rate * 1.5 if st["bad"] is None else round((st["ok"] + st["bad"]) / 2, 1)
    out = {t: {"max_sustained_rate": st["ok"], "first_failed_rate": st["bad"], "tries": st["tries"]}
           for t, st in state.items()}  # fmt: skip
    ratio = state["securelink"]["ok"] / state["stasis"]["ok"] if state["stasis"]["ok"] else None
    return {"find_max": out, "securelink_over_stasis_max": round(ratio, 3) if ratio is not None else None}


def overload(bench: Bench, args: argparse.Namespace, max_rate: float) -> dict[str, Any]:
    """securelink at twice its maximum, `--forged` of the calls with a wrong key: what is admitted, how fast, how fast
    the excess is turned away, and that no forged call got in."""
    rate = 2 * max_rate
    n = int(rate * args.seconds)
    before = bench.metrics()
    got = bench.run("securelink", rate, n, args.forged)
    after = bench.metrics()
    forged_admitted = sum(1 for caller in bench.last_forged if got["by_caller"].get(caller) == "200")
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if "verdicts_total" in k}
    forged_calls = len(bench.last_forged)
    # the same offered load on the trivial Stasis app: what Asterisk and SIPp on this machine do at that rate anyway
    trivial = summarize(bench.run("stasis", rate, n), rate)
    return {
        "offered_rate": rate,
        "calls": n,
        "forged_calls": forged_calls,
        "forged_admitted": forged_admitted,
        "result": summarize(got, rate),
        "verdicts_delta": {k: v for k, v in delta.items() if v},
        "trivial_stasis_same_rate": trivial,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=300, help="calls per target per round")
    ap.add_argument("--rate", type=float, default=20.0, help="calls per second")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--find-max", action="store_true", help="search each target's highest sustained rate")
    ap.add_argument("--overload", action="store_true", help="with --find-max: then offer securelink 2x its max")
    ap.add_argument("--seconds", type=float, default=8.0, help="--find-max/--overload: seconds per try")
    ap.add_argument("--start-rate", type=float, default=60.0)
    ap.add_argument("--max-rate", type=float, default=1500.0)
    ap.add_argument("--bisect", type=int, default=3, help="bisection steps after the first failed rate")
    ap.add_argument("--overload-rate", type=float, help="only the overload step, at this offered rate")
    ap.add_argument("--forged", type=float, default=0.1, help="--overload: share of calls with a wrong key")
    ap.add_argument("--max-in-flight", type=int, help="[inbound] max_in_flight for securelink (default: its own)")
    ap.add_argument("--devices", type=int, default=0, help="devices to enroll (default: enough for the run)")
    ap.add_argument(
        "--py-spy", help="record a py-spy flame graph of securelink's runs to this file (.svg; .txt: collapsed stacks)"
    )
    ap.add_argument("--py-spy-gil", action="store_true", help="--py-spy: sample only the thread holding the GIL")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--database-url", help="store for securelink (default: the embedded SQLite file)")
    args = ap.parse_args()

    devices = args.devices or (40_000 if args.find_max or args.overload_rate else args.calls * args.rounds)
    bench = Bench(args, devices)
    summary: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
        "commit": subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
        ).stdout.strip(),
        "store": "postgresql" if args.database_url and "postgres" in args.database_url else "sqlite",
        "devices": devices,
        "argv": sys.argv[1:],
    }
    try:
        bench.start()
        with probe_app():
            if args.overload_rate:
                summary["overload"] = overload(bench, args, args.overload_rate / 2)
            elif args.find_max:
                summary.update(find_max(bench, args))
                if args.overload:
                    summary["overload"] = overload(bench, args, summary["find_max"]["securelink"]["max_sustained_rate"])
            else:
                summary.update(fixed_rate(bench, args))
        summary["metrics_end"] = {k: v for k, v in bench.metrics().items() if "verdicts_total" in k or "admission" in k}
    finally:
        bench.stop()
    print_result(summary, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
