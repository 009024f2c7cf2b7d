"""End-to-end harness, re-exported by conftest.py: the real Asterisk testbed, a real `securelink run`,
SIPp calls and the AMI monitor of support/ami.py.

Every e2e test needs the testbed; if it cannot be brought up the tests fail (they are never skipped).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.ami import VERDICT, AmiMonitor, monitoring

from asterisk_securelink import masterkey
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.slk1 import derive_key, device_secret, epoch_at_ms
from testbed import AMI_HOST, AMI_PORT, AMI_SECRET, AMI_USER, ARI_PASSWORD, ARI_USER, ari_get, ensure_up

PERIOD = 5
AGI_TOKEN = "testbed-agi-token-not-secret"  # what scripts/asterisk-testbed writes into the dialplan
APP = "securelink"
AGI_PORT = 4573
ACCESS_NUMBERS = ["+12155550400", "+12155550401"]  # the testbed routes dialled 4XX to +121555504XX


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def testbed() -> None:
    ensure_up()


AUDIT_WAIT = 10.0  # seconds `Home.audit(until=...)` reads again (the audit writer lingers 50 ms)


@dataclass
class Home:
    """A securelink installation in a temp folder, configured for the testbed (5 s period)."""

    path: Path
    env: dict[str, str]
    master: bytes = b""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [sys.executable, "-m", "asterisk_securelink.cli", *args],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check:
            assert p.returncode == 0, p.stderr
        return p

    def add_device(self, name: str, number: str, *, register: bool = True) -> dict[str, Any]:
        number = number if number.startswith("+") else "+" + number  # stored in E.164 (SLK1 1.1)
        dev = json.loads(self.cli("device", "add", name, "--number", number, "--json").stdout)
        if register:
            self.cli("device", "register", str(dev["id"]))
        assert isinstance(dev, dict)
        return dev

    def key(self, dev: Mapping[str, Any], at: float | None = None, direction: str = "inbound") -> str:
        t = time.time() if at is None else at
        epoch = epoch_at_ms(int(t * 1000), PERIOD)
        fmt = NumberFormat("XXXXXXXXXX")
        return derive_key(device_secret(self.master, str(dev["key_id"])), direction, epoch, fmt)

    def audit(
        self, action: str = "verify", *, until: Callable[[list[dict[str, Any]]], bool] | None = None
    ) -> list[dict[str, Any]]:
        """The audit rows of `action`. `until`: read again (up to AUDIT_WAIT s) until it holds of them; the app
        writes its audit rows in the background, a moment after the verdict. The caller asserts what it expects."""
        deadline = time.monotonic() + AUDIT_WAIT
        while True:
            rows = json.loads(self.cli("audit", "list", "--action", action, "--limit", "100000", "--json").stdout)
            assert isinstance(rows, list)
            if until is None or until(rows) or time.monotonic() >= deadline:
                return rows
            time.sleep(0.1)

    def log_text(self, name: str) -> str:
        p = self.path / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.path / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "asterisk_securelink.cli", *args],
            cwd=self.path,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        return stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM the process group started with `start_new_session`, SIGKILL after 10 s; its exit code."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    return proc.returncode


CONFIG = f"""
[database]
url = "sqlite:///securelink.sqlite3"
[keys]
period = {PERIOD}
[inbound]
require_registered_number = true
[lockout]
max_guess_probability = 1.0
[ari]
url = "http://127.0.0.1:8088"
username = "{ARI_USER}"
password = "{ARI_PASSWORD}"
app = "{APP}"
[ami]
host = "{AMI_HOST}"
port = {AMI_PORT}
username = "{AMI_USER}"
secret = "{AMI_SECRET}"
[agi]
host = "127.0.0.1"
port = {AGI_PORT}
result_token = "{AGI_TOKEN}"
[calling]
access_numbers = {json.dumps(ACCESS_NUMBERS)}
dtmf_setup_s = {PERIOD}
[routing]
default_context = "testbed-routed"
default_callerid = '"Mobile" <1000>'
home = "extension:answer"
allowed = ["_X."]
max_concurrent = 100
max_per_day = 100000
"""


def app_registered(name: str = APP) -> bool:
    try:
        apps = ari_get("/applications")
    except Exception:  # noqa: BLE001 - not up yet
        return False
    return any(a.get("name") == name for a in apps)


def gone_or_swept(name: str) -> bool:
    """True when Asterisk no longer lists the app `name`. An app that disconnected while it was still subscribed to
    a channel (an admitted call it follows to its end) stays listed after that channel is gone, until Asterisk next
    sweeps its finished apps, which it does when any app disconnects: so a probe app connects and leaves."""
    if not app_registered(name):
        return True
    import asyncio

    import aiohttp

    async def probe() -> None:
        url = f"http://127.0.0.1:8088/ari/events?app=testbed-sweep&api_key={ARI_USER}:{ARI_PASSWORD}"
        async with aiohttp.ClientSession() as session, session.ws_connect(url):
            await asyncio.sleep(0.2)

    asyncio.run(probe())
    time.sleep(0.3)
    return not app_registered(name)


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def new_home(
    path: Path, db_url: str = "sqlite:///securelink.sqlite3", app: str = APP, max_guess_probability: float = 1.0
) -> Home:
    """A securelink installation in `path`, initialised (config, master key, schema). `max_guess_probability`: the
    `[lockout]` target (1.0, no budget in the way, unless a test is about the budget)."""
    config = (
        CONFIG.replace('url = "sqlite:///securelink.sqlite3"', f'url = "{db_url}"')
        .replace(f'app = "{APP}"', f'app = "{app}"')
        .replace("max_guess_probability = 1.0\n", f"max_guess_probability = {max_guess_probability!r}\n")
    )
    assert f"max_guess_probability = {max_guess_probability!r}\n" in config  # the target a test asked for
    (path / "securelink.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURELINK_")}
    h = Home(path, env)
    h.cli("init")
    h.master = masterkey.load(path / "master.key")
    return h


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    h = new_home(tmp_path_factory.mktemp("securelink"))
    yield h
    for p in h.procs:
        h.stop(p)


@pytest.fixture(scope="module")
def app(home: Home) -> Iterator[subprocess.Popen[bytes]]:
    """`securelink run` + `securelink agi`, as an administrator would run them."""
    run, agi = start_app(home)
    yield run
    stop_app(home, run, agi)


def start_app(
    home: Home, name: str = APP, agi: bool = True
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes] | None]:
    wait_until(lambda: gone_or_swept(name), 15, f"a previous {name} app to go away")
    run = home.start("run", "run")
    agi_proc = home.start("agi", "agi") if agi else None
    wait_until(lambda: app_registered(name), 20, f"{name} to register its Stasis app")
    return run, agi_proc


def stop_app(home: Home, *procs: subprocess.Popen[bytes] | None) -> None:
    for p in procs:
        if p is not None:
            home.stop(p)
    for name in ("run", "agi"):
        assert "Traceback" not in home.log_text(name), home.log_text(name)[-3000:]


def next_window(margin: float = 0.6) -> None:
    """Sleep until just after the next epoch boundary, so a test's keys stay live for almost a whole period."""
    now = time.time()
    boundary = (epoch_at_ms(int(now * 1000), PERIOD) + 1) * PERIOD
    time.sleep(boundary - now + 0.05)


