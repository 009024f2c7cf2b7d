"""The outbound controller's per-call hooks (`OutboundHooks`): the call's key from `callkeys.CallKeys`, sent in a
header only on legs whose signalling is TLS (`TlsLegs`), and one call record when the call ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from asterisk_securelink.callkeys.service import CallKeys
from asterisk_securelink.core import b64
from asterisk_securelink.outbound.state import LegExtras

log = logging.getLogger(__name__)


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
    return b64.encode(key)


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


class CallHooks:
    """The outbound controller's hooks: a per-call key issued before the legs ring (escrowed; sent in a header only on
    TLS legs; with the device API, also kept for the device to claim), and one call record per call when it ends."""

    def __init__(self, keys: CallKeys, tls: TlsLegs) -> None:
        self.keys = keys
        self.tls = tls

    async def before_legs(
        self, call_id: str, device_id: int, endpoints: Sequence[str], presented: str | None = None
    ) -> LegExtras:
        issued = await self.keys.outbound(call_id, device_id, presented)
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
            await self.keys.ended(str(record["call_id"]))  # hung up: the voucher can no longer be claimed
        finally:
            await self.keys.record(record)
