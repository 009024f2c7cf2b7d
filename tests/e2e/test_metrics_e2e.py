"""`[metrics] listen` on a running `securelink run`: real calls through Asterisk show up on /metrics; /health is ok."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from harness import fresh_window, new_home, no_channels_left, start_app, stop_app
from sipp import run_uac

LISTEN = "127.0.0.1:9466"


def fetch(path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{LISTEN}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_calls_are_counted_and_health_is_ok(tmp_path: Path) -> None:
    home = new_home(tmp_path)
    with (home.path / "securelink.toml").open("a") as f:
        f.write(f'[metrics]\nlisten = "{LISTEN}"\n')
    dev = home.add_device("Metrics", "15550300001")
    run, agi = start_app(home, agi=False)
    try:
        status, body = fetch("/health")
        assert status == 200 and json.loads(body)["ari"] is True
        fresh_window()
        assert [r.status_code for r in run_uac([(home.key(dev), "100"), ("15550300001", "100")])] == [200, 403]
        no_channels_left()
        status, text = fetch("/metrics")
        assert status == 200
        assert 'securelink_verdicts_total{direction="inbound",mode="ani",result="admitted"} 1.0' in text
        assert 'securelink_verdicts_total{direction="inbound",mode="ani",result="mismatch"} 1.0' in text
        assert "securelink_admission_seconds_count 2.0" in text
        assert "securelink_ari_connected 1.0" in text
    finally:
        stop_app(home, run, agi)
