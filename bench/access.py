#!/usr/bin/env python3
"""Admission cost by method, side by side in one run: `ani` (the key as caller number: StasisStart to the call
continued), `dtmf` (the key by DTMF after answer: from the key's last digit, followed at once by `2001#`, to the
verdict applied) and `intent` (a live intent: from StasisStart to the call continued, before answer).

What is measured is the app's own work on a real, migrated database (SQLite, or PostgreSQL with
`--database-url`), with the channel recorded instead of Asterisk: the verification, the single-use spend, the
variables and the continue. Asterisk's own time (the ARI round trips, the SIP signalling) is not in it; for that,
`bench/e2e.py` measures whole calls. Every call is a distinct genuine device (no replays).

Usage:
    python bench/access.py [--calls 300] [--devices 1000] [--database-url URL] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from asterisk_securelink import config
from asterisk_securelink.app import verifier
from asterisk_securelink.asterisk.ari.events import Channel, ChannelDtmfReceived
from asterisk_securelink.audit import AuditWriter
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret, now_ms
from asterisk_securelink.inbound.access import AccessHandler
from asterisk_securelink.inbound.handlers import Handlers
from asterisk_securelink.notifier import Notifier
from asterisk_securelink.stasis import CallInfo
from asterisk_securelink.store.intents import IntentStore
from asterisk_securelink.store.lanes import lanes_for
from asterisk_securelink.store.migrations import upgrade
from asterisk_securelink.store.store import Store

MASTER = bytes(range(32))
ACCESS = "+12155550400"


class Channels:
    """What the handlers do to a channel, timed: `done[channel]` is when it was continued or hung up."""

    def __init__(self) -> None:
        self.done: dict[str, float] = {}
        self._events: dict[str, asyncio.Event] = {}

    async def wait(self, channel_id: str) -> None:
        await self._events.setdefault(channel_id, asyncio.Event()).wait()

    def _end(self, channel_id: str) -> None:
        self.done[channel_id] = time.perf_counter()
        self._events.setdefault(channel_id, asyncio.Event()).set()

    async def answer(self, channel_id: str) -> None:
        return None

    async def play(self, channel_id: str, media: str, playback_id: str) -> None:
        return None

    async def stop_playback(self, playback_id: str) -> bool:
        return True

    async def get_channel_var(self, channel_id: str, name: str) -> str:
        return ""

    async def set_channel_var(self, channel_id: str, name: str, value: str) -> None:
        return None

    async def continue_in_dialplan(self, channel_id: str, *args: Any) -> None:
        self._end(channel_id)

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
        self._end(channel_id)
        return True


def mobile(i: int) -> str:
    return f"+1215{i:07d}"


def summary(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    p99 = s[max(0, int(0.99 * len(s)) - 1)]
    return {
        "n": len(s),
        "p50_ms": statistics.median(s) * 1000,
        "p99_ms": p99 * 1000,
        "mean_ms": statistics.fmean(s) * 1000,
    }


async def run(url: str, calls: int, devices: int, workdir: Path) -> dict[str, Any]:
    await upgrade(url)
    store = Store.from_url(url)
    cfg = config.build(
        {"calling": {"access_numbers": [ACCESS]}, "inbound": {"require_registered_number": False}}, {}, workdir
    )
    try:
        rows = []
        for i in range(devices):
            d = await store.add_device(f"B{i}", mobile(i), None, f"bench-{i:06d}", "bench")
            rows.append(await store.update_device(d.id, "device.register", "bench", status="registered"))
        audit = AuditWriter(store.audit_many)
        svc = verifier(cfg, store, MASTER, audit)
        await svc.start()
        intents = IntentStore(store, lanes_for(store.engine))
        chans = Channels()
        notifier = Notifier()
        handlers = Handlers(cfg, svc, chans, notifier)  # type: ignore[arg-type]
        access = AccessHandler(cfg, svc, chans, notifier, intents=intents)  # type: ignore[arg-type]
        epoch = now_ms() // (cfg.keys.period * 1000)

        def key(i: int) -> str:
            return derive_key(device_secret(MASTER, rows[i].key_id), Direction.INBOUND, epoch, cfg.inbound_fmt)

        out: dict[str, Any] = {}
        per = min(calls, devices // 3)
        ani, dtmf, intent = [], [], []
        for n in range(per):  # interleaved, so the machine's noise falls on every method alike
            i = n * 3
            cid = f"ani-{n}"
            t = time.perf_counter()
            await handlers.stasis_start(CallInfo(cid, "PJSIP/carrier-1", key(i), "100", ("inbound", "ani")))
            ani.append(chans.done[cid] - t)

            i += 1
            cid = f"dtmf-{n}"
            await access.stasis_start(CallInfo(cid, "PJSIP/carrier-2", mobile(i), ACCESS, ("inbound", "access")))
            k = key(i)
            for d in k[:-1]:
                await access.on_event(ChannelDtmfReceived(type="ChannelDtmfReceived", channel=Channel(cid), digit=d))
            await asyncio.sleep(0)
            t = time.perf_counter()  # the key's last digit: check and spend, then `2001#` ends the destination
            for d in k[-1] + "2001#":
                await access.on_event(ChannelDtmfReceived(type="ChannelDtmfReceived", channel=Channel(cid), digit=d))
            await chans.wait(cid)
            dtmf.append(chans.done[cid] - t)

            i += 1
            cid = f"intent-{n}"
            await intents.create(rows[i].id, ACCESS, "2001", now_ms(), 30, None, quiet_s=0)
            t = time.perf_counter()
            await access.stasis_start(CallInfo(cid, "PJSIP/carrier-3", mobile(i), ACCESS, ("inbound", "access")))
            intent.append(chans.done[cid] - t)
        out = {"ani": summary(ani), "dtmf": summary(dtmf), "intent": summary(intent)}
        await access.close(1)
        await audit.drain()
        await audit.close()
        return out
    finally:
        await store.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--database-url", help="default: a fresh SQLite file")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.sqlite3'}"
        result = asyncio.run(run(url, args.calls, args.devices, Path(tmp)))
    result["machine"] = {"python": sys.version.split()[0], "platform": platform.platform()}
    result["database"] = "postgresql" if args.database_url else "sqlite"
    print("| method | calls | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|---|")
    for method in ("ani", "dtmf", "intent"):
        r = result[method]
        print(f"| {method} | {r['n']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['mean_ms']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
