"""The one-time provisioning URI a device is enrolled with: `securelink://provision?...`.

It is the only place a device secret ever leaves the platform. Pure.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

from asterisk_securelink.core.formats import FormatError, NumberFormat
from asterisk_securelink.core.slk1 import MIN_SECRET_LEN, SLK1Error, check_period

SCHEME = "securelink"
VERSION = "1"


class ProvisioningError(ValueError):
    pass


@dataclass(frozen=True)
class Provisioning:
    device_id: int
    key_id: str
    secret: bytes
    period: int
    t0: int
    inbound_format: str
    outbound_format: str
    look_behind: int = 1
    look_ahead: int = 0

    def __repr__(self) -> str:  # never show the secret
        return f"Provisioning(device_id={self.device_id}, key_id={self.key_id!r}, secret=<hidden>)"

    def uri(self) -> str:
        query = urlencode(
            {
                "v": VERSION,
                "alg": "SLK1",
                "device": str(self.device_id),
                "key_id": self.key_id,
                "secret": base64.urlsafe_b64encode(self.secret).rstrip(b"=").decode(),
                "period": str(self.period),
                "t0": str(self.t0),
                "in": self.inbound_format,
                "out": self.outbound_format,
                "behind": str(self.look_behind),
                "ahead": str(self.look_ahead),
            }
        )
        return f"{SCHEME}://provision?{query}"


def parse(uri: str) -> Provisioning:
    parts = urlsplit(uri)
    if parts.scheme != SCHEME or parts.netloc != "provision":
        raise ProvisioningError("not a securelink://provision URI")
    q = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    if q.get("v") != VERSION or q.get("alg", "SLK1") != "SLK1":
        raise ProvisioningError("unsupported provisioning version or algorithm")
    try:
        secret = base64.urlsafe_b64decode(q["secret"] + "=" * (-len(q["secret"]) % 4))
        prov = Provisioning(
            device_id=int(q["device"]),
            key_id=q["key_id"],
            secret=secret,
            period=check_period(int(q["period"])),
            t0=int(q.get("t0", "0")),
            inbound_format=NumberFormat(q["in"]).pattern,
            outbound_format=NumberFormat(q["out"]).pattern,
            look_behind=int(q.get("behind", "1")),
            look_ahead=int(q.get("ahead", "0")),
        )
    except KeyError as exc:
        raise ProvisioningError(f"provisioning URI lacks {exc.args[0]!r}") from None
    except (ValueError, binascii.Error, FormatError, SLK1Error) as exc:
        raise ProvisioningError(f"provisioning URI is invalid: {type(exc).__name__}") from None
    if len(prov.secret) < MIN_SECRET_LEN:
        raise ProvisioningError("provisioning URI secret is too short")
    return prov
