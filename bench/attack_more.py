#!/usr/bin/env python3
"""Two more attacks of issue 22, measured on the real Asterisk testbed and the real FastAGI server
(docs/benchmarks.md, "Under a guessing attack": "One user's number spoofed" and "Sources by channel technology").

  spoof-one  120 hostile calls at 20 calls/s through one trunk (PJSIP/carrier): half of them random keys dialed
             (DNIS) spoofing one user's registered number, half random keys as the caller number (key alone); then
             that user's genuine two-factor call, at once. Checked: no hostile call admitted, the genuine call
             admitted at once (M5: the allowance per registered number follows the target, so 60 spoofed calls do
             not lock its owner out).
  sources    300 key-alone guesses through `securelink agi` (a FastAGI client playing Asterisk) on channels named
             like DAHDI (`DAHDI/i1/<caller>-<seq>`), IAX2 (`IAX2/<host>:<port>-<callno>`) and Local
             (`Local/<exten>@<ctx>-<seq>;2`), 100 each, a fresh caller number on every call. Checked: each technology
             is one source, so the failed guesses evaluated are at most one budget per technology, not 300 (H1).

Loopback only, bounded (timeouts everywhere; the app is stopped at the end). Needs the testbed up (`make testbed`).

    python3 bench/attack_more.py spoof-one|sources [--database-url URL] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "e2e"), str(REPO / "bench"), str(REPO / "tests")]

from attack import FMT, PERIOD, cli, free_port, install, progress, registered, wait  # noqa: E402
from sipp import run_uac  # noqa: E402
from support.agi import agi_env, answer_commands  # noqa: E402

from asterisk_securelink.core.lockout import guess_budget, number_allowance  # noqa: E402
from asterisk_securelink.core.slk1 import Direction, derive_key, epoch_at_ms, now_ms  # noqa: E402

DEVICES = 100


def start(home: Path, env: dict[str, str], command: str) -> subprocess.Popen[bytes]:
    log = (home / f"{command}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "asterisk_securelink.cli", command], cwd=home, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(15)


def verdicts(home: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    rows = json.loads(cli(home, env, "audit", "list", "--action", "verify", "--limit", "100000", "--json"))
    assert isinstance(rows, list)
    return rows


def spoof_one(database_url: str | None) -> dict[str, Any]:
    home, env, cfg, numbers, secrets_ = install(database_url, DEVICES, "1555020", "attack2")
    victim = 7
    hostile: list[tuple[str, str]] = []
    for i in range(120):
        key = f"{secrets.randbelow(10**10):010d}"
        hostile.append((numbers[victim], "8" + key) if i % 2 == 0 else (key, "100"))
    wait(lambda: not registered("securelink"), 15, "a previous securelink app to go away")
    app = start(home, env, "run")
    try:
        wait(lambda: registered("securelink"), 20, "securelink to register its Stasis app")
        progress("hostile: 120 calls at 20/s, half spoofing the victim's registered number")
        started = time.time()
        results = run_uac(hostile, rate=20, concurrency=80, timeout=90)
        hostile_s = time.time() - started
        key = derive_key(secrets_[victim], Direction.INBOUND, epoch_at_ms(now_ms(), PERIOD), FMT)
        t0 = time.monotonic()
        [genuine] = run_uac([(numbers[victim], "8" + key)], rate=1, concurrency=1, timeout=30)
        genuine_ms = round((time.monotonic() - t0) * 1000, 1)
    finally:
        stop(app)
    rows = verdicts(home, env)
    spoofed = Counter(r["result"] for r in rows if r["mode"] == "dnis" and r["subject"] == numbers[victim])
    key_alone = Counter(r["result"] for r in rows if r["mode"] == "ani")
    lo = cfg.lockout
    out = {
        "scenario": "spoof-one",
        "hostile": {
            "offered": len(hostile),
            "seconds": round(hostile_s, 1),
            "sip": dict(Counter(str(r.status_code) for r in results)),
            "admitted": sum(1 for r in results if r.status_code == 200),
        },
        "victim_verdicts": dict(spoofed),
        "key_alone_verdicts": dict(key_alone),
        "allowance_per_number_per_day": number_allowance(lo.max_guess_probability, FMT.size, 3),
        "budget_per_source_per_day": guess_budget(lo.max_guess_probability, FMT.size, 3, DEVICES),
        "genuine": {"sip": genuine.status_code, "wall_ms": genuine_ms},
    }
    out["property_holds"] = bool(
        out["hostile"]["admitted"] == 0 and len(results) == len(hostile) and genuine.status_code == 200
    )
    return out


CHANNELS = {
    "DAHDI": lambda i, caller: f"DAHDI/i1/{caller}-{i + 1:x}",
    "IAX2": lambda i, caller: f"IAX2/192.0.2.7:{4569 + i}-{1000 + i}",
    "Local": lambda i, caller: f"Local/{caller}@from-trunk-{i:08x};2",
}


async def agi_guess(port: int, tech: str, i: int) -> str:
    caller = f"{secrets.randbelow(10**10):010d}"  # a random key as the caller number: a key-alone guess
    env = agi_env("verify", "ani", agi_channel=CHANNELS[tech](i, caller), agi_type=tech, agi_callerid=caller,
                  agi_uniqueid=f"1790000000.{tech}{i}", agi_dnid="100", agi_extension="100")  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(env)
    await writer.drain()
    for command in await answer_commands(reader, writer):
        if command.startswith("SET VARIABLE SECURELINK_RESULT "):
            return command.split(" ", 3)[3].strip('"')
    return "no answer"


def sources(database_url: str | None) -> dict[str, Any]:
    port = free_port()
    agi_config = f'[agi]\nhost = "127.0.0.1"\nport = {port}\n'
    home, env, cfg, _numbers, _secrets = install(database_url, DEVICES, "1555020", "attack2", agi_config)
    agi = start(home, env, "agi")
    got: dict[str, Counter[str]] = {}
    try:
        wait(lambda: "listening" in (home / "agi.log").read_text() or _open(port), 20, "securelink agi to listen")
        progress("300 key-alone guesses over FastAGI: 100 DAHDI-, 100 IAX2-, 100 Local-named channels")

        async def go() -> None:
            for tech in CHANNELS:
                got[tech] = Counter()
                for batch in range(0, 100, 10):  # 10 at a time, as a busy trunk would send them
                    answers = await asyncio.gather(*(agi_guess(port, tech, i) for i in range(batch, batch + 10)))
                    got[tech].update(answers)

        started = time.time()
        asyncio.run(go())
        seconds = round(time.time() - started, 1)
    finally:
        stop(agi)
    rows = verdicts(home, env)
    budget = guess_budget(cfg.lockout.max_guess_probability, FMT.size, 3, DEVICES)
    by_source = Counter(r["source"] for r in rows)
    evaluated = Counter(r["source"] for r in rows if r["result"] == "mismatch")
    out = {
        "scenario": "sources",
        "seconds": seconds,
        "verdicts_by_technology": {t: dict(c) for t, c in got.items()},
        "sources": dict(by_source),
        "evaluated_by_source": dict(evaluated),
        "budget_per_source_per_day": budget,
        "admitted": sum(c["admitted"] for c in got.values()),
    }
    out["property_holds"] = bool(
        out["admitted"] == 0
        and len(by_source) == 3
        and sum(by_source.values()) == 300
        and all(n <= budget for n in evaluated.values())
    )
    return out


def _open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=["spoof-one", "sources"])
    ap.add_argument("--database-url", help="store for securelink (default: the embedded SQLite file)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = (spoof_one if args.scenario == "spoof-one" else sources)(args.database_url)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
        "store": "postgresql" if args.database_url and "postgres" in args.database_url else "sqlite",
        **result,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if result["property_holds"] else 1


if __name__ == "__main__":
    sys.exit(main())
