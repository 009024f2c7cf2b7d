"""`--systemd`: install the product's units (contrib/systemd/*.service), enable the Stasis app's; uninstall removes
the units install wrote (marked by their first line), never one an admin copied by hand.

The units run the `securelink` command of this installation (the console script pip recorded for it), never what
a PATH lookup finds, and only when nobody but root can change it or a folder above it.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import stat
import subprocess
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from asterisk_securelink.installer import resources
from asterisk_securelink.installer.plan import FileChange, Owner, Refused, stamp, stamped

UNIT_DIR = Path("/etc/systemd/system")
COMMAND = "securelink"  # the console script (setup.cfg [options.entry_points])
PACKAGE = "asterisk_securelink"
MAIN_UNIT = "securelink.service"  # enabled and started; the FastAGI unit is installed for those who use it
_EXEC = "ExecStart=/usr/local/bin/securelink "
_CONFIG = "Environment=SECURELINK_CONFIG=/etc/securelink/securelink.toml\n"
_STATE = "/var/lib/securelink"  # WorkingDirectory= and ReadWritePaths= of the packaged units


@dataclass(frozen=True)
class Service:
    """Who runs the units and where: the config's owner (the service user) and the folder it writes (the
    database's, `init --state-dir`)."""

    exe: str
    config: Path
    user: str = "securelink"
    group: str = "securelink"
    state: Path = Path(_STATE)


Runner = Callable[[list[str]], str | None]


def installed_command() -> Path:
    """The `securelink` script of this installation, checked (`check_trusted`): the one pip recorded for the
    distribution that holds this package, else the one in this interpreter's scripts folder (a venv's bin/)."""
    path = recorded_script() or _in_scripts_dir()
    if path is None:
        raise Refused(
            f"this installation has no `{COMMAND}` command for the unit to run (pip writes it when it installs the "
            "package): install the package with pip as root, then run install with its `securelink`"
        )
    check_trusted(path)
    return path


def recorded_script() -> Path | None:
    """The console script `securelink` as the RECORD of the distribution holding this package lists it."""
    for name in importlib.metadata.packages_distributions().get(PACKAGE, []):
        dist = importlib.metadata.distribution(name)
        if not any(ep.group == "console_scripts" and ep.name == COMMAND for ep in dist.entry_points):
            continue
        for file in dist.files or []:
            if file.name == COMMAND and file.parent.name in ("bin", "Scripts"):
                path = Path(os.path.normpath(str(dist.locate_file(file))))
                if path.is_file():
                    return path.resolve()
    return None


def _in_scripts_dir() -> Path | None:
    path = Path(sysconfig.get_path("scripts")) / COMMAND
    return path.resolve() if path.is_file() else None


def check_trusted(path: Path) -> None:
    """Refuse a command anyone but root may change: the file, the interpreter its `#!` line names and every folder
    above either (as named, and where its links lead) must be root's and not writable by group or others (a sticky
    folder, /tmp, may be: nobody but root may rename root's entries in it)."""
    for target in (path, *_interpreter(path)):
        for chain in (target.absolute(), target.resolve()):
            for node in (chain, *chain.parents):
                st = node.stat()
                mode = stat.S_IMODE(st.st_mode)
                sticky = node != chain and mode & stat.S_ISVTX
                if st.st_uid != 0 or (mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky):
                    who = "its owner" if st.st_uid != 0 else "everyone" if mode & stat.S_IWOTH else "its group"
                    raise Refused(
                        f"the unit would run {path}, but {node} may be changed by {who} (uid {st.st_uid}, mode "
                        f"{mode:04o}): make it root's and writable by root only (chown root, chmod go-w)"
                    )


def _interpreter(path: Path) -> list[Path]:
    """The absolute path a script's `#!` line names (none for a binary or a relative name)."""
    with path.open("rb") as f:
        first = f.readline(256)
    if not first.startswith(b"#!"):
        return []
    words = first[2:].split()
    return (
        [Path(os.fsdecode(words[0]))] if words and words[0].startswith(b"/") else []
    )  # runs a command; None when it worked, else what went wrong


