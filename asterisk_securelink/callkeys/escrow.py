"""Per-call key escrow: HPKE base mode (RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM).

Each bridged call gets 32 random bytes; only their encryption to the escrow public key is stored. The private key
is held by a compliance officer, never by the plugin. The HPKE `info` binds the ciphertext to its row (key id, call
id, device, direction, creation time, key version), so a ciphertext copied into another row does not open.
Pure apart from the key-file helpers (at the end).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from asterisk_securelink import keyfile
from asterisk_securelink.errors import KeyFileError

CALL_KEY_LEN = 32
ENC_LEN = 32  # the X25519 encapsulated key at the front of an HPKE ciphertext
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_INFO_LABEL = "securelink-call-key-v1"


class EscrowError(KeyFileError, ValueError):
    pass


@dataclass(frozen=True)
class RowBinding:
    """The row fields the ciphertext is bound to."""

    key_id: str
    call_id: str
    device_id: int | None
    direction: str
    created_at: datetime
    key_version: str

    def info(self) -> bytes:
        fields = {
            "label": _INFO_LABEL,
            "key_id": self.key_id,
            "call_id": self.call_id,
            "device_id": self.device_id,
            "direction": self.direction,
            "created_at": self.created_at.isoformat(),
            "key_version": self.key_version,
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Sealed:
    enc: bytes
    ciphertext: bytes


def new_call_key() -> bytes:
    return secrets.token_bytes(CALL_KEY_LEN)


def key_version(public_key: X25519PublicKey) -> str:
    """A short fingerprint of the escrow public key: which private key a row needs."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "x25519:" + hashlib.sha256(raw).hexdigest()[:16]


def seal(call_key: bytes, public_key: X25519PublicKey, binding: RowBinding) -> Sealed:
    if binding.key_version != key_version(public_key):
        raise EscrowError("binding names another escrow key version")
    out = _SUITE.encrypt(call_key, public_key, info=binding.info())
    return Sealed(out[:ENC_LEN], out[ENC_LEN:])


def open_sealed(sealed: Sealed, private_key: X25519PrivateKey, binding: RowBinding) -> bytes:
    if binding.key_version != key_version(private_key.public_key()):
        raise EscrowError(f"this row needs escrow key {binding.key_version}, not the one given")
    try:
        return _SUITE.decrypt(sealed.enc + sealed.ciphertext, private_key, info=binding.info())
    except InvalidTag:
        raise EscrowError("the escrowed key does not open: wrong key, or the row was altered") from None


# -- key files ------------------------------------------------------------------------------------------------
# Both files are opened without following a symlink and checked on the open descriptor (`keyfile.read_private`):
# what is checked is what is read. The private key must be readable by its owner only. The public key may be read by
# anyone, but whoever can rewrite it chooses who can open every future call key: it must not be writable by group or
# others, and must be owned by the user running securelink or by root.
KEY_FILE_LIMIT = 16384  # bytes; a PEM X25519 key is ~120
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def generate(private_path: Path, public_path: Path) -> str:
    """Write a new escrow key pair (private 0600, PEM); returns its key version. Never overwrites: each file is
    written under a temporary name, then linked to its name (link(2) fails on an existing name, even one created a
    moment ago); when the second link fails, the first is undone, so there is never half a pair."""
    for p in (private_path, public_path):
        if os.path.lexists(p):  # the early, friendly refusal; link() below is the one that holds
            raise EscrowError(f"{p} already exists; refusing to overwrite it")
    private = X25519PrivateKey.generate()
    pem_private = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem_public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pairs = ((private_path, pem_private, 0o600), (public_path, pem_public, 0o644))
    temps: list[Path] = []
    linked: list[tuple[Path, Path]] = []  # (name, its temporary)
    try:
        for path, data, mode in pairs:
            temps.append(_write_temporary(path, data, mode))
        for (path, _data, _mode), tmp in zip(pairs, temps, strict=True):
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise EscrowError(f"{path} already exists; refusing to overwrite it") from None
            linked.append((path, tmp))
    except (OSError, EscrowError) as exc:
        for path, tmp in linked:
            _unlink_if_same(path, tmp)
        if isinstance(exc, EscrowError):
            raise
        raise EscrowError(f"cannot write the escrow key pair: {_reason(exc)}") from None
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    return key_version(private.public_key())


def _write_temporary(path: Path, data: bytes, mode: int) -> Path:
    """`data` in a new file next to `path` with `mode` (whatever the umask), synced to disk."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _unlink_if_same(path: Path, tmp: Path) -> None:
    """Remove `path` only while it is still the file we linked from `tmp` (never someone else's file)."""
    try:
        ours, now = os.lstat(tmp), os.lstat(path)
    except OSError:
        return
    if (ours.st_dev, ours.st_ino) == (now.st_dev, now.st_ino):
        path.unlink(missing_ok=True)


def _read_key_file(path: Path, what: str) -> keyfile.PrivateFile:
    try:
        return keyfile.read_named(path, KEY_FILE_LIMIT, f"{what} {path}")  # O_NOFOLLOW; mode and owner from fstat
    except keyfile.UnreadableKeyFile as exc:
        raise EscrowError(str(exc)) from None


def load_public(path: Path) -> X25519PublicKey:
    found = _read_key_file(path, "escrow public key")
    if found.writable_by_others:
        raise EscrowError(
            f"escrow public key {path} has mode {found.mode:04o}: whoever can write it chooses who can open the call "
            f"keys; fix with: chmod go-w {path}"
        )
    if not (found.owned or found.uid == 0):
        raise EscrowError(f"escrow public key {path} must be owned by the user running securelink or by root")
    return cast(X25519PublicKey, _pem(serialization.load_pem_public_key, found.data, X25519PublicKey,
                                      f"escrow public key {path}"))  # fmt: skip


def load_private(path: Path) -> X25519PrivateKey:
    found = _read_key_file(path, "escrow private key")
    if found.shared:
        raise EscrowError(f"escrow private key {path} has mode {found.mode:04o}; fix with: chmod 600 {path}")
    load = lambda data: serialization.load_pem_private_key(data, password=None)  # noqa: E731
    return cast(X25519PrivateKey, _pem(load, found.data, X25519PrivateKey, f"escrow private key {path}"))


def _pem(load: Callable[[bytes], object], data: bytes, kind: type, what: str) -> object:
    """An X25519 key from PEM, or `EscrowError` saying which file and why (never its content)."""
    try:
        key = load(data)
    except (ValueError, TypeError) as exc:
        raise EscrowError(f"{what} cannot be read: {_reason(exc)}") from None
    if not isinstance(key, kind):
        raise EscrowError(f"{what} is not an X25519 key")
    return key


def _reason(exc: Exception) -> str:
    """Why a key file could not be written or used, never its content: the OS reason, or the parser's first sentence."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).split(". ")[0].strip() or type(exc).__name__
