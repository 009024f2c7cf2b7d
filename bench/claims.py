#!/usr/bin/env python3
"""Claim load on the device API: 200 claims/s, 10% forged, for 30 s, against the real server on loopback TLS.

Two processes, so the server has its own event loop and core, as in production:

  server (a child: `bench/claims_server.py`): the real `DeviceApiServer` (`deviceapi/server.py`, TLS with a
      self-signed certificate made for the run) over either an in-memory `DeviceDirectory` (default) or the
      store-backed one (`store.api_store.ApiStore`, `--database-url`, migrated here; audit events written by the real
      `AuditWriter`). A call generator places the planned calls: each call's voucher is added 1 s before its claim is
      due and the call hangs up 5 s after (the voucher is ended), so about one voucher per device is live at a time.
      Every claim the directory answers is recorded; at the end it reports which vouchers were released.
  load (this process): `device.api_client.DeviceApiClient` on one shared connection pool, open loop: claim j is sent
      at T0 + j / rate whatever the earlier ones are doing (latency is measured from that scheduled time, so a
      server that falls behind shows up in it). 90% are genuine (the call's own device, its number); 10% forged,
      half with a wrong signature (the device's key_id, a wrong secret: 401) and half with a wrong number (correctly
      signed by a device, naming another device's live call: 404). Forged claims target live vouchers that no genuine
      claim touches, so "no forged claim released anything" is checked on both sides: the answers, and the server's
      own list of released vouchers (and, on a database, the audit table).

Bounded: at most `--max-in-flight` claims outstanding (more are counted as skipped), every request times out after
10 s, the run stops by itself after `--duration` plus a drain of at most 15 s, and the child is killed if it does
not exit.

Usage:
    python bench/claims.py [--rate 200] [--duration 30] [--forged 0.1] [--devices 1000]
                           [--database-url sqlite+aiosqlite:///claims.sqlite3] [--json results.json]
                           [--fresh-pg] [--api-store /tmp/api_store_before.py] [--label before]

`--fresh-pg`: `--database-url` names a PostgreSQL server; the run creates a database of its own there (random name)
and drops it afterwards. `--api-store FILE`: load `ApiStore` from another copy of `store/api_store.py` (e.g. the
version before a change: `git show REV:asterisk_securelink/store/api_store.py > FILE`), to compare side by side.

Progress goes to stderr; a markdown summary to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from claims_server import HANGUP_S, KINDS, LEAD_S, MASTER, Call, call_key, key_id, percentile, plan

from asterisk_securelink.core.slk1 import device_secret
from asterisk_securelink.device.api_client import (
    AuthenticationFailed,
    Credentials,
    DeviceApiClient,
    DeviceApiError,
    NotFound,
    tls_context,
)

DRAIN_S = 15.0  # after the last scheduled claim, at most this long for the answers
ROOT = str(Path(__file__).resolve().parents[1])
SERVER = str(Path(__file__).resolve().with_name("claims_server.py"))


# -- the load (this process) ----------------------------------------------------------------------------------------
@dataclass
class Sample:
    kind: str
    outcome: str  # released | unauthorized | not_found | already_claimed | error:<type> | skipped
    latency_ms: float  # from the scheduled time to the answer
    lag_ms: float  # from the scheduled time to the send
    released: bool
    right_key: bool


async def load(calls: Sequence[Call], server: str, ca: Path, t0: float, max_in_flight: int) -> list[Sample]:
    # one client address: at most 64 connections at once reach the server (issue 22, L5), so the pool stays under it
    connector = aiohttp.TCPConnector(limit=60)
    samples: list[Sample] = []
    in_flight = 0
    tls = tls_context(ca)  # one context: aiohttp pools connections per context
    async with aiohttp.ClientSession(connector=connector) as session:
        clients: dict[tuple[int, bool], DeviceApiClient] = {}

        def client(device: int, wrong: bool) -> DeviceApiClient:
            c = clients.get((device, wrong))
            if c is None:
                secret = hashlib.sha256(b"wrong" + key_id(device).encode()).digest() if wrong else None
                creds = Credentials(key_id(device), secret or device_secret(MASTER, key_id(device)))
                c = clients[(device, wrong)] = DeviceApiClient(server, creds, tls=tls, attempts=1, session=session)
            return c

        async def one(call: Call, due: float) -> None:
            nonlocal in_flight
            sent = time.time()
            released, right, outcome = False, False, "released"
            try:
                got = await client(call.claim_device, call.kind == "wrong_signature").claim(call.claim_number)
                released, right = True, got.call_key == call_key(call.index)
            except AuthenticationFailed:
                outcome = "unauthorized"
            except NotFound:
                outcome = "not_found"
            except DeviceApiError as exc:
                outcome = exc.code or f"error:{type(exc).__name__}"
            finally:
                in_flight -= 1
            done = time.time()
            samples.append(Sample(call.kind, outcome, (done - due) * 1000, (sent - due) * 1000, released, right))

        tasks: dict[asyncio.Task[None], Call] = {}
        for call in calls:
            due = t0 + call.at
            await asyncio.sleep(max(0.0, due - time.time()))
            if in_flight >= max_in_flight:
                samples.append(Sample(call.kind, "skipped", 0.0, 0.0, False, False))
                continue
            in_flight += 1
            tasks[asyncio.create_task(one(call, due))] = call
        _, pending = await asyncio.wait(tasks, timeout=DRAIN_S) if tasks else (set(), set())
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        samples.extend(Sample(tasks[t].kind, "cut", 0.0, 0.0, False, False) for t in pending)
    return samples


def summarize(samples: Sequence[Sample], kind: str | None) -> dict[str, Any]:
    chosen = [s for s in samples if kind is None or s.kind == kind]
    lat = [s.latency_ms for s in chosen if not s.outcome.startswith(("skipped", "cut"))]
    return {
        "n": len(chosen),
        "outcomes": dict(Counter(s.outcome for s in chosen)),
        "released": sum(s.released for s in chosen),
        "p50_ms": round(percentile(lat, 0.50), 2),
        "p90_ms": round(percentile(lat, 0.90), 2),
        "p99_ms": round(percentile(lat, 0.99), 2),
        "max_ms": round(max(lat), 2) if lat else None,
        "send_lag_p99_ms": round(percentile([s.lag_ms for s in chosen], 0.99), 2),
    }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)  # fmt: skip
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).resolve().parent).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "nproc": os.cpu_count(), "cpu": cpu,
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "aiohttp": aiohttp.__version__,
            "platform": platform.platform(), "git_commit": commit, "loadavg_at_start": os.getloadavg()}  # fmt: skip


async def fresh_pg_database(server_url: str) -> str:
    """A new, empty database on the PostgreSQL server of `server_url`; returns its asyncpg URL."""
    import secrets

    import asyncpg
    from sqlalchemy.engine import make_url

    from asterisk_securelink.config import async_database_url

    admin = make_url(async_database_url(server_url, Path.cwd()))
    name = "securelink_bench_" + secrets.token_hex(6)
    conn = await asyncpg.connect(host=admin.host, port=admin.port or 5432, user=admin.username,
                                 password=admin.password, database=admin.database)  # fmt: skip
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin.set(database=name).render_as_string(hide_password=False)


async def drop_pg_database(server_url: str, url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    from asterisk_securelink.config import async_database_url

    admin = make_url(async_database_url(server_url, Path.cwd()))
    conn = await asyncpg.connect(host=admin.host, port=admin.port or 5432, user=admin.username,
                                 password=admin.password, database=admin.database)  # fmt: skip
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if not args.fresh_pg:
        return await run_on(args, args.database_url)
    url = await fresh_pg_database(args.database_url)
    try:
        return await run_on(args, url)
    finally:
        await drop_pg_database(args.database_url, url)


async def run_on(args: argparse.Namespace, database_url: str | None) -> dict[str, Any]:
    spec = {
        "rate": args.rate,
        "duration": args.duration,
        "forged": args.forged,
        "devices": args.devices,
        "seed": args.seed,
        "database_url": database_url,
        "api_store": args.api_store and str(args.api_store),
    }
    calls = plan(args.rate, args.duration, args.forged, args.devices, args.seed)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = await asyncio.create_subprocess_exec(sys.executable, SERVER, json.dumps(spec), env=env,
                                                 stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                 limit=64 * 1024 * 1024)  # fmt: skip  # the STATS line lists ids
    assert child.stdin is not None and child.stdout is not None
    try:
        ready = (await asyncio.wait_for(child.stdout.readline(), 300)).decode().split()
        if not ready or ready[0] != "READY":
            raise SystemExit("the server did not start")
        port, ca = int(ready[1]), Path(ready[2])
        t0 = time.time() + 1.5
        child.stdin.write(f"GO {t0}\n".encode())
        await child.stdin.drain()
        print(f"claims: {len(calls)} at {args.rate}/s for {args.duration} s, server on 127.0.0.1:{port}",
              file=sys.stderr)  # fmt: skip
        wall = time.time()
        samples = await load(calls, f"https://127.0.0.1:{port}", ca, t0, args.max_in_flight)
        wall = time.time() - wall
        child.stdin.write(b"STOP\n")
        await child.stdin.drain()
        line = (await asyncio.wait_for(child.stdout.readline(), 60)).decode()
        server = json.loads(line.removeprefix("STATS ")) if line.startswith("STATS ") else {"error": line.strip()}
        await asyncio.wait_for(child.wait(), 30)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    forged_ids = {f"call-{c.index}" for c in calls if c.kind != "genuine"}
    released = set(server.get("released", []))
    audit = set(server.get("audit_released", released))
    params = {**spec, "database_url": database_url and database_url.split(":", 1)[0], "label": args.label,
              "max_in_flight": args.max_in_flight, "lead_s": LEAD_S, "hangup_s": HANGUP_S,
              "tls": "loopback, self-signed P-256 certificate", "client_retries": 0}  # fmt: skip
    result = {
        "machine": machine(),
        "params": params,
        "wall_s": round(wall, 2),
        "all": summarize(samples, None),
        **{kind: summarize(samples, kind) for kind in KINDS},
        "genuine_wrong_key": sum(1 for s in samples if s.released and not s.right_key),
        "server": {k: v for k, v in server.items() if k not in ("released", "audit_released")},
        "forged_released_by_answer": sum(1 for s in samples if s.kind != "genuine" and s.released),
        "forged_released_by_server": len(released & forged_ids),
        "forged_released_by_audit": len(audit & forged_ids),
        "server_released": len(released),
    }
    return result


def markdown(r: dict[str, Any]) -> str:
    rows = ["| claims | n | outcomes | released | p50 | p90 | p99 | max |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for kind in ("all", *KINDS):
        s = r[kind]
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items()))
        rows.append(f"| {kind} | {s['n']} | {outcomes} | {s['released']} | {s['p50_ms']} ms | {s['p90_ms']} ms | "
                    f"{s['p99_ms']} ms | {s['max_ms']} ms |")  # fmt: skip
    store = r["params"]["database_url"] or "in-memory directory"
    if r["params"].get("label"):
        store += f", {r['params']['label']}"
    return "\n".join([
        f"Claims at {r['params']['rate']}/s for {r['params']['duration']} s ({store}), wall {r['wall_s']} s; "
        f"server CPU {r['server'].get('cpu_s')} s; commit {r['machine']['git_commit']}, {r['machine']['date']}.",
        "", *rows, "",
        f"forged claims that released a key: {r['forged_released_by_answer']} by the answers, "
        f"{r['forged_released_by_server']} by the server's record, {r['forged_released_by_audit']} by the audit; "
        f"genuine claims answered with a wrong key: {r['genuine_wrong_key']}",
    ])  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=200.0, help="claims per second (default 200)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds (default 30)")
    p.add_argument("--forged", type=float, default=0.10, help="fraction of forged claims (default 0.1)")
    p.add_argument("--devices", type=int, default=1000, help="enrolled devices (default 1000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-in-flight", type=int, default=2000, help="claims outstanding at most (default 2000)")
    p.add_argument("--database-url", help="use the store-backed directory on this bench-only database (migrated)")
    p.add_argument(
        "--fresh-pg",
        action="store_true",
        help="--database-url is a PostgreSQL server: run on a new database there, dropped afterwards",
    )
    p.add_argument("--api-store", type=Path, help="load ApiStore from this copy of store/api_store.py instead")
    p.add_argument("--label", default="", help="a name for this run in the results (e.g. before, after)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    if args.fresh_pg and not (args.database_url or "").startswith("postgres"):
        p.error("--fresh-pg needs a postgresql:// --database-url")
    if not (0 < args.rate <= 5000 and 0 < args.duration <= 600 and 0 <= args.forged <= 1 and args.devices >= 2):
        p.error("out of range: 0 < rate <= 5000, 0 < duration <= 600, 0 <= forged <= 1, devices >= 2")
    result = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    ok = (result["forged_released_by_answer"] == result["forged_released_by_server"]
          == result["forged_released_by_audit"] == result["genuine_wrong_key"] == 0)  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