def available() -> bool:
    """Whether this host runs systemd (sd_booted(): /run/systemd/system exists) and has systemctl."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def unit_text(name: str, service: Service) -> bytes:
    """The packaged unit `name`, run as `service` says, marked as install's."""
    text = resources.read("systemd", name).decode()
    text = text.replace(_EXEC, f"ExecStart={_quote(service.exe)} ", 1)
    text = text.replace(_CONFIG, f"Environment={_quote(f'SECURELINK_CONFIG={service.config}')}\n", 1)
    text = text.replace("User=securelink\n", f"User={service.user}\n", 1)
    text = text.replace("Group=securelink\n", f"Group={service.group}\n", 1)
    text = text.replace(f"WorkingDirectory={_STATE}\n", f"WorkingDirectory={_quote(str(service.state))}\n", 1)
    text = text.replace(f"ReadWritePaths={_STATE}\n", f"ReadWritePaths={_quote(str(service.state))}\n", 1)
    return stamp(text, "#").encode()


def _quote(word: str) -> str:
    return f'"{word}"' if any(c.isspace() for c in word) else word


def plan_units(
    unit_dir: Path, existing: Mapping[str, bytes | None], owner: Owner, service: Service
) -> list[FileChange]:
    """Install: create or update each packaged unit in `unit_dir` (files owned like the folder, 0644);
    `existing` maps unit name -> current bytes."""
    out: list[FileChange] = []
    for name in resources.names("systemd", ".service"):
        before = existing.get(name)
        after = unit_text(name, service)
        if before is not None and stamped(before, "#") != "intact":
            continue  # an admin's own unit, or one edited after install: left alone (reported by the caller)
        if before != after:
            unit_owner = Owner(owner.uid, owner.gid, 0o644)
            out.append(FileChange(unit_dir / name, before, after, unit_owner, "systemd unit"))
    return out


def plan_removal(unit_dir: Path, existing: Mapping[str, bytes | None], owner: Owner) -> list[FileChange]:
    """Uninstall: remove the units install wrote."""
    return [
        FileChange(unit_dir / name, data, None, owner, "systemd unit")
        for name, data in sorted(existing.items())
        if data is not None and stamped(data, "#") is not None
    ]


def read_units(unit_dir: Path) -> dict[str, bytes | None]:
    """The current bytes of every packaged unit's name in `unit_dir` (None: absent)."""
    return {
        name: (unit_dir / name).read_bytes() if (unit_dir / name).is_file() else None
        for name in resources.names("systemd", ".service")
    }


def foreign(existing: Mapping[str, bytes | None]) -> list[str]:
    """Units present in the unit dir that install did not write, or that were edited since."""
    return [name for name, data in sorted(existing.items()) if data is not None and stamped(data, "#") != "intact"]


def run_systemctl(args: list[str]) -> str | None:
    try:
        p = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return type(exc).__name__
    if p.returncode != 0:
        return (p.stderr or p.stdout).strip().splitlines()[0] if (p.stderr or p.stdout).strip() else "failed"
    return None


def after_install(changes: list[FileChange], config_changed: bool, run: Runner = run_systemctl) -> list[str]:
    """daemon-reload, enable --now the main unit, and restart it when its unit or its config changed (a running
    service reads its passwords at start). Returns what failed."""
    errors: list[str] = []
    if changes:
        errors += _step(run, ["daemon-reload"])
    errors += _step(run, ["enable", "--now", MAIN_UNIT])
    if config_changed or any(c.path.name == MAIN_UNIT and c.before is not None for c in changes):
        errors += _step(run, ["try-restart", MAIN_UNIT])
    return errors


def before_removal(changes: list[FileChange], run: Runner = run_systemctl) -> list[str]:
    return [e for c in changes for e in _step(run, ["disable", "--now", c.path.name])]


def after_removal(run: Runner = run_systemctl) -> list[str]:
    return _step(run, ["daemon-reload"])


def _step(run: Runner, args: list[str]) -> list[str]:
    error = run(args)
    return [] if error is None else [f"systemctl {' '.join(args)}: {error}"]
