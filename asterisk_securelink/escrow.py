"""Per-call key escrow: HPKE base mode (RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM).

Each bridged call gets 32 random bytes; only their encryption to the escrow public key is stored. The private key
is held by a compliance officer, never by the plugin. The HPKE `info` binds the ciphertext to its row (key id, call
id, device, direction, creation time, key version), so a ciphertext copied into another row does not open.
Pure apart from the key-file helpers.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

CALL_KEY_LEN = 32
ENC_LEN = 32  # the X25519 encapsulated key at the front of an HPKE ciphertext
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_INFO_LABEL = "securelink-call-key-v1"


class EscrowError(ValueError):
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
def generate(private_path: Path, public_path: Path) -> str:
    """Write a new escrow key pair (private 0600, PEM); returns its key version. Refuses to overwrite."""
    private = X25519PrivateKey.generate()
    for p in (private_path, public_path):
        if p.exists():
            raise EscrowError(f"{p} already exists; refusing to overwrite it")
    pem_private = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem_public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # both files are written under temporary names and renamed only when both are complete: never half a pair
    temps: list[Path] = []
    try:
        for path, data, mode in ((private_path, pem_private, 0o600), (public_path, pem_public, 0o644)):
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            temps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), mode)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.rename(temps[0], private_path)
        os.rename(temps[1], public_path)
    except OSError as exc:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        if not public_path.exists():
            private_path.unlink(missing_ok=True)  # only ours: existence was refused above
        raise EscrowError(f"cannot write the escrow key pair: {_reason(exc)}") from None
    return key_version(private.public_key())


def load_public(path: Path) -> X25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise EscrowError(f"escrow public key {path} cannot be read: {_reason(exc)}") from None
    if not isinstance(key, X25519PublicKey):
        raise EscrowError(f"escrow public key {path} is not an X25519 key")
    return key


def load_private(path: Path) -> X25519PrivateKey:
    try:
        st = path.stat()
    except OSError:
        raise EscrowError(f"escrow private key {path} not found") from None
    if st.st_mode & 0o077:
        raise EscrowError(
            f"escrow private key {path} has mode {stat.S_IMODE(st.st_mode):04o}; fix with: chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise EscrowError(f"escrow private key {path} cannot be read: {_reason(exc)}") from None
    if not isinstance(key, X25519PrivateKey):
        raise EscrowError(f"escrow private key {path} is not an X25519 key")
    return key


def _reason(exc: Exception) -> str:
    """Why a key file could not be written or used, never its content: the OS reason, or the parser's first sentence."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).split(". ")[0].strip() or type(exc).__name__
