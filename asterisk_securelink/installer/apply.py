"""The shell around the planner: read the config dir, show a plan as diffs, write it (backups, atomic, reverted).

Secrets never reach the output: a diff shows `password = (hidden)`, whatever the file.
"""

from __future__ import annotations

import difflib
import grp
import os
import pwd
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from asterisk_securelink.installer.plan import SUBDIR, FileChange, Owner, Plan, Refused, Snapshot

DEFAULT_BACKUP_DIR = Path("/var/backups/securelink")
_SKIP_DIRS = frozenset({"keys"})  # TLS private keys: never read
_SECRET_VALUE = re.compile(r"^([+\- ]?\s*\"?(?:password|secret)\"?\s*=>?\s*)(.*)$", re.IGNORECASE)
_EMPTY = frozenset({"", '""', "''"})  # an unset password: nothing to hide, and `(hidden)` would say there is one
_MAX_FILE = 4 * 1024 * 1024


def owner_of(path: Path) -> Owner:
    st = path.stat()
    return Owner(st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))


def scan(root: Path, asterisk_gid: int | None = None) -> Snapshot:
    """The config dir's files (top level and one folder down, `keys/` skipped) with their owners."""
    root = root.absolute()
    if not root.is_dir():
        raise Refused(f"{root} is not an Asterisk config directory (no such directory): pass --etc DIR")
    files: dict[str, bytes] = {}
    owners: dict[str, Owner] = {".": owner_of(root)}
    try:
        for entry in sorted(root.iterdir()):
            if entry.is_dir() and not entry.is_symlink() and entry.name not in _SKIP_DIRS:
                if entry.name == SUBDIR:
                    owners[SUBDIR] = owner_of(entry)
                for sub in sorted(entry.iterdir()):
                    _read(root, sub, files, owners)
            else:
                _read(root, entry, files, owners)
    except PermissionError as exc:
        raise Refused(f"cannot read {exc.filename}: permission denied (run as root)") from None
    return Snapshot(root, files, owners, asterisk_gid)


def _read(root: Path, path: Path, files: dict[str, bytes], owners: dict[str, Owner]) -> None:
    if not path.is_file() or path.stat().st_size > _MAX_FILE:
        return
    rel = path.relative_to(root).as_posix()
    files[rel] = path.read_bytes()
    owners[rel] = owner_of(path)


def redact(line: str) -> str:
    """A config or TOML line with the value of any password/secret key replaced by `(hidden)`."""
    return _SECRET_VALUE.sub(
        lambda m: m.group(0) if m.group(2).strip() in _EMPTY else m.group(1) + "(hidden)", line.rstrip("\n")
    ) + ("\n" if line.endswith("\n") else "")


def diff(change: FileChange) -> str:
    """The unified diff of one change (`/dev/null` for a created or removed file), secrets hidden."""
    a = _lines(change.before)
    b = _lines(change.after)
    name = str(change.path)
    src = "/dev/null" if change.before is None else "a" + name
    dst = "/dev/null" if change.after is None else "b" + name
    out: list[str] = []
    for line in difflib.unified_diff(a, b, src, dst):
        out.append(redact(line) if line.endswith("\n") else redact(line) + "\n\\ No newline at end of file\n")
    return "".join(out)


def _lines(data: bytes | None) -> list[str]:
    return [] if data is None else data.decode("utf-8", "replace").splitlines(keepends=True)


def describe(change: FileChange) -> str:
    o = change.owner
    mode = "" if change.after is None else f" ({o.mode:04o} {_name(o.uid, o.gid)})"
    return f"{change.verb:<7} {change.path}: {change.what}{mode}"


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _name(uid: int, gid: int) -> str:
    return f"{user_name(uid)}:{group_name(gid)}"


def preflight(plan: Plan, writable: Callable[[Path], bool] | None = None) -> None:
    """Refuse before anything is written when a file or folder the plan touches cannot be written."""
    can = writable or (lambda p: os.access(p, os.W_OK))
    targets = {c.path.parent for c in plan.changes} | {c.path for c in plan.changes if c.before is not None}
    if plan.make_dir is not None:
        targets = {p for p in targets if p != plan.root / SUBDIR} | {plan.root}
    for path in sorted(targets):
        if path.exists() and not can(path):
            raise Refused(f"cannot write {path}: permission denied (run as root, or as the owner of the files)")


def apply(plan: Plan, backup_root: Path, now: datetime | None = None) -> Path | None:
    """Write `plan`: back up every existing file it touches, then write each atomically; on a failure, put back
    what was already written and re-raise. Returns the backup folder (None when nothing needed one)."""
    for change in plan.changes:
        current = change.path.read_bytes() if change.path.exists() else None
        if current != change.before:
            raise Refused(f"{change.path} changed while the plan was made: run the command again")
    backup = _backup(plan, backup_root, now or datetime.now(UTC))
    done: list[FileChange] = []
    made_dir = False
    try:
        if plan.make_dir is not None:
            sub = plan.root / SUBDIR
            sub.mkdir()
            made_dir = True
            _set_owner(sub, plan.make_dir)
        for change in plan.changes:
            _write(change.path, change.after, change.owner)
            done.append(change)
        if plan.remove_dir:
            try:
                (plan.root / SUBDIR).rmdir()
            except OSError:
                pass  # something else is in it now: keep it
    except BaseException:
        for change in reversed(done):
            _write(change.path, change.before, change.owner)
        if made_dir:
            shutil.rmtree(plan.root / SUBDIR, ignore_errors=True)
        raise
    return backup


def _backup(plan: Plan, backup_root: Path, now: datetime) -> Path | None:
    existing = [c for c in plan.changes if c.before is not None]
    if not existing:
        return None
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    backup_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = backup_root / stamp
    n = 1
    while folder.exists():
        n += 1
        folder = backup_root / f"{stamp}.{n}"
    folder.mkdir(mode=0o700)
    for change in existing:
        target = folder / change.path.relative_to(change.path.anchor)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # 0600 whatever the original's mode: a backup may hold a password
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(change.before or b"")
    return folder


def _write(path: Path, data: bytes | None, owner: Owner) -> None:
    if data is None:
        path.unlink(missing_ok=True)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".securelink-tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), owner.mode)
            st = os.fstat(f.fileno())
            if (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
                os.fchown(f.fileno(), owner.uid, owner.gid)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _set_owner(path: Path, owner: Owner) -> None:
    os.chmod(path, owner.mode)
    st = path.stat()
    if (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
        os.chown(path, owner.uid, owner.gid)
