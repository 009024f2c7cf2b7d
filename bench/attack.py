#!/usr/bin/env python3
"""A guessing attack on the real Asterisk testbed, measured (docs/benchmarks.md, "Under a guessing attack").

A hostile SIPp stream through the carrier trunk at `--rate` calls/s for `--seconds`:
  80 %  random well-formed keys as the caller number (ANI, testbed 100): key-alone guesses, the source's budget
  15 %  random well-formed keys dialed (DNIS, 8 + key) from random unregistered numbers: no device to guess at
   5 %  random keys dialed spoofing two victims' registered numbers: two-factor guesses, the victims back off
interleaved with genuine two-factor calls (DNIS, each device's registered number, its current key) of enrolled
devices, one per `--genuine-every` seconds. The installation has `--devices` enrolled devices and the default
`[lockout]` (max_guess_probability 1e-6), two-factor on, a 30 s period. Checked: every genuine call admitted, no
hostile call admitted, the stream's evaluated key-alone guesses within the budget `securelink doctor` prints.

Loopback only (SIP 127.0.0.1:5060, ARI/AMI/metrics on 127.0.0.1); bounded: every SIPp run has a timeout, the app is
stopped at the end. Needs the testbed up (`make testbed`) and nothing else using it.

    python3 bench/attack.py [--seconds 60] [--rate 20] [--devices 100] [--database-url URL] [--out FILE.json]
    python3 bench/attack.py spoof-one|sources [--database-url URL] [--out FILE.json]   (bench/attack_more.py)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "e2e")]

from panoramisk import Manager  # noqa: E402
from sipp import CallResult, run_uac  # noqa: E402

from asterisk_securelink import masterkey  # noqa: E402
from asterisk_securelink.config import load  # noqa: E402
from asterisk_securelink.core.formats import NumberFormat  # noqa: E402
from asterisk_securelink.core.lockout import guess_budget, number_allowance  # noqa: E402
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret, epoch_at_ms, now_ms  # noqa: E402
from asterisk_securelink.store.lockout import LockoutStore  # noqa: E402
from asterisk_securelink.store.store import Store  # noqa: E402
from testbed import AMI_HOST, AMI_PORT, AMI_SECRET, AMI_USER, ARI_PASSWORD, ARI_USER, ari_get  # noqa: E402

PERIOD = 30
FMT = NumberFormat("XXXXXXXXXX")
TRUNK = "PJSIP/carrier"
# where an admitted call goes (issue 20): the testbed's extension that answers, any destination, no caps in the way
ROUTING = (
    '[routing]\ndefault_context = "testbed-routed"\ndefault_callerid = \'"Mobile" <1000>\'\n'
    'home = "extension:answer"\nallowed = ["_X."]\nmax_concurrent = 100\nmax_per_day = 100000\n'
)


def progress(msg: str) -> None:
    print(f"[attack] {msg}", file=sys.stderr, flush=True)


def bench_e2e() -> Any:
    """bench/e2e.py, for its SIPp-timed scenario (latency measured by SIPp's own clock)."""
    spec = importlib.util.spec_from_file_location("bench_e2e", REPO / "bench" / "e2e.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def registered(name: str) -> bool:
    try:
        return any(a.get("name") == name for a in ari_get("/applications"))
    except Exception:  # noqa: BLE001 - not up yet
        return False


def wait(pred: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise SystemExit(f"attack: timed out waiting for {what}")


def cli(home: Path, env: dict[str, str], *args: str, check: bool = True) -> str:
    p = subprocess.run([sys.executable, "-m", "asterisk_securelink.cli", *args], cwd=home, env=env,
                       capture_output=True, text=True, timeout=300, check=check)  # fmt: skip
    return p.stdout


class LockoutEvents:
    """An AMI session of its own (a thread with its loop) recording `SecureLinkLockout` user events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> LockoutEvents:
        self._thread.start()
        if not self._ready.wait(10):
            raise SystemExit("attack: no AMI login")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _main(self) -> None:
        async def go() -> None:
            m = Manager(host=AMI_HOST, port=AMI_PORT, username=AMI_USER, secret=AMI_SECRET, events="on",
                        loop=asyncio.get_running_loop(), on_login=lambda _m: self._ready.set())  # fmt: skip
            m.register_event("UserEvent", self._record)
            await m.connect()
            while not self._stop.is_set():  # noqa: ASYNC110 - a threading.Event set from the main thread
                await asyncio.sleep(0.1)
            m.close()

        asyncio.run(go())

    def _record(self, _manager: Any, event: Any) -> None:
        if event.get("UserEvent") == "SecureLinkLockout":
            self.events.append({**dict(event), "at": time.time()})


def install(
    database_url: str | None, devices: int, number_prefix: str, key_prefix: str, extra: str = ""
) -> tuple[Path, dict[str, str], Any, list[str], list[bytes]]:
    """A fresh installation (two-factor, the default [lockout], admitted calls routed, `extra` config) with `devices`
    registered devices numbered `<number_prefix>NNNN`: (home, env, config, numbers, device secrets)."""
    home = Path(tempfile.mkdtemp(prefix="securelink-attack-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURELINK_")}
    env["PYTHONPATH"] = str(REPO)
    (home / "securelink.toml").write_text(
        "[inbound]\nrequire_registered_number = true\n"
        f'[ari]\nurl = "http://127.0.0.1:8088"\nusername = "{ARI_USER}"\npassword = "{ARI_PASSWORD}"\n'
        f'[ami]\nusername = "{AMI_USER}"\nsecret = "{AMI_SECRET}"\n'
        + (f'[database]\nurl = "{database_url}"\n' if database_url else "")
        + ROUTING
        + extra
    )
    cli(home, env, "init")
    cfg = load(home / "securelink.toml", env={})
    numbers = [f"{number_prefix}{i:04d}" for i in range(devices)]

    async def enroll() -> list[str]:
        store = Store.from_url(cfg.database_url)
        try:
            out = []
            for i, number in enumerate(numbers):
                d = await store.add_device(f"{key_prefix}{i}", "+" + number, None, f"{key_prefix}-{i}", "bench")
                await store.update_device(d.id, "device.register", "bench", status="registered")
                out.append(d.key_id)
            return out
        finally:
            await store.close()

    progress(f"enrolling {devices} devices")
    key_ids = asyncio.run(enroll())
    master = masterkey.load(home / "master.key")
    return home, env, cfg, numbers, [device_secret(master, k) for k in key_ids]


def hostile_calls(n: int, victims: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    calls, kinds = [], []
    for i in range(n):
        key = f"{secrets.randbelow(10**10):010d}"
        slot = i % 20
        if slot < 16:
            calls.append((key, "100"))
            kinds.append("key_alone")
        elif slot < 19:
            calls.append((f"1444{secrets.randbelow(10**7):07d}", "8" + key))
            kinds.append("unregistered_caller")
        else:
            calls.append((victims[(i // 20) % len(victims)], "8" + key))
            kinds.append("spoofed_victim")
    return calls, kinds


def pct(values: list[float], p: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 2)
    return round(statistics.quantiles(values, n=100, method="inclusive")[p - 1], 2)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("spoof-one", "sources"):  # issue 22's two attacks (bench/attack_more.py)
        from attack_more import main as more

        return more()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the hostile stream")
    ap.add_argument("--rate", type=float, default=20.0, help="hostile calls per second")
    ap.add_argument("--devices", type=int, default=100, help="enrolled devices (D)")
    ap.add_argument("--genuine", type=int, default=30, help="devices placing genuine calls, round robin")
    ap.add_argument("--genuine-every", type=float, default=1.0, help="seconds between genuine calls")
    ap.add_argument("--database-url", help="store for securelink (default: the embedded SQLite file)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.devices < args.genuine + 2 or args.seconds > 600 or args.rate > 100:
        raise SystemExit("attack: need devices >= genuine + 2, seconds <= 600, rate <= 100")

    metrics_port = free_port()
    home, env, cfg, numbers, secrets_ = install(
        args.database_url, args.devices, "1555010", "attack", f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    )
    budget = guess_budget(cfg.lockout.max_guess_probability, FMT.size, 3, args.devices)
    doctor = [line for line in cli(home, env, "doctor", check=False).splitlines() if "guess budget" in line]
    progress(f"budget {budget} key-alone guesses per source per 24 h; doctor: {doctor}")
    genuine_idx = list(range(args.genuine))
    victims = numbers[args.genuine : args.genuine + 2]
    n_hostile = int(args.seconds * args.rate)
    calls, kinds = hostile_calls(n_hostile, victims)
    timed = bench_e2e().timed_scenario(home / "uac_timed.xml")
    run_sipp = bench_e2e().run_sipp

    wait(lambda: not registered("securelink"), 15, "a previous securelink app to go away")
    log = (home / "run.log").open("ab")
    app = subprocess.Popen([sys.executable, "-m", "asterisk_securelink.cli", "run"], cwd=home, env=env, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    hostile: list[CallResult] = []
    genuine: list[dict[str, Any]] = []
    try:
        wait(lambda: registered("securelink"), 20, "securelink to register its Stasis app")
        with LockoutEvents() as ami:
            stream = threading.Thread(
                target=lambda: hostile.extend(
                    run_uac(calls, rate=args.rate, concurrency=80, timeout=args.seconds + 60)
                ),
                daemon=True,
            )
            progress(f"hostile stream: {n_hostile} calls at {args.rate}/s; genuine: one every {args.genuine_every} s")
            started = time.time()
            stream.start()
            j = 0
            while stream.is_alive() and time.time() - started < args.seconds:
                i = genuine_idx[j % len(genuine_idx)]
                j += 1
                key = derive_key(secrets_[i], Direction.INBOUND, epoch_at_ms(now_ms(), PERIOD), FMT)
                got = run_sipp([(numbers[i], "8" + key)], 1.0, timed)
                genuine.append({"device": i, "code": got["codes"][0] if got["codes"] else None,
                                "ms": got["rtts_ms"][0] if got["rtts_ms"] else None})  # fmt: skip
                time.sleep(max(0.0, started + j * args.genuine_every - time.time()))
            stream.join(args.seconds + 90)
            elapsed = time.time() - started
            time.sleep(2)
            events = list(ami.events)
        metrics_text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        app.wait(15)
        log.close()

    rows = json.loads(cli(home, env, "audit", "list", "--action", "verify", "--limit", "100000", "--json"))

    def of(pred: Any) -> Counter[str]:
        return Counter(r["result"] for r in rows if pred(r))

    genuine_numbers = {numbers[i] for i in genuine_idx}
    key_alone = of(lambda r: r["mode"] == "ani")
    unregistered = of(lambda r: r["mode"] == "dnis" and r["subject"] not in genuine_numbers | set(victims))
    per_victim = {v: dict(of(lambda r, v=v: r["mode"] == "dnis" and r["subject"] == v)) for v in victims}
    genuine_audit = of(lambda r: r["mode"] == "dnis" and r["subject"] in genuine_numbers)

    async def counted() -> int:
        store = Store.from_url(cfg.database_url)
        try:
            return sum((await LockoutStore(store).source_hours(TRUNK, 0)).values())
        finally:
            await store.close()

    evaluated = sum(n for verdict, n in key_alone.items() if verdict != "locked_out")
    source_events = [e for e in events if e.get("Kind") == "source"]
    lo = cfg.lockout
    summary: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
        "store": "postgresql" if args.database_url and "postgres" in args.database_url else "sqlite",
        "config": {
            "devices": args.devices,
            "format": FMT.pattern,
            "period": PERIOD,
            "W": 3,
            "max_guess_probability": lo.max_guess_probability,
            "max_total_guess_probability": lo.max_total_guess_probability,
            "two_factor": True,
        },
        "budget": budget,
        "doctor": doctor,
        "hostile": {
            "offered": n_hostile,
            "rate": args.rate,
            "seconds": round(elapsed, 1),
            "sip": dict(Counter(str(r.status_code) for r in hostile)),
            "by_kind": dict(Counter(kinds)),
            "admitted": sum(1 for r in hostile if r.status_code == 200),
            "key_alone_verdicts": dict(key_alone),
            "key_alone_evaluated": evaluated,
            "key_alone_counted_in_database": asyncio.run(counted()),
            "unregistered_caller_verdicts": dict(unregistered),
            "spoofed_victim_verdicts": per_victim,
            "two_factor_allowance_per_number_per_day": number_allowance(lo.max_guess_probability, FMT.size, 3),
        },
        "genuine": {
            "calls": len(genuine),
            "admitted_sip_200": sum(1 for g in genuine if g["code"] == "200"),
            "audit": dict(genuine_audit),
            "p50_ms": pct([g["ms"] for g in genuine if g["ms"] is not None], 50),
            "p99_ms": pct([g["ms"] for g in genuine if g["ms"] is not None], 99),
            "max_ms": max((g["ms"] for g in genuine if g["ms"] is not None), default=None),
        },
        "lockout_events": [
            {k: e.get(k) for k in ("Kind", "Source", "Device", "Count", "Limit", "Seconds")}
            | {"after_s": round(e["at"] - started, 2)}
            for e in events
        ],
        "metrics": [line for line in metrics_text.splitlines() if line.startswith("securelink_lockouts_total")],
    }
    ok = (
        summary["genuine"]["admitted_sip_200"] == summary["genuine"]["calls"] > 0
        and summary["hostile"]["admitted"] == 0
        and len(hostile) == n_hostile
        and evaluated <= budget
        and len(source_events) == 1
    )
    summary["property_holds"] = ok
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
