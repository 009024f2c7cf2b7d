"""`securelink-device` as a user runs it (a real process), and its QR codes read back into modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import segno

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURELINK_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "asterisk_securelink.device.cli", *args],
        input=stdin, capture_output=True, text=True, timeout=60, env=env, cwd=cwd,
    )  # fmt: skip


def qr_matrix(uri: str) -> list[list[int]]:
    """The modules segno draws for `uri` (1 = dark)."""
    qr = segno.make(uri, error="m", micro=False)
    return [list(row) for row in qr.matrix]


def read_terminal(text: str, border: int = 4) -> list[list[int]]:
    """A QR code printed on a terminal (segno's compact half blocks) back into modules: 1 = dark."""
    halves = {" ": (1, 1), "\u2580": (0, 1), "\u2584": (1, 0), "\u2588": (0, 0)}  # segno's compact blocks
    rows: list[list[int]] = []
    for line in text.splitlines():
        pairs = [halves[ch] for ch in line]
        rows += [[t for t, _ in pairs], [b for _, b in pairs]]
    size = len(rows[0]) - 2 * border
    return [row[border : border + size] for row in rows[border : border + size]]
