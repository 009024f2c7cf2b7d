"""The `asterisk` binary as the installer uses it: its version (`-V`) and console commands (`-rx`).

`prefix` is the command to run, e.g. `asterisk` or `chroot /srv/pbx asterisk` (a chroot, a container exec).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass

from asterisk_securelink.installer import conf
from asterisk_securelink.installer.plan import Refused

_VERSION = re.compile(r"Asterisk\s+(?:certified[/-])?(\d+)\.(\d+)", re.IGNORECASE)
TIMEOUT = 30.0


@dataclass(frozen=True)
class AsteriskCli:
    prefix: tuple[str, ...] = ("asterisk",)

    @classmethod
    def parse(cls, command: str) -> AsteriskCli:
        words = tuple(shlex.split(command))
        if not words:
            raise Refused("--asterisk: give the asterisk command, e.g. `asterisk` or `chroot /srv/pbx asterisk`")
        return cls(words)

    @property
    def shown(self) -> str:
        return shlex.join(self.prefix)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, *args], capture_output=True, text=True, timeout=TIMEOUT, check=False, errors="replace"
        )

    def version(self) -> tuple[int, int]:
        """(major, minor) from `asterisk -V`; refuses when it cannot tell."""
        try:
            p = self._run("-V")
        except FileNotFoundError:
            raise Refused(f"`{self.shown}` not found: is Asterisk installed? (--asterisk CMD names it)") from None
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Refused(
                f"`{self.shown} -V` failed ({type(exc).__name__}): cannot tell the Asterisk version"
            ) from None
        m = _VERSION.search(p.stdout)
        if p.returncode != 0 or not m:
            said = (p.stdout or p.stderr).strip().splitlines()[:1]
            raise Refused(
                f"cannot tell the Asterisk version from `{self.shown} -V` ({said[0] if said else 'no output'})"
            )
        return int(m.group(1)), int(m.group(2))

    def rx(self, command: str) -> str | None:
        """Run one console command on the running Asterisk; None when it worked, else what went wrong."""
        try:
            p = self._run("-rx", command)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{type(exc).__name__}"
        out = (p.stdout + p.stderr).strip()
        if p.returncode != 0 or "Unable to connect" in out or "No such command" in out:
            return out.splitlines()[0] if out else f"exit code {p.returncode}"
        return None


def rungroup(asterisk_conf: bytes) -> str | None:
    """The `rungroup` asterisk.conf sets in [options], if any."""
    return conf.last_value(conf.decode(asterisk_conf), "options", "rungroup") or None


def runuser(asterisk_conf: bytes) -> str | None:
    """The `runuser` asterisk.conf sets in [options], if any."""
    return conf.last_value(conf.decode(asterisk_conf), "options", "runuser") or None
