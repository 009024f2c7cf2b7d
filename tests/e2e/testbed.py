"""Helpers to drive the Asterisk testbed (scripts/asterisk-testbed) from tests.

The testbed is a Debian-sid chroot running Asterisk 22 on loopback:
SIP udp 127.0.0.1:5060 / tls :5061, ARI http://127.0.0.1:8088/ari, AMI :5038.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "asterisk-testbed"

ARI_BASE = "http://127.0.0.1:8088/ari"
ARI_WS = "ws://127.0.0.1:8088/ari/events"
ARI_USER = "securelink"
ARI_PASSWORD = "securelink-testbed"
AMI_HOST, AMI_PORT = "127.0.0.1", 5038
AMI_USER = "securelink"
AMI_SECRET = "securelink-testbed"

ARI_AUTH_HEADER = {"Authorization": "Basic " + base64.b64encode(f"{ARI_USER}:{ARI_PASSWORD}".encode()).decode()}


class TestbedError(RuntimeError):
    pass


def can_run() -> str | None:
    """None if the testbed can run here, else the reason to skip."""
    if os.geteuid() != 0:
        return "the Asterisk testbed needs root (chroot, mount)"
    from shutil import which

    for tool in ("debootstrap", "sipp", "curl"):
        if which(tool) is None:
            return f"{tool} not installed"
    return None


def _script(*args: str, timeout: float = 600) -> str:
    proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise TestbedError(
            f"asterisk-testbed {' '.join(args)} failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


def ensure_up() -> None:
    """Build (first time) and start the testbed, or reload it if already running."""
    _script("up")


def is_up() -> bool:
    return subprocess.run([str(SCRIPT), "status"], capture_output=True, check=False).returncode == 0


def down() -> None:
    _script("down", timeout=120)


def reload() -> None:
    _script("reload", timeout=120)


def asterisk_cli(cmd: str) -> str:
    """Run one Asterisk CLI command (``asterisk -rx``) and return its output."""
    return _script("cli", cmd, timeout=30)


def ari_request(method: str, path: str, params: dict[str, str] | None = None) -> Any:
    """Synchronous ARI call; returns decoded JSON (None for empty bodies)."""
    url = ARI_BASE + path
    if params:
        url += "?" + urllib.parse.urlencode(params)
    req = urllib.request.Request(url, method=method, headers=ARI_AUTH_HEADER)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            body = resp.read()
    except urllib.error.HTTPError as e:
        raise TestbedError(f"ARI {method} {path} -> {e.code}: {e.read().decode(errors='replace')}") from e
    return json.loads(body) if body else None


def ari_get(path: str, params: dict[str, str] | None = None) -> Any:
    return ari_request("GET", path, params)


def ari_post(path: str, params: dict[str, str] | None = None) -> Any:
    return ari_request("POST", path, params)


def ari_delete(path: str, params: dict[str, str] | None = None) -> Any:
    return ari_request("DELETE", path, params)
