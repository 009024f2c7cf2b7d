"""A system installation as the shipped systemd unit runs it: the config directory read-only (ProtectSystem=strict),
only the state directory writable. A read-only bind mount in a private mount namespace gives the same view."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from harness import CONFIG, app_registered, stop_process, wait_until

APP = "securelink-ro"


def install(tmp_path: Path, db_url: str) -> tuple[Path, dict[str, str]]:
    etc = tmp_path / "etc"
    etc.mkdir()
    conf = etc / "securelink.toml"
    conf.write_text(
        CONFIG.replace('url = "sqlite:///securelink.sqlite3"', f'url = "{db_url}"').replace(
            'app = "securelink"', f'app = "{APP}"'
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURELINK_")}
    p = subprocess.run(
        [sys.executable, "-m", "asterisk_securelink.cli", "--config", str(conf), "init"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    return conf, env


def run_read_only(conf: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    etc = str(conf.parent)
    script = (
        f"mount --bind {etc} {etc} && mount -o remount,bind,ro {etc} && "
        f"exec {sys.executable} -m asterisk_securelink.cli --config {conf} run"
    )
    return subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        cwd="/",
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_run_serves_with_a_read_only_config_dir_and_the_database_in_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    conf, env = install(tmp_path, f"sqlite:///{state}/securelink.sqlite3")
    log = tmp_path / "run.log"
    wait_until(lambda: not app_registered(APP), 15, "a previous app to go away")
    proc = run_read_only(conf, env, log)
    try:
        wait_until(lambda: app_registered(APP) or proc.poll() is not None, 30, "the app to register")
        assert proc.poll() is None, log.read_text()
        assert app_registered(APP)
        assert "index ready" in log.read_text()
    finally:
        stop_process(proc)
    assert "Traceback" not in log.read_text()


def test_a_database_in_the_read_only_config_dir_is_named_as_the_cause(tmp_path: Path) -> None:
    conf, env = install(tmp_path, "sqlite:///securelink.sqlite3")  # next to the config: read-only under the unit
    log = tmp_path / "run.log"
    proc = run_read_only(conf, env, log)
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is not None, "securelink run kept running on a read-only database"
    finally:
        stop_process(proc)
    text = log.read_text()
    assert proc.returncode != 0
    assert "read-only file system" in text and str(conf.parent) in text, text
    assert "schema is not current" not in text and "Traceback" not in text
    assert not app_registered(APP)
