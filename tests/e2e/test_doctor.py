"""`securelink doctor` against the real testbed: all green with the app running; each failure names its fix."""

from __future__ import annotations

import json
import os
from subprocess import Popen

from harness import Home, app_registered, wait_until


def doctor(home: Home, *extra_env: tuple[str, str]) -> tuple[int, list[dict[str, object]]]:
    env = dict(home.env)
    env.update(extra_env)
    saved, home.env = home.env, env
    try:
        p = home.cli("doctor", "--json", check=False)
    finally:
        home.env = saved
    return p.returncode, json.loads(p.stdout)


def by_name(checks: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(c["check"]): c for c in checks}


def test_healthy_installation(home: Home, app: Popen[bytes]) -> None:
    rc, checks = doctor(home)
    assert rc == 0, checks
    names = by_name(checks)
    for name in ("master key", "database", "ARI", "Stasis app", "AMI", "dialplan securelink-inbound"):
        assert names[name]["ok"] is True, names[name]


def test_failures_say_how_to_fix(home: Home, app: Popen[bytes]) -> None:
    rc, checks = doctor(home, ("SECURELINK_ARI_PASSWORD", "wrong"), ("SECURELINK_AMI_SECRET", "wrong"))
    names = by_name(checks)
    assert rc == 1
    assert names["ARI"]["ok"] is False and "ari.conf" in str(names["ARI"]["fix"])
    assert "wrong" not in json.dumps(checks)  # the bad secret is not echoed
    assert names["AMI"]["ok"] is False and "manager.conf" in str(names["AMI"]["fix"])

    os.chmod(home.path / "master.key", 0o644)
    try:
        rc, checks = doctor(home)
    finally:
        os.chmod(home.path / "master.key", 0o600)
    assert rc == 1 and by_name(checks)["master key"]["ok"] is False
    assert "chmod" in str(by_name(checks)["master key"]["fix"])


def test_app_not_running_is_reported(home: Home, app: Popen[bytes]) -> None:
    run = next(p for p in home.procs if p.args[-1] == "run")  # type: ignore[index]
    home.stop(run)
    wait_until(lambda: not app_registered(), 10, "the app to unregister")
    rc, checks = doctor(home)
    stasis = by_name(checks)["Stasis app"]
    assert rc == 1 and stasis["ok"] is False and "securelink run" in str(stasis["fix"])
