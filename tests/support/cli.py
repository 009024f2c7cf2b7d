"""The `securelink` command as an administrator runs it: a real process in a folder, without SECURELINK_* variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run(tmp: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURELINK_")}
    p = subprocess.run(
        [sys.executable, "-m", "asterisk_securelink.cli", *args],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if check:
        assert p.returncode == 0, p.stderr
    return p
