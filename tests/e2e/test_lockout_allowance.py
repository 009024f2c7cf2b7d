"""Issue 22, M5, on the real Asterisk: a registered number's allowance of failed two-factor guesses follows
`lockout.max_guess_probability` (floor(P·S/W): with P = 1.5e-8, 10-digit keys and W = 3 windows, 50 a day), shared by
every node. 51 DNIS guesses spoofing an enrolled device's number: 50 `mismatch`, then `locked_out`, on AMI and in the
audit. (The other e2e modules run with P = 1.0, where no allowance ever runs out.)"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from subprocess import Popen

import pytest
from harness import AmiMonitor, Home, new_home, no_channels_left, start_app, stop_app
from sipp import run_uac

P = 1.5e-8  # x 10^10 keys / 3 windows = an allowance of 50 failed guesses per registered number


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    h = new_home(tmp_path_factory.mktemp("allowance"), max_guess_probability=P)
    yield h


@pytest.fixture(scope="module")
def app(home: Home) -> Iterator[Popen[bytes]]:
    run, _ = start_app(home, agi=False)
    yield run
    stop_app(home, run)


async def test_a_spoofed_number_fails_its_allowance_then_is_locked_out(
    home: Home, app: Popen[bytes], ami: AmiMonitor
) -> None:
    home.add_device("Victim", "15559990000")
    pairs = [("15559990000", f"8{1000000000 + i}") for i in range(51)]  # two-factor DNIS guesses from its number
    results = await asyncio.to_thread(lambda: [r.status_code for r in run_uac(pairs, rate=20)])
    assert results == [403] * 51
    async with asyncio.timeout(20):
        while len(ami.events) < 51:
            await asyncio.sleep(0.05)
    assert Counter(ami.results()) == Counter({"mismatch": 50, "locked_out": 1})
    rows = home.audit(until=lambda rows: len([e for e in rows if e["result"] in ("mismatch", "locked_out")]) >= 51)
    guesses = [e["result"] for e in rows if e["result"] in ("mismatch", "locked_out")]
    assert Counter(guesses) == Counter({"mismatch": 50, "locked_out": 1})  # the audit shows it too
    no_channels_left()
