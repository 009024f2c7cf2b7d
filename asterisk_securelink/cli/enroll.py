"""`securelink device add|rotate ... --activation`: enrollment by a one-time activation code (`docs/device-api.md`).

The administrator never handles the device secret: the command prints a code (`XXXX-XXXX-XXXX-XXXX`, 80 bits), the
`securelink://enroll?server=...&code=...` URI and its QR code; the phone redeems it once over the device API within
`[device_api] code_ttl` and receives its secret then. Only the code's SHA-256 is stored; a new code expires the
device's earlier unused ones.
"""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime

import segno

from asterisk_securelink.cli.context import ACTOR, CliError, emit
from asterisk_securelink.config import Config
from asterisk_securelink.core.slk1 import now_ms
from asterisk_securelink.deviceapi.codes import code_hash, enrollment_uri, format_code, new_code, server_url
from asterisk_securelink.deviceapi.settings import public_host
from asterisk_securelink.store.api_store import add_code, expire_codes
from asterisk_securelink.store.store import DeviceRow, Store


def check(cfg: Config) -> None:
    """Refuse `--activation` before anything changes when the device API is not configured."""
    if not cfg.device_api.enabled:
        raise CliError(
            "--activation needs the device API: set [device_api] listen (and public_host, tls_cert, tls_key) in the "
            "config, or leave --activation out for a one-time provisioning URI"
        )


def qr_text(uri: str) -> str:
    """The URI as a QR code for a terminal (the enrollment URI holds no secret, only a short-lived code)."""
    out = io.StringIO()
    segno.make(uri, error="m", micro=False).terminal(out=out, compact=True)
    return out.getvalue().rstrip("\n")


async def emit_activation(args: argparse.Namespace, cfg: Config, store: Store, device: DeviceRow, headline: str) -> int:
    """Make the device's activation code, store its hash, and print it with the enrollment URI and QR code."""
    check(cfg)
    code = new_code()
    now = now_ms()
    ttl = cfg.device_api.code_ttl
    await expire_codes(store, device.id, now)
    await add_code(store, device.id, device.key_id, code_hash(code), now, ttl, ACTOR)
    uri = enrollment_uri(server_url(public_host(cfg.device_api)), code)
    expires = datetime.fromtimestamp((now + ttl * 1000) / 1000, UTC).isoformat(timespec="seconds")
    data = {**device.public(), "activation_code": format_code(code), "enrollment_uri": uri, "code_expires_at": expires}
    text = (
        f"{headline}\n"
        f"activation code (single use, until {expires}; give it only to the device's user): {format_code(code)}\n"
        f"enrollment URI: {uri}\n{qr_text(uri)}"
    )
    emit(args, data, text)
    return 0
