"""A guessing attack on the real Asterisk, a few seconds of it (the minute-long run is bench/attack.py): random
well-formed keys through the carrier trunk (ANI, the key alone) at 20 calls/s, interleaved with genuine two-factor
DNIS calls of enrolled devices. Every genuine call is admitted, no hostile one, and the hostile stream evaluates
exactly the source's guess budget before its key-alone guesses are refused (`locked_out`), announced by an AMI
`UserEvent: SecureLinkLockout`.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
from harness import Home, ami_monitor, fresh_window, new_home, no_channels_left, start_app, stop_app
from sipp import CallResult, run_uac
from support.ami import LOCKOUT, AmiMonitor

ANI = "100"
DEVICES = 4
BUDGET = 20
P = BUDGET * 3 * DEVICES / 10**10  # W = 3, D = 4, S = 10^10: a budget of exactly 20 guesses
HOSTILE = 80  # 4 s at 20 calls/s


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    h = new_home(tmp_path_factory.mktemp("securelink-attack"), max_guess_probability=P)
    yield h
    for p in h.procs:
        h.stop(p)


@pytest.fixture
async def lockouts() -> AsyncIterator[AmiMonitor]:
    """The testbed's `SecureLinkLockout` events while the test runs."""
    async with ami_monitor(LOCKOUT) as mon:
        yield mon


async def test_guessing_stream_spends_the_budget_and_genuine_calls_still_pass(home: Home, lockouts: AmiMonitor) -> None:
    devices = [home.add_device(f"Genuine {i}", f"1555777000{i}") for i in range(DEVICES)]
    assert f"key alone: {BUDGET + 1} failed calls a day from one source" in home.cli("doctor", check=False).stdout
    run, _ = start_app(home, agi=False)
    try:
        fresh_window(4.5)
        hostile: list[CallResult] = []
        guesses = [(f"{secrets.randbelow(10**10):010d}", ANI) for _ in range(HOSTILE)]
        stream = threading.Thread(target=lambda: hostile.extend(run_uac(guesses, rate=20, concurrency=40)))
        stream.start()
        genuine: list[int | None] = []
        for i, d in enumerate(devices):  # one two-factor call per device while the stream runs: its number picks it
            await asyncio.sleep(0.8)
            number = f"1555777000{i}"
            genuine += [r.status_code for r in await asyncio.to_thread(run_uac, [(number, "8" + home.key(d))])]
        await asyncio.to_thread(stream.join, 60)
        assert genuine == [200] * DEVICES
        assert [r.status_code for r in hostile] == [403] * HOSTILE
        rows = home.audit(until=lambda rows: len(rows) >= HOSTILE + DEVICES)
        key_alone = Counter(r["result"] for r in rows if r["mode"] == "ani")
        assert key_alone == Counter({"mismatch": BUDGET, "locked_out": HOSTILE - BUDGET})
        assert Counter(r["result"] for r in rows if r["mode"] == "dnis") == Counter({"admitted": DEVICES})
        deadline = time.monotonic() + 5
        while not lockouts.events and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        [event] = lockouts.events
        assert (event["Kind"], event["Source"], event["Count"], event["Limit"]) == (
            "source", "PJSIP/carrier", str(BUDGET), str(BUDGET)
        )  # fmt: skip
        no_channels_left()
    finally:
        stop_app(home, run)
