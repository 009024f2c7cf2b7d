"""The shell around the planner: read the config dir, show a plan as diffs, write it (backups, atomic, reverted).

Secrets never reach the output: a diff shows `password = (hidden)`, whatever the file.
"""

from __future__ import annotations

import difflib
import grp
import os
import pwd
import re
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from asterisk_securelink.installer import safefs
from asterisk_securelink.installer.asterisk_cli import runuser
from asterisk_securelink.installer.plan import EDITED, SUBDIR, FileChange, Owner, Plan, Refused, Snapshot

DEFAULT_BACKUP_DIR = Path("/var/backups/securelink")
_SKIP_DIRS = frozenset({"keys"})  # TLS private keys: never read
_SECRET_VALUE = re.compile(r"^([+\- ]?\s*\"?(?:password|secret)\"?\s*=>?\s*)(.*)$", re.IGNORECASE)
_EMPTY = frozenset({"", '""', "''"})  # an unset password: nothing to hide, and `(hidden)` would say there is one


def owner_of(path: Path) -> Owner:
    return _owner(path.stat())


def _owner(st: os.stat_result) -> Owner:
    return Owner(st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))


def trusted_uids(asterisk_conf: bytes | None) -> frozenset[int]:
    """Who may write Asterisk's config dir and its securelink/: root, whoever runs install, and the user Asterisk
    runs as (asterisk.conf's `runuser`, else `asterisk`)."""
    uids = {0, os.geteuid()}
    try:
        uids.add(pwd.getpwnam((runuser(asterisk_conf) if asterisk_conf else None) or "asterisk").pw_uid)
    except KeyError:
        pass  # no such user here: root alone
    return frozenset(uids)


def scan(root: Path, asterisk_gid: int | None = None) -> Snapshot:
    """The config dir's files (top level and one folder down, `keys/` skipped) with their owners. Refuses a config
    dir or securelink/ that another user may write, a link standing for securelink/ or for a file install edits."""
    root = root.absolute()
    if not root.is_dir():
        raise Refused(f"{root} is not an Asterisk config directory (no such directory): pass --etc DIR")
    files: dict[str, bytes] = {}
    owners: dict[str, Owner] = {}
    fds: list[int] = []
    ours: int | None = None  # securelink/
    try:
        fds.append(top := safefs.open_dir(root))
        owners["."] = _owner(os.fstat(top))
        for name in sorted(os.listdir(top)):
            st = os.stat(name, dir_fd=top, follow_symlinks=False)
            if name == SUBDIR or (stat.S_ISDIR(st.st_mode) and name not in _SKIP_DIRS):
                sub = safefs.open_sub(top, name, root / name)  # refuses a link standing for securelink/
                if sub is None:
                    continue
                fds.append(sub)
                if name == SUBDIR:
                    ours = sub
                    owners[SUBDIR] = _owner(os.fstat(sub))
                for inner in sorted(os.listdir(sub)):
                    if not stat.S_ISDIR(os.stat(inner, dir_fd=sub, follow_symlinks=False).st_mode):
                        _read(sub, f"{name}/{inner}", root, files, owners, strict=name == SUBDIR)
            elif not stat.S_ISDIR(st.st_mode):
                _read(top, name, root, files, owners, strict=name in EDITED)
        trusted = trusted_uids(files.get("asterisk.conf"))
        safefs.check_dir(top, root, trusted)
        if ours is not None:
            safefs.check_dir(ours, root / SUBDIR, trusted)
    except PermissionError:
        raise Refused(f"cannot read the files in {root}: permission denied (run as root)") from None
    finally:
        for fd in fds:
            os.close(fd)
    return Snapshot(root, files, owners, asterisk_gid)


def _read(dir_fd: int, rel: str, root: Path, files: dict[str, bytes], owners: dict[str, Owner], strict: bool) -> None:
    """Read `rel` (relative to `root`, its last part in `dir_fd`): a file install may write is read without
    following a link (`strict`, refusing one); any other file as before, through a link too."""
    got = safefs.read_at(dir_fd, rel.rpartition("/")[2], root / rel, follow=not strict)
    if got is not None:
        files[rel], owners[rel] = got[0], _owner(got[1])


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
    what was already written and re-raise. Returns the backup folder (None when nothing needed one). Every folder is
    opened once, without following a link below the config dir, and written through its descriptor (`safefs`)."""
    with _Folders(plan.root) as folders:
        for change in plan.changes:
            fd = folders.get(change.path.parent)
            current = None if fd is None else safefs.read_at(fd, change.path.name, change.path)
            if (None if current is None else current[0]) != change.before:
                raise Refused(f"{change.path} changed while the plan was made: run the command again")
        if plan.make_dir is not None and folders.get(plan.root / SUBDIR) is not None:
            raise Refused(f"{plan.root / SUBDIR} was made while the plan was made: run the command again")
        backup = _backup(plan, backup_root, now or datetime.now(UTC))
        done: list[FileChange] = []
        made_dir = False
        try:
            if plan.make_dir is not None:
                folders.make(plan.root / SUBDIR, plan.make_dir)
                made_dir = True
            for change in plan.changes:
                folders.write(change.path, change.after, change.owner)
                done.append(change)
            if plan.remove_dir:
                safefs.rmdir_at(folders.root_fd, SUBDIR)  # something else in it now, or a link: kept
        except BaseException:
            for change in reversed(done):
                folders.write(change.path, change.before, change.owner)
            if made_dir:
                safefs.rmdir_at(folders.root_fd, SUBDIR)
            raise
    return backup


class _Folders:
    """The folders a plan writes in, each opened once: the config dir as named, its folders without following a
    link (securelink/ checked like the config dir), any other folder (the securelink config's, the units') as named."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_fd = safefs.open_dir(root)
        self.fds = {root: self.root_fd}
        try:
            conf = safefs.read_at(self.root_fd, "asterisk.conf", root / "asterisk.conf", follow=True)
            self.trusted = trusted_uids(None if conf is None else conf[0])
            safefs.check_dir(self.root_fd, root, self.trusted)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> _Folders:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}

    def get(self, folder: Path) -> int | None:
        """The descriptor of `folder`; None when a folder under the config dir does not exist (yet)."""
        if folder in self.fds:
            return self.fds[folder]
        if not folder.is_relative_to(self.root):
            self.fds[folder] = safefs.open_dir(folder)
            return self.fds[folder]
        parent = self.get(folder.parent)
        fd = None if parent is None else safefs.open_sub(parent, folder.name, folder)
        if fd is not None:
            self.fds[folder] = fd
            if folder == self.root / SUBDIR:
                safefs.check_dir(fd, folder, self.trusted)
        return fd

    def make(self, folder: Path, owner: Owner) -> None:
        """Create `folder` (securelink/) owned and moded like the config dir, as checked when this was opened."""
        parent = self.get(folder.parent)
        assert parent is not None
        self.fds[folder] = safefs.make_sub(parent, folder.name, owner, folder)

    def write(self, path: Path, data: bytes | None, owner: Owner) -> None:
        fd = self.get(path.parent)
        if fd is None:
            raise Refused(f"{path.parent} was removed while install ran: run the command again")
        if data is None:
            safefs.unlink_at(fd, path.name)
        else:
            safefs.write_at(fd, path.name, data, owner)


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