def fresh_window(need: float = 2.5) -> None:
    """Make sure at least `need` seconds of the current window remain."""
    now = time.time()
    left = (epoch_at_ms(int(now * 1000), PERIOD) + 1) * PERIOD - now
    if left < need:
        time.sleep(left + 0.05)


def no_channels_left(timeout: float = 10) -> None:
    wait_until(lambda: ari_get("/channels") == [], timeout, "every channel to be gone")


def ami_monitor(user_event: str | None = VERDICT, login_within: float = 10) -> AbstractAsyncContextManager[AmiMonitor]:
    """The AMI monitor (support/ami.py) logged in to the testbed's Asterisk: the `UserEvent`s named `user_event`, or
    every event if None."""
    return monitoring(AMI_HOST, AMI_PORT, AMI_USER, AMI_SECRET, user_event, login_within)


@pytest.fixture
async def ami() -> AsyncIterator[AmiMonitor]:
    """The testbed's `SecureLinkVerdict` events while the test runs."""
    async with ami_monitor() as mon:
        yield mon


def add_devices(home: Home, n: int, prefix: str) -> list[dict[str, object]]:
    """Enroll and register `n` devices straight through the store (the CLI would take minutes)."""
    from asterisk_securelink import config
    from asterisk_securelink.store.store import Store

    cfg = config.load(home.path / "securelink.toml", env={})

    async def go() -> list[dict[str, object]]:
        store = Store.from_url(cfg.database_url)
        out = []
        try:
            for i in range(n):
                d = await store.add_device(
                    f"{prefix}{i}", f"1777{i:07d}", None, f"{prefix}-{secrets.token_hex(6)}", "t"
                )
                d = await store.update_device(d.id, "device.register", "t", status="registered")
                out.append({"id": d.id, "key_id": d.key_id})
        finally:
            await store.close()
        return out

    return asyncio.run(go())
