"""The outbound controller's per-call hooks: the escrowed per-call key (sent only on TLS legs) and the call record.

`CallBook` is the thin layer between `escrow` and the store; `TlsLegs` decides which legs may carry the key;
`CallHooks` puts them together as the controller's `OutboundHooks`.

The escrow public key file is re-read when it changes, so a rotated key applies to the next call without a
restart; rows keep the version of the key they were sealed to.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from asterisk_securelink import escrow
from asterisk_securelink.config import Config
from asterisk_securelink.outbound.state import LegExtras
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
        """Write one call record (from the outbound controller's `on_finished`)."""
        await self.store.add_call_record(
            CallRecord(
                call_id=str(record["call_id"])[:128],
                device_id=record.get("device_id"),
                direction=str(record.get("direction", "outbound")),
                verdict=record.get("verdict"),
                legs=json.dumps(record.get("legs", []), default=str),
                answered_by=record.get("answered_by"),
                started_at=record.get("started_at") or utcnow(),
                answered_at=record.get("answered_at"),
                ended_at=record.get("ended_at") or utcnow(),
                hangup_cause=record.get("hangup_cause"),
            )
        )


CALL_KEY_HEADER = "X-SecureLink-Call-Key"
TRANSPORT_TTL = 30.0  # seconds an endpoint's transport answer is reused


def pjsip_endpoint_name(dial: str) -> str | None:
    """The PJSIP endpoint a dial string goes through: `PJSIP/ep`, `PJSIP/ep/sip:uri`, `PJSIP/user@ep`; None for
    any other technology."""
    tech, _, rest = dial.partition("/")
    if tech.upper() != "PJSIP" or not rest:
        return None
    head = rest.split("/", 1)[0]
    name = head.rpartition("@")[2]
    return name or None


def call_key_header_value(key: bytes) -> str:
    """The per-call key as the device reads it from the header: unpadded base64url of the 32 bytes."""
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii")


class ConfigSource(Protocol):
    """What the transport check needs from ARI (implemented by `asterisk.ari.client.AriClient`)."""

    async def get_config_object(self, config_class: str, object_type: str, object_id: str) -> dict[str, str] | None: ...


class TlsLegs:
    """Is a leg's signalling TLS? Asks Asterisk for the endpoint's `transport` and that transport's `protocol`.

    Fails closed: an endpoint without an explicit transport (Asterisk would choose one from the contact), a transport
    that is not `tls`, a non-PJSIP dial string or any error means "not TLS", so the key is not sent."""

    def __init__(self, source: ConfigSource, ttl: float = TRANSPORT_TTL) -> None:
        self.source = source
        self.ttl = ttl
        self._cache: dict[str, tuple[float, bool]] = {}

    async def is_tls(self, dial: str) -> bool:
        name = pjsip_endpoint_name(dial)
        if name is None:
            return False
        hit = self._cache.get(name)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        try:
            secure = await self._lookup(name)
        except Exception as exc:  # noqa: BLE001 - cannot tell: not TLS, and do not cache the failure
            log.warning("transport of endpoint %r unknown (%s): no per-call key on that leg", name, type(exc).__name__)
            return False
        self._cache[name] = (time.monotonic() + self.ttl, secure)
        return secure

    async def _lookup(self, name: str) -> bool:
        endpoint = await self.source.get_config_object("res_pjsip", "endpoint", name)
        transport = (endpoint or {}).get("transport", "")
        if not transport:
            return False
        fields = await self.source.get_config_object("res_pjsip", "transport", transport)
        return (fields or {}).get("protocol", "").lower() == "tls"


class CallVouchers(Protocol):
    """The device API's vouchers (`deviceapi.runtime.Vouchers`): a per-call key, escrowed when an escrow key is
    configured, kept for release to the device the mobile leg presented `presented` to."""

    async def outbound(self, call_id: str, device_id: int, presented: str) -> CallKeyIssued: ...

    async def ended(self, call_id: str) -> None: ...


class CallHooks:
    """The outbound controller's hooks: a per-call key escrowed before the legs ring (sent in a header only on TLS
    legs; with the device API, also kept for the device to claim), and one call record per call when it ends."""

    def __init__(self, book: CallBook, tls: TlsLegs, vouchers: CallVouchers | None = None) -> None:
        self.book = book
        self.tls = tls
        self.vouchers = vouchers

    async def before_legs(
        self, call_id: str, device_id: int, endpoints: Sequence[str], presented: str | None = None
    ) -> LegExtras:
        if self.vouchers is not None and presented:
            issued: CallKeyIssued | None = await self.vouchers.outbound(call_id, device_id, presented)
        else:
            issued = await self.book.issue_call_key(call_id, device_id, "outbound")
        if issued is None:
            return LegExtras()
        variables: dict[str, dict[str, str]] = {}
        for endpoint in endpoints:
            if await self.tls.is_tls(endpoint):
                variables[endpoint] = {f"PJSIP_HEADER(add,{CALL_KEY_HEADER})": call_key_header_value(issued.key)}
        log.info("call %s: per-call key %s escrowed; sent on %d of %d leg(s) (TLS only)", call_id, issued.key_id,
                 len(variables), len(endpoints))  # fmt: skip
        return LegExtras(issued.key_id, variables)

    async def on_finished(self, record: dict[str, Any]) -> None:
        try:
            if self.vouchers is not None:  # hung up: the voucher can no longer be claimed
                await self.vouchers.ended(str(record["call_id"]))
        finally:
            await self.book.record(record)


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
    }
