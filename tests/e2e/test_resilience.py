"""Under load, faults and attack, on the real Asterisk: soak, Asterisk restart, two nodes, database loss.

Bounded in time, loopback only. Each test starts its own `securelink run` process(es).
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    APP,
    PERIOD,
    Home,
    add_devices,
    app_registered,
    fresh_window,
    new_home,
    no_channels_left,
    start_app,
    stop_app,
    wait_until,
)
from sipp import run_uac
from support.pg import empty_pg_database

from asterisk_securelink.asterisk.ari.client import BACKOFF_CAP
from testbed import asterisk_cli, ensure_up

ANI = "100"
NODE2 = "300"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def verify_events(home: Home) -> list[dict[str, object]]:
    return home.audit("verify")


@pytest.fixture
def soak_home(tmp_path: Path) -> Iterator[Home]:
    h = new_home(tmp_path)
    yield h
    for p in h.procs:
        h.stop(p)


def test_soak_mixed_traffic(soak_home: Home) -> None:
    """2,000 calls at 20 calls/s, mixed; zero wrong admissions, zero rejected valid keys, one audit per call."""
    home = soak_home
    batches, per_batch = 20, 100
    devices = add_devices(home, batches * 30, "soak")
    run, agi = start_app(home, agi=False)
    rss: list[int] = []
    expected: list[int] = []
    got: list[int | None] = []
    for b in range(batches):
        fresh_window(PERIOD - 0.5)  # start each batch early in a window: its keys stay live for the whole batch
        now = time.time()
        cur = devices[b * 30 : b * 30 + 20]
        prev = devices[b * 30 + 20 : b * 30 + 30]
        calls: list[tuple[str, str]] = []
        want: list[int] = []
        for d in cur:
            calls.append((home.key(d, now), ANI))
            want.append(200)
        for d in prev:
            calls.append((home.key(d, now - PERIOD), ANI))
            want.append(200)
        for d in cur[:10]:
            calls.append((home.key(d, now), ANI))  # replayed: same key, later call
            want.append(403)
        for d in cur[10:20]:
            calls.append((home.key(d, now - 2 * PERIOD), ANI))  # stale: two windows old
            want.append(403)
        for _ in range(20):
            calls.append((f"{secrets.randbelow(10**10):010d}", ANI))  # spoofed
            want.append(403)
        for i in range(15):
            calls.append(("" if i % 3 == 0 else "anonymous" if i % 3 == 1 else "restricted", ANI))  # anonymous
            want.append(403)
        for i in range(15):
            calls.append((["abc", "9" * 30, "1%0D%0A", "%27OR%201%3D1", "%E2%98%8E"][i % 5], ANI))  # malformed
            want.append(403)
        assert len(calls) == per_batch
        results = [r.status_code for r in run_uac(calls, rate=25, concurrency=40, timeout=60)]
        got.extend(results)
        expected.extend(want)
        rss.append(rss_kib(run.pid))
    wrong_admissions = sum(1 for g, w in zip(got, expected, strict=True) if g == 200 and w != 200)
    rejected_valid = sum(1 for g, w in zip(got, expected, strict=True) if w == 200 and g != 200)
    assert (wrong_admissions, rejected_valid) == (0, 0), list(zip(got, expected, strict=True))
    no_channels_left(20)
    assert len(verify_events(home)) == batches * per_batch  # exactly one audit event per call
    # memory flat: after warm-up (first 5 batches) the RSS grows by less than 8 MiB over the rest of the run
    assert rss[-1] - rss[4] < 8 * 1024, rss
    stop_app(home, run, agi)


def test_restart_of_asterisk_reconnects_quickly(soak_home: Home) -> None:
    home = soak_home
    [d] = add_devices(home, 1, "rs")
    run, agi = start_app(home, agi=False)
    try:
        asterisk_cli("core restart now")
        wait_until(lambda: not app_registered(), 15, "Asterisk to go down")
        ensure_up()  # waits for ARI and AMI to answer again
        back = time.monotonic()
        wait_until(app_registered, 15, "the app to reconnect")
        # reconnects at its next attempt: at most the longest wait between attempts after ARI is back, plus the connect
        assert time.monotonic() - back < BACKOFF_CAP + 3
        fresh_window()
        assert [r.status_code for r in run_uac([(home.key(d), ANI)])] == [200]
        no_channels_left()
    finally:
        stop_app(home, run, agi)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with empty_pg_database() as url:
        yield url


def test_two_nodes_share_single_use(tmp_path: Path, pg_url: str) -> None:
    """Two app processes (apps securelink and securelink2) on one PostgreSQL: a key used on one is replayed on the
    other."""
    (tmp_path / "a").mkdir()
    a = new_home(tmp_path / "a", db_url=pg_url, app=APP)
    b_path = tmp_path / "b"
    b_path.mkdir()  # the second node shares the database and the master key
    (b_path / "master.key").write_bytes((a.path / "master.key").read_bytes())
    (b_path / "master.key").chmod(0o600)
    b = new_home(b_path, db_url=pg_url, app="securelink2")
    [d] = add_devices(a, 1, "two")
    run_a, _ = start_app(a, agi=False)
    run_b, _ = start_app(b, name="securelink2", agi=False)
    try:
        fresh_window()
        k = a.key(d)
        assert [r.status_code for r in run_uac([(k, ANI)])] == [200]
        assert [r.status_code for r in run_uac([(k, NODE2)])] == [403]
        results = [e["result"] for e in verify_events(a)]
        assert results == ["admitted", "replayed"]
        no_channels_left()
    finally:
        stop_app(a, run_a)
        stop_app(b, run_b)


def pg_cluster(action: str) -> None:
    ver = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    subprocess.run(
        [
            "pg_ctlcluster",
            "--skip-systemctl-redirect",
            ver,
            "main",
            action,
            *(["-m", "fast"] if action == "stop" else []),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    if action == "start":
        wait_until(
            lambda: subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"], check=False).returncode == 0,
            30,
            "PostgreSQL",
        )


def test_database_loss_fails_closed_and_recovers(tmp_path: Path, pg_url: str) -> None:
    home = new_home(tmp_path, db_url=pg_url)
    devices = add_devices(home, 3, "db")
    run, _ = start_app(home, agi=False)
    try:
        fresh_window()
        assert [r.status_code for r in run_uac([(home.key(devices[0]), ANI)])] == [200]
        pg_cluster("stop")
        try:
            fresh_window()
            outage = [(home.key(devices[1]), ANI), ("12345", ANI), ("", ANI)]
            down = [r.status_code for r in run_uac(outage, concurrency=1)]  # one after another: audited in order
            assert down == [403, 403, 403]  # a valid key too: the decision cannot be made, so it fails closed
            assert run.poll() is None  # the service stays up
        finally:
            pg_cluster("start")
        fresh_window()
        assert [r.status_code for r in run_uac([(home.key(devices[2]), ANI)])] == [200]  # recovered by itself
        # the audit writer retries on its own schedule (up to 30 s apart) with what it kept in memory
        wait_until(lambda: len(verify_events(home)) >= 5, 45, "the outage's audit rows")
        results = [e["result"] for e in verify_events(home)]
        assert len(results) == 5  # every verdict of the outage was kept and written
        assert results[0] == "admitted" and results[-1] == "admitted"
        assert results[1] == "error"  # the valid key during the outage
        assert results[2] in ("error", "mismatch") and results[3] == "anonymous"
        no_channels_left()
    finally:
        stop_app(home, run)
