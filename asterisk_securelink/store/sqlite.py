"""The embedded default's file: where it is, whether this user can write it, and creating it private (0600).

A read-only SQLite file (a systemd unit's `ProtectSystem=strict` over its directory, or a file owned by another
user) opens but fails at the first write; these checks name that cause before anything else is tried.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from sqlalchemy.engine import make_url

PRIVATE_MODE = 0o600


def sqlite_path(url: str) -> Path | None:
    """The database file of an SQLite URL (None for another database or an in-memory one)."""
    u = make_url(url)
    if not u.drivername.startswith("sqlite") or not u.database or u.database == ":memory:":
        return None
    if u.database.startswith("file:"):
        return None
    return Path(u.database)


def _owner(path: Path) -> str:
    uid = path.stat().st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _me() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def access_problem(url: str) -> str | None:
    """Why this process could not write the SQLite database of `url`, or None (not SQLite, or writable)."""
    path = sqlite_path(url)
    if path is None:
        return None
    directory = path.parent
    if not directory.is_dir():
        return f"database directory {directory} does not exist: create it, or run `securelink init`"
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        return (
            f"database directory {directory} is on a read-only file system here (the shipped systemd unit makes "
            f"everything but /var/lib/securelink read-only): move the database to /var/lib/securelink and set "
            f"database.url"
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return (
            f"database file {path} is not writable by {_me()} (it belongs to {_owner(path)}): run securelink as "
            f"the user that owns it, or fix its owner"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        # SQLite writes its -wal and -shm files beside the database
        return (
            f"database directory {directory} is not writable by {_me()} (SQLite keeps its journal there): put the "
            f"database in a writable directory (a system installation uses /var/lib/securelink), or fix the owner"
        )
    return None


def create_private(url: str) -> bool:
    """Create an empty SQLite file 0600 (SQLite gives its journal files the same mode). True when created."""
    path = sqlite_path(url)
    if path is None or path.exists():
        return False
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), PRIVATE_MODE)
    os.fchmod(fd, PRIVATE_MODE)
    os.close(fd)
    return True
