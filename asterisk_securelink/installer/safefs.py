"""The installer's file operations, safe in a folder another user may write (Asterisk's config dir belongs to the
asterisk user on most systems): nothing here follows a symbolic link that user could plant.

A folder is opened once (`O_DIRECTORY | O_NOFOLLOW` below the folder the admin named) and checked on its descriptor;
every file is read, created, replaced and removed relative to that descriptor, with `O_NOFOLLOW`; ownership and mode
are set on descriptors (`fchown`, `fchmod`), never by path. Swapping a folder for a link while install runs makes it
refuse; it never makes it change the link's target.
"""

from __future__ import annotations

import errno
import os
import pwd
import secrets
import stat
from pathlib import Path

from asterisk_securelink.installer.plan import Owner, Refused

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_MAX_FILE = 4 * 1024 * 1024


def open_dir(path: Path) -> int:
    """A descriptor of the folder `path` as the admin named it (a link the admin made, e.g. /etc/asterisk ->
    /srv/pbx/etc, is followed: its name lies in a folder only root writes)."""
    try:
        return os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        raise Refused(f"{path} does not exist") from None
    except NotADirectoryError:
        raise Refused(f"{path} is not a folder") from None
    except PermissionError:
        raise Refused(f"cannot open {path}: permission denied (run as root)") from None


def open_sub(dir_fd: int, name: str, shown: Path) -> int | None:
    """A descriptor of the folder `name` in `dir_fd`, not following a link; None when there is no such entry."""
    try:
        return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Refused(f"{shown} is {_what(dir_fd, name)} where a folder is expected: remove it first") from None
        raise


def make_sub(dir_fd: int, name: str, owner: Owner, shown: Path) -> int:
    """Create the folder `name` in `dir_fd`, owned and moded as `owner` says (set on its descriptor); refuses when
    something else stands at the name by the time it is opened."""
    os.mkdir(name, 0o700, dir_fd=dir_fd)
    fd: int | None = None
    try:
        fd = open_sub(dir_fd, name, shown)
        st = None if fd is None else os.fstat(fd)
        if fd is None or st is None or st.st_uid != os.geteuid():  # gone, or another user's folder swapped in
            raise Refused(f"{shown} was replaced while install ran: run the command again")
        if (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
            os.fchown(fd, owner.uid, owner.gid)
        os.fchmod(fd, owner.mode)
        return fd
    except BaseException:
        if fd is not None:
            os.close(fd)
        rmdir_at(dir_fd, name)  # ours, still empty: gone; a link or another folder: kept
        raise


def check_dir(fd: int, shown: Path, trusted: frozenset[int]) -> None:
    """Refuse a folder that anyone but root or Asterisk's user (`trusted` uids) may write."""
    st = os.fstat(fd)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in trusted:
        raise Refused(
            f"{shown} belongs to {_user(st.st_uid)}, neither root nor Asterisk's user: `chown root {shown}` first"
        )
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "everyone" if mode & stat.S_IWOTH else "its group"
        raise Refused(f"{shown} may be written by {who} (mode {mode:04o}): `chmod go-w {shown}` first")


def read_at(dir_fd: int, name: str, shown: Path, follow: bool = False) -> tuple[bytes, os.stat_result] | None:
    """The bytes and status of the regular file `name` in `dir_fd`; None when absent. Unless `follow`, refuses a
    link, anything but a regular file and a file over 4 MiB; with `follow`, those are None (not a config file)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)  # a FIFO must not block
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise
    except OSError as exc:
        if follow:
            return None  # a dangling link, a socket: nothing to read
        if exc.errno == errno.ELOOP:
            raise Refused(
                f"{shown} is a symbolic link: install edits regular files only (put the file there)"
            ) from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_FILE:
            if follow:
                return None
            raise Refused(f"{shown} is not a regular file of at most 4 MiB: move it away first")
        return f.read(), st


def write_at(dir_fd: int, name: str, data: bytes, owner: Owner) -> None:
    """Replace `name` in `dir_fd` by a file holding `data`, atomically: a fresh temporary (O_EXCL, O_NOFOLLOW)
    owned and moded on its descriptor, renamed over `name` (a link standing there is replaced, never followed)."""
    tmp = f".{name}.{secrets.token_hex(8)}.securelink-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            st = os.fstat(f.fileno())
            if (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
                os.fchown(f.fileno(), owner.uid, owner.gid)
            os.fchmod(f.fileno(), owner.mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        unlink_at(dir_fd, tmp)
        raise
    os.fsync(dir_fd)


def unlink_at(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def rmdir_at(dir_fd: int, name: str) -> None:
    """Remove the empty folder `name` when it still is one (a link or a folder with something in it stays)."""
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError:
        pass


def _what(dir_fd: int, name: str) -> str:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return "something else"
    return "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a file"


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
