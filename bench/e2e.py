#!/usr/bin/env python3
"""End to end on the real Asterisk testbed: call setup rate and INVITE -> final response latency, same run:

  (a) direct   - a dialplan that answers at once            (testbed 7000: Answer)
  (b) stasis   - a trivial Stasis app that only continues   (testbed 7002: Stasis(testbed-probe), our ARI client)
  (c) securelink - securelink admission of a genuine key    (testbed 1XX: Stasis(securelink,inbound,ani))

SIPp measures the response time itself (its microsecond clock, read before the INVITE and at the final
response). The three runs are interleaved in rounds so drift of the machine hits them alike. Needs the testbed up
(`make testbed`).

    python3 bench/e2e.py [--calls 300] [--rate 20] [--rounds 3] [--out bench/results/e2e-DATE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
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
        '<action><assignstr assign_to="code" value="200"/></action>',
        f'<action><assignstr assign_to="code" value="200"/>{stamp.format("t1")}</action>',
        1,
    )
    text = text.replace('<log message="RESULT|[call_number]|[field0]|[field1]|[$code]"/>',
                        '<log message="RESULT|[call_number]|[field0]|[field1]|[$code]"/>'
                        '<log message="TIME|[call_number]|[$code]|[$t0s]|[$t0u]|[$t1s]|[$t1u]"/>', 1)  # fmt: skip
    assert text.count("gettimeofday") == 3 and "TIME|" in text, "uac.xml changed: update bench/e2e.py"
    dest.write_text(text)
    return dest


def run_sipp(calls: list[tuple[str, str]], rate: float, scenario: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="securelink-bench-") as tmp:
        d = Path(tmp)
        (d / "calls.csv").write_text("SEQUENTIAL\n" + "".join(_csv_row(a, b) for a, b in calls))
        cmd = [SIPP, "127.0.0.1:5060", "-sf", str(scenario), "-inf", str(d / "calls.csv"), "-m", str(len(calls)),
               "-r", str(rate), "-l", "200", "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", "0",
               "-mp", str(_free_udp_port()), "-nostdin", "-trace_logs",
               "-log_file", str(d / "results.log"), "-timeout", f"{int(len(calls) / rate) + 60}s"]  # fmt: skip
        t0 = time.monotonic()
        subprocess.run(cmd, cwd=d, stdin=subprocess.DEVNULL, capture_output=True, timeout=len(calls) / rate + 90)
        wall = time.monotonic() - t0
        rtts: list[float] = []
        for line in (d / "results.log").read_text().splitlines():
            if line.startswith("TIME|"):
                _, _, _code, s0, u0, s1, u1 = line.split("|")
                with contextlib.suppress(ValueError):
                    rtts.append(((float(s1) - float(s0)) * 1e6 + float(u1) - float(u0)) / 1000.0)
        codes = [line.split("|")[4] for line in (d / "results.log").read_text().splitlines()
                 if line.startswith("RESULT|")]  # fmt: skip
    return {"rtts_ms": rtts, "codes": codes, "wall_s": wall}


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=300, help="calls per target per round")
    ap.add_argument("--rate", type=float, default=20.0, help="calls per second")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--database-url", help="store for securelink (default: the embedded SQLite file)")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="securelink-bench-home-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURELINK_")}
    env["PYTHONPATH"] = str(REPO)
    (home / "securelink.toml").write_text(
        f'[ari]\nurl = "http://127.0.0.1:8088"\nusername = "{ARI_USER}"\npassword = "{ARI_PASSWORD}"\n'
        f'[ami]\nusername = "{AMI_USER}"\nsecret = "{AMI_SECRET}"\n[lockout]\nmax_guess_probability = 1.0\n'
        + (f'[database]\nurl = "{args.database_url}"\n' if args.database_url else "")
    )
    cli(home, env, "init")
    n_dev = args.calls * args.rounds
    progress(f"enrolling {n_dev} devices (one genuine call each: every key is single use)")
    import asterisk_securelink.config as config
    from asterisk_securelink.store.store import Store

    cfg = config.load(home / "securelink.toml", env={})

    async def enroll() -> list[str]:
        store = Store.from_url(cfg.database_url)
        try:
            out = []
            for i in range(n_dev):
                d = await store.add_device(f"b{i}", f"1888{i:07d}", None, f"bench-{i}", "bench")
                await store.update_device(d.id, "device.register", "bench", status="registered")
                out.append(d.key_id)
            return out
        finally:
            await store.close()

    key_ids = asyncio.run(enroll())
    master = masterkey.load(home / "master.key")
    secrets_ = [device_secret(master, k) for k in key_ids]
    fmt = NumberFormat("XXXXXXXXXX")
    scenario = timed_scenario(home / "uac_timed.xml")
    wait(lambda: not registered("securelink"), 15)
    log = (home / "run.log").open("ab")
    app = subprocess.Popen([sys.executable, "-m", "asterisk_securelink.cli", "run"], cwd=home, env=env, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    results: dict[str, dict[str, Any]] = {k: {"rtts_ms": [], "codes": [], "wall_s": 0.0, "calls": 0}
                                          for k in ("direct", "stasis", "securelink")}  # fmt: skip
    try:
        wait(lambda: registered("securelink"), 20)
        with probe_app():
            for r in range(args.rounds):
                for target in ("direct", "stasis", "securelink"):
                    if target == "direct":
                        calls = [("15550001000", "7000")] * args.calls
                    elif target == "stasis":
                        calls = [("15550001000", "7002")] * args.calls
                    else:  # keys of the window the batch starts in stay live (current + previous) for 30 s
                        now = time.time()
                        if PERIOD - now % PERIOD < args.calls / args.rate + 2:
                            time.sleep(PERIOD - now % PERIOD + 0.2)
                        e = epoch_at_ms(now_ms(), PERIOD)
                        batch = secrets_[r * args.calls : (r + 1) * args.calls]
                        calls = [(derive_key(s, Direction.INBOUND, e, fmt), "100") for s in batch]
                    progress(f"round {r + 1}/{args.rounds}: {target}, {len(calls)} calls at {args.rate}/s")
                    got = run_sipp(calls, args.rate, scenario)
                    res = results[target]
                    res["rtts_ms"] += got["rtts_ms"]
                    res["codes"] += got["codes"]
                    res["wall_s"] += got["wall_s"]
                    res["calls"] += len(calls)
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        app.wait(15)
        log.close()

    summary: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
        "calls_per_target": args.calls * args.rounds,
        "offered_rate": args.rate,
        "store": "postgresql" if args.database_url and "postgres" in args.database_url else "sqlite",
        "targets": {},
    }
    for target, res in results.items():
        rtts = res["rtts_ms"]
        ok = sum(1 for c in res["codes"] if c == "200")
        summary["targets"][target] = {
            "answered_200": ok,
            "other": len(res["codes"]) - ok,
            "setup_rate_per_s": round(ok / res["wall_s"], 1) if res["wall_s"] else None,
            "p50_ms": round(pct(rtts, 50), 2),
            "p90_ms": round(pct(rtts, 90), 2),
            "p99_ms": round(pct(rtts, 99), 2),
            "samples": len(rtts),
        }
    b, c = summary["targets"]["stasis"]["p50_ms"], summary["targets"]["securelink"]["p50_ms"]
    summary["securelink_vs_stasis_p50"] = f"{(c / b - 1) * 100:+.1f}%" if b else None
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
