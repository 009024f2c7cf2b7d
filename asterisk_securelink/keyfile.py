"""Files that hold a secret: read from the open file itself, written readable by their owner only.

Shared by the master key (`masterkey`), the escrow key files (`escrow`) and the device tool (`device.cli`). This
module opens, checks and writes, and says once why a file could not be opened (`read_named`); each caller keeps its
own policy (refuse or only warn about a file others can read or rewrite). Nothing here reads a file's content into an
exception message.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from asterisk_securelink.errors import KeyFileError

PRIVATE_MODE: Final = 0o600
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)


class NotRegularFileError(KeyFileError):
    """The path names a directory, a device, a FIFO or a socket: not a file that can hold a key."""


class UnwritableDirectoryError(KeyFileError, OSError):
    """No temporary file can be created in the target's directory (`replace_private`)."""


class UnreadableKeyFile(KeyFileError):
    """`read_named` could not open the file: the message is `<name> <problem>`; `missing` when it does not exist (a
    caller may have its own word for that, or none: an optional file)."""

    def __init__(self, name: str, problem: str, *, missing: bool = False) -> None:
        super().__init__(f"{name} {problem}")
        self.missing = missing


@dataclass(frozen=True)
class PrivateFile:
    """What `read_private` found: the content and the file's permissions, as the open file reported them."""

    data: bytes
    mode: int  # permission bits only, e.g. 0o600
    uid: int

    @property
    def shared(self) -> bool:
        """Readable or writable by group or others."""
        return bool(self.mode & 0o077)

    @property
    def writable_by_others(self) -> bool:
        """Writable by group or others: whoever that is can change what the file says (matters even for a file
        that may be read by anyone, such as a public key)."""
        return bool(self.mode & 0o022)

    @property
    def owned(self) -> bool:
        """Owned by the user running this process."""
        return self.uid == os.geteuid()


def read_private(path: Path, limit: int, *, follow_symlinks: bool = False) -> PrivateFile:
    """At most `limit` bytes of `path`, with the permissions of the file actually opened (fstat: no race between a
    check on the path and the read).

    Raises `FileNotFoundError`; `NotRegularFileError`; `OSError` for anything else, including a symlink when
    `follow_symlinks` is false.
    """
    fd = os.open(path, os.O_RDONLY | (0 if follow_symlinks else _NOFOLLOW))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(path)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit)
    finally:
        os.close(fd)
    return PrivateFile(data, stat.S_IMODE(st.st_mode), st.st_uid)


def read_named(path: Path, limit: int, name: str, *, follow_symlinks: bool = False) -> PrivateFile:
    """`read_private`, with why it failed said the same way for every key file: `UnreadableKeyFile` saying `<name>
    not found`, `<name> is not a regular file` or `<name> cannot be opened: <the OS reason>`. `name` says which file
    to the reader, e.g. `master key file /etc/securelink/master.key`."""
    try:
        return read_private(path, limit, follow_symlinks=follow_symlinks)
    except FileNotFoundError:
        raise UnreadableKeyFile(name, "not found", missing=True) from None
    except NotRegularFileError:
        raise UnreadableKeyFile(name, "is not a regular file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise UnreadableKeyFile(name, "cannot be opened: it is a symbolic link; name the file itself") from None
        raise UnreadableKeyFile(name, f"cannot be opened: {exc.strerror or exc}") from None


def create_private(path: Path, data: bytes) -> None:
    """Create `path` (mode 0600 whatever the umask) holding `data`. Never overwrites, never follows a symlink.

    Raises `FileExistsError` when the path exists (a dangling symlink included), else `OSError`; a file this call
    created is removed again when writing it fails.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, PRIVATE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), PRIVATE_MODE)
            f.write(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def replace_private(path: Path, write: Callable[[BinaryIO], None], *, prefix: str = ".securelink-") -> None:
    """Write `path` readable by its owner only: `write` fills a 0600 temporary in the same directory, which is then
    renamed over `path` (an existing file is replaced whole, never left half-written).

    Raises `UnwritableDirectoryError` when the temporary cannot be created, else `OSError` (or whatever `write`
    raises); the temporary never outlives a failure.
    """
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    except OSError as exc:
        raise UnwritableDirectoryError(exc.errno, exc.strerror, str(directory)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), PRIVATE_MODE)  # mkstemp already uses 0600; be explicit, independent of the umask
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
