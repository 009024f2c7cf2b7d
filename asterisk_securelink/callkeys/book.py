"""The escrow half of the per-call key: the escrow public key (reloaded when its file changes), the escrowed row of
each issued key, the call records, and how the compliance officer opens a row (`securelink escrow decrypt`).

The escrow public key file is re-read when it changes, so a rotated key applies to the next call without a restart;
rows keep the version of the key they were sealed to.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from asterisk_securelink.callkeys import escrow
from asterisk_securelink.config import Config
from asterisk_securelink.store.ends import record_values
from asterisk_securelink.store.models import CallKey, CallRecord, utcnow
from asterisk_securelink.store.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallKeyIssued:
    key_id: str
    key: bytes  # the plaintext per-call key: handed to the legs' devices (TLS only), never stored

    def __repr__(self) -> str:
        return f"CallKeyIssued(key_id={self.key_id!r}, key=<hidden>)"


class EscrowKeyring:
    """The current escrow public key, reloaded when its file changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[float, int] | None = None
        self._key: X25519PublicKey | None = None

    def current(self) -> X25519PublicKey | None:
        if self.path is None:
            return None
        st = self.path.stat()
        stamp = (st.st_mtime, st.st_ino)
        if stamp != self._stamp:
            self._key = escrow.load_public(self.path)
            self._stamp = stamp
            log.info("escrow public key %s loaded", escrow.key_version(self._key))
        return self._key


class CallBook:
    def __init__(self, cfg: Config, store: Store) -> None:
        self.store = store
        self.retention = timedelta(days=cfg.escrow.retention_days)
        path = cfg.path(cfg.escrow.public_key_file) if cfg.escrow.public_key_file else None
        self.keyring = EscrowKeyring(path)

    async def issue_call_key(self, call_id: str, device_id: int | None, direction: str) -> CallKeyIssued | None:
        """A fresh per-call key, escrowed before it is used. None when no escrow key is configured."""
        public = self.keyring.current()
        if public is None:
            return None
        key = escrow.new_call_key()
        now = utcnow()
        binding = escrow.RowBinding(str(uuid.uuid4()), call_id, device_id, direction, now, escrow.key_version(public))
        sealed = escrow.seal(key, public, binding)
        row = CallKey(
            id=binding.key_id,
            call_id=call_id,
            device_id=device_id,
            direction=direction,
            key_version=binding.key_version,
            enc=sealed.enc,  # HPKE derives the AEAD nonce from the key schedule: no nonce is stored
            wrapped_key=sealed.ciphertext,
            created_at=now,
            expires_at=now + self.retention,
        )
        await self.store.add_call_key(row, actor="asterisk")
        return CallKeyIssued(binding.key_id, key)

    async def record(self, record: dict[str, Any]) -> None:
        """Write one call record, either direction: the outbound controller's `on_finished` dict (`OutboundCall.record`)
        or a callback's; its keys are `store.ends.record_values`'. A key is never recorded (caller None when the
        caller number was the key, "withheld" for a withheld number)."""
        await self.store.add_call_record(CallRecord(**record_values(record)))

    async def purge_records(self, before: datetime) -> int:
        """Delete the call records of calls started before `before` (`[calling] record_days`); how many."""
        return await self.store.purge_call_records(before)


def binding_of(row: CallKey) -> escrow.RowBinding:
    return escrow.RowBinding(row.id, row.call_id, row.device_id, row.direction, row.created_at, row.key_version)


def open_row(row: CallKey, private_key_path: Path) -> bytes:
    return escrow.open_sealed(
        escrow.Sealed(row.enc, row.wrapped_key), escrow.load_private(private_key_path), binding_of(row)
    )


def record_public(row: CallRecord) -> dict[str, Any]:
    def iso(d: datetime | None) -> str | None:
        return d.isoformat() if d else None

    return {
        "call_id": row.call_id,
        "device": row.device_id,
        "direction": row.direction,
        "verdict": row.verdict,
        "legs": json.loads(row.legs or "[]"),
        "answered_by": row.answered_by,
        "started_at": iso(row.started_at),
        "answered_at": iso(row.answered_at),
        "ended_at": iso(row.ended_at),
        "hangup_cause": row.hangup_cause,
        "method": row.method,
        "caller": row.caller,
        "destination": row.destination,
        "node": row.node,
    }
