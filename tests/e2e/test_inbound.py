"""Inbound admission on the real Asterisk: SIPp calls -> PJSIP -> dialplan -> Stasis/AGI -> `securelink run`.

The testbed routes by the dialed number (testbed/asterisk/extensions.conf):
  1XX      -> [securelink-inbound]           ANI mode (caller number = key), Stasis
  2XX      -> [securelink-inbound-agi]       ANI mode through FastAGI
  8 + key  -> [securelink-inbound-dnis]      DNIS mode (dialed number = key, after the 8), Stasis, two-factor on
"""

from __future__ import annotations

import asyncio
import time
from subprocess import Popen

import pytest
from harness import PERIOD, AmiMonitor, Home, app_registered, fresh_window, next_window, no_channels_left, wait_until
from sipp import run_uac

ANI = "100"
AGI = "200"


def calls(*pairs: tuple[str, str]) -> list[int | None]:
    """One call after another (SIPp places the next when the last has ended), so the audit rows and the AMI events
    come in the order of `pairs`: a verdict that needs the store (a wrong key) takes longer than one that does not
    (no caller number), and overlapping calls could be recorded out of order."""
    return [r.status_code for r in run_uac(list(pairs), rate=20, concurrency=1)]


async def acalls(*pairs: tuple[str, str]) -> list[int | None]:
    return await asyncio.to_thread(calls, *pairs)


async def wait_events(ami: AmiMonitor, n: int, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(ami.events) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return ami.results()


def verdicts(home: Home, since: int, n: int) -> list[str]:
    """The verdicts audited after row `since`, once there are `n` (audit rows are written in the background)."""
    wait_until(lambda: len([e for e in home.audit() if e["id"] > since]) >= n, 10, f"{n} audit rows")
    return [e["result"] for e in home.audit() if e["id"] > since]


def last_audit_id(home: Home) -> int:
    rows = home.audit()
    return rows[-1]["id"] if rows else 0


async def test_current_and_previous_windows_admitted(home: Home, app: Popen[bytes], ami: AmiMonitor) -> None:
    a = home.add_device("Cur", "15550000001")
    b = home.add_device("Prev", "15550000002")
    fresh_window()
    assert await acalls((home.key(a), ANI)) == [200]
    prev_key = home.key(b)
    await asyncio.to_thread(next_window)
    assert await acalls((prev_key, ANI)) == [200]  # the previous window is still accepted
    assert await wait_events(ami, 2) == ["admitted", "admitted"]
    assert {e["Device"] for e in ami.events} == {str(a["id"]), str(b["id"])}
    assert all(e["Direction"] == "inbound" and e["Mode"] == "ani" and e["Uniqueid"] for e in ami.events)
    no_channels_left()


async def test_rejections(home: Home, app: Popen[bytes], ami: AmiMonitor) -> None:
    a = home.add_device("Rej", "15550000003")
    c = home.add_device("Revoked", "15550000004")
    home.cli("device", "revoke", str(c["id"]), "--reason", "stolen")
    old = home.key(a, at=time.time() - 2 * PERIOD)
    fresh_window(3.5)
    current = home.key(a)
    since = last_audit_id(home)
    results = await acalls(
        (old, ANI),  # two windows old
        (current, ANI),  # admitted
        (current, ANI),  # the same key again: replayed
        ("15550000003", ANI),  # the device's own mobile number
        (home.key(c), ANI),  # a revoked device's valid key: what a wrong key gets (no oracle)
        ("", ANI),  # anonymous
    )
    assert results == [403, 200, 403, 403, 403, 403]
    assert verdicts(home, since, 6) == ["mismatch", "admitted", "replayed", "mismatch", "mismatch", "anonymous"]
    assert sorted(await wait_events(ami, 6)) == sorted(
        ["mismatch", "admitted", "replayed", "mismatch", "mismatch", "anonymous"]
    )
    no_channels_left()


@pytest.mark.parametrize(
    "caller",
    [
        "abcdefghij",
        "9" * 64,
        "%27%3B%20DROP%20TABLE%20devices%3B--",
        "%E2%98%8E%EF%B8%8F12345",
        "+-+-+-",
        "1%0D%0A2345",
    ],
    ids=["letters", "64-digits", "sql", "unicode", "punctuation", "crlf"],
)
async def test_malformed_callers_are_rejected_without_tracebacks(
    home: Home, app: Popen[bytes], ami: AmiMonitor, caller: str
) -> None:
    since = last_audit_id(home)
    assert await acalls((caller, ANI)) == [403]
    assert verdicts(home, since, 1) in (["malformed"], ["anonymous"])
    assert await wait_events(ami, 1) in (["malformed"], ["anonymous"])
    assert "Traceback" not in home.log_text("run")
    no_channels_left()


async def test_dnis_mode_with_two_factor(home: Home, app: Popen[bytes], ami: AmiMonitor) -> None:
    a = home.add_device("Dnis A", "15550000005")
    b = home.add_device("Dnis B", "15550000006")
    fresh_window()
    since = last_audit_id(home)
    results = await acalls(
        ("15550000005", "8" + home.key(b)),  # A dials B's key: the caller's number picks A, so no
        ("15550000005", "8" + home.key(a)),  # A dials its own key
    )
    assert results == [403, 200]
    assert verdicts(home, since, 2) == ["mismatch", "admitted"]
    events = await wait_events(ami, 2)
    assert events == ["mismatch", "admitted"]
    assert ami.events[1]["Mode"] == "dnis" and ami.events[1]["Device"] == str(a["id"])
    no_channels_left()


async def test_agi_mode(home: Home, app: Popen[bytes], ami: AmiMonitor) -> None:
    a = home.add_device("Agi", "15550000007")
    fresh_window()
    k = home.key(a)
    since = last_audit_id(home)
    assert await acalls((k, AGI), (k, AGI), ("12345", AGI)) == [200, 403, 403]
    assert verdicts(home, since, 3) == ["admitted", "replayed", "mismatch"]
    assert await wait_events(ami, 3) == ["admitted", "replayed", "mismatch"]
    no_channels_left()


async def test_unregistered_device_registers_on_its_first_call(home: Home, app: Popen[bytes]) -> None:
    d = home.add_device("New phone", "15550000008", register=False)
    fresh_window()
    assert await acalls((home.key(d), ANI)) == [200]
    shown = home.cli("device", "show", str(d["id"]), "--json").stdout
    assert '"status": "registered"' in shown
    assert "device.register" in [e["action"] for e in home.audit("device.register")]
    no_channels_left()


def test_app_stopped_calls_rejected_by_fallback(home: Home, app: Popen[bytes]) -> None:
    d = home.add_device("Fallback", "15550000009")
    run = next(p for p in home.procs if p.args[-1] == "run")  # type: ignore[index]
    home.stop(run)
    wait_until(lambda: not app_registered(), 10, "the app to unregister")
    fresh_window()
    assert calls((home.key(d), ANI)) == [403]  # a valid key, but nobody to verify it: never admitted
    no_channels_left()
