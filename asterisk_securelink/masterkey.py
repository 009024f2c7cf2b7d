"""The enterprise master key file: base64 of 32 random bytes, mode 0600, never in the database.

Refused (with an error that says how to fix it, never showing the content) when it is readable or writable by group
or others, is not a regular file, or does not decode to exactly 32 bytes.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from pathlib import Path

from asterisk_securelink import keyfile
from asterisk_securelink.core.slk1 import MASTER_KEY_LEN
from asterisk_securelink.errors import KeyFileError


class MasterKeyError(KeyFileError, ValueError):
    def __init__(self, message: str, fix: str = "run `securelink init`, or set keys.master_key_file") -> None:
        super().__init__(message)
        self.fix = fix  # what `securelink doctor` tells the admin to do


def create(path: Path) -> bytes:
    """Write a new random master key with mode 0600; refuses to overwrite an existing file."""
    key = secrets.token_bytes(MASTER_KEY_LEN)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        keyfile.create_private(path, base64.b64encode(key) + b"\n")
    except FileExistsError:
        raise MasterKeyError(f"master key file {path} already exists; refusing to overwrite it") from None
    return key


def load(path: Path) -> bytes:
    try:
        found = keyfile.read_named(path, 1024, f"master key file {path}")  # never follows a symlink
    except keyfile.UnreadableKeyFile as exc:
        hint = ": run `securelink init` or set keys.master_key_file" if exc.missing else ""
        raise MasterKeyError(f"{exc}{hint}") from None
    if found.shared:
        raise MasterKeyError(
            f"master key file {path} has mode {found.mode:04o}: it must not be accessible "
            f"by group or others; fix with: chmod 600 {path}",
            fix=f"chmod 600 {path}",
        )
    if not found.owned:
        raise MasterKeyError(
            f"master key file {path} is not owned by the user running securelink",
            fix=f"run securelink as the user that owns {path} (e.g. `runuser -u securelink -- securelink ...`), "
            f"or chown it to the service user",
        )
    try:
        key = base64.b64decode(found.data.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != MASTER_KEY_LEN:
        raise MasterKeyError(
            f"master key file {path} is malformed: it must hold base64 of exactly {MASTER_KEY_LEN} bytes",
            fix="restore the master key file from its backup (a new key would invalidate every device)",
        )
    return key
