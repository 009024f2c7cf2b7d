"""A device's provisioning parameters and the one-time URI that carries them: `securelink://provision?...`.

SLK1.md 1.1, "Provisioning parameters": `v` (`1.1`), `key_id`, `secret` (unpadded base64url), `period`, `t0`, `in`,
`out`, `look_behind`, `look_ahead`, `trunk` (comma-separated), `mode` (`ani` | `dnis`) and, for `dnis`, `dial`. Every
value is percent-encoded per RFC 3986 (`+` as `%2B`) and each parameter appears exactly once. A 1.0 URI (`v=1`,
`behind`, `ahead`, optional `alg` and `device`) is still accepted; the device then uses 1.1's rules.

It is the only place a device secret ever leaves the platform. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final
from urllib.parse import quote, urlsplit

from asterisk_securelink.core import b64
from asterisk_securelink.core.compare import check_trunk_prefixes
from asterisk_securelink.core.formats import FormatError, NumberFormat
from asterisk_securelink.core.query import QueryError, parse_query
from asterisk_securelink.core.slk1 import MIN_SECRET_LEN, SLK1Error, check_key_id, check_period
from asterisk_securelink.errors import InputError

SCHEME: Final = "securelink"
VERSION: Final = "1.1"
VERSION_1_0: Final = "1"
MODES: Final = ("ani", "dnis")
MAX_LOOK: Final = 10  # look_behind / look_ahead: far above any sane window
_UINT: Final = re.compile(r"[0-9]{1,12}")
_DIAL: Final = re.compile(r"[0-9*#]{0,16}")

# 1.1: every one of these exactly once (`dial` only for mode dnis)
_REQUIRED_1_1: Final = ("key_id", "secret", "period", "t0", "in", "out", "look_behind", "look_ahead", "trunk", "mode")
_REQUIRED_1_0: Final = ("key_id", "secret", "period", "in", "out")


class ProvisioningError(InputError, ValueError):
    """A provisioning that cannot be used. Messages never contain the URI or the secret."""


@dataclass(frozen=True)
class DeviceParams:
    """Every provisioning parameter but key_id and secret: what every device of a platform is told alike, in its
    URI (`Provisioning.uri`) and in the device API's answers (`params_document`). Not checked here: a `Provisioning`
    checks them with its key_id and secret, so a device refuses an answer it could not use."""

    period: int
    t0: int
    inbound_format: str  # `in`
    outbound_format: str  # `out`
    look_behind: int = 1
    look_ahead: int = 1
    trunk: Sequence[str] = ()  # the phone's trunk prefixes, for comparing the platform's outbound keys
    mode: str = "ani"  # ani: call with the key as caller number; dnis: dial it
    dial: str = ""  # dnis: an access prefix dialled before the key's significant part; empty: dial the key itself


def params_document(p: DeviceParams) -> dict[str, Any]:
    """The parameters as JSON sends them, in this order (the device API's answers, a device's state file): `trunk`
    comma-separated, `dial` always present."""
    return {
        "period": p.period,
        "t0": p.t0,
        "in": p.inbound_format,
        "out": p.outbound_format,
        "look_behind": p.look_behind,
        "look_ahead": p.look_ahead,
        "trunk": ",".join(p.trunk),
        "mode": p.mode,
        "dial": p.dial,
    }


@dataclass(frozen=True)
class Provisioning(DeviceParams):
    """One device's parameters with its key_id and secret: all a device needs. Every field is checked."""

    key_id: str = field(kw_only=True)
    secret: bytes = field(kw_only=True)
    device_id: int | None = field(default=None, kw_only=True, compare=False)  # display only; not in 1.1 URIs

    @classmethod
    def of(cls, params: DeviceParams, *, key_id: str, secret: bytes, device_id: int | None = None) -> Provisioning:
        """`params` given to one device. Raises ProvisioningError."""
        shared = {f.name: getattr(params, f.name) for f in fields(DeviceParams)}
        return cls(**shared, key_id=key_id, secret=secret, device_id=device_id)

    def __post_init__(self) -> None:
        object.__setattr__(self, "trunk", _checked(self))

    def __repr__(self) -> str:  # never show the secret
        return f"Provisioning(device_id={self.device_id}, key_id={self.key_id!r}, secret=<hidden>)"

    def uri(self) -> str:
        """The 1.1 URI: exactly the spec's parameters, each once, every value percent-encoded (RFC 3986)."""
        params = [
            ("v", VERSION),
            ("key_id", self.key_id),
            ("secret", b64.encode(self.secret)),
            ("period", str(self.period)),
            ("t0", str(self.t0)),
            ("in", self.inbound_format),
            ("out", self.outbound_format),
            ("look_behind", str(self.look_behind)),
            ("look_ahead", str(self.look_ahead)),
            ("trunk", ",".join(self.trunk)),
            ("mode", self.mode),
        ]
        if self.mode == "dnis" or self.dial:
            params.append(("dial", self.dial))
        query = "&".join(f"{name}={quote(value, safe='')}" for name, value in params)
        return f"{SCHEME}://provision?{query}"


def _checked(p: Provisioning) -> tuple[str, ...]:
    """Validate every field (raises ProvisioningError naming the field, never its secret value)."""
    try:
        check_key_id(p.key_id)
        check_period(p.period)
        NumberFormat(p.inbound_format)
        NumberFormat(p.outbound_format)
        trunk = check_trunk_prefixes(p.trunk)
    except (SLK1Error, FormatError, ValueError) as exc:
        raise ProvisioningError(str(exc)) from None
    if not isinstance(p.secret, bytes) or len(p.secret) < MIN_SECRET_LEN:
        raise ProvisioningError(f"the secret must be at least {MIN_SECRET_LEN} bytes")
    for name, value, high in (("t0", p.t0, None), ("look_behind", p.look_behind, MAX_LOOK),
                              ("look_ahead", p.look_ahead, MAX_LOOK)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (high and value > high):
            raise ProvisioningError(f"{name} must be an integer in 0..{high or 'any'}, got {value!r}")
    if p.mode not in MODES:
        raise ProvisioningError(f"mode must be one of {', '.join(MODES)}, got {p.mode!r}")
    if not isinstance(p.dial, str) or not _DIAL.fullmatch(p.dial):
        raise ProvisioningError("dial must be an access prefix of at most 16 characters 0-9 * #")
    return trunk


def _query(query: str) -> dict[str, str]:
    """Name -> value (`core.query`: RFC 3986 percent-decoding, a bare '+' stays '+'); a parameter given twice is
    refused, empty parts are skipped."""
    try:
        return parse_query(query, skip_empty=True)
    except QueryError as exc:
        if exc.problem == "repeated":
            raise ProvisioningError(f"provisioning URI names {exc.name!r} more than once") from None
        if exc.problem == "encoding":
            raise ProvisioningError("provisioning URI is not valid UTF-8") from None
        raise ProvisioningError("provisioning URI is not a valid query string") from None


def _uint(q: dict[str, str], name: str, default: int | None = None) -> int:
    text = q.get(name)
    if text is None and default is not None:
        return default
    if text is None:
        raise ProvisioningError(f"provisioning URI lacks {name!r}")
    if not _UINT.fullmatch(text):
        raise ProvisioningError(f"provisioning URI: {name!r} must be a whole number")
    return int(text)


def _secret(text: str) -> bytes:
    try:
        return b64.decode(text, padding=True)
    except ValueError:
        raise ProvisioningError("provisioning URI: the secret is not base64url") from None


def parse(uri: str) -> Provisioning:
    """A 1.1 or 1.0 provisioning URI. Raises ProvisioningError (never echoing the URI); unknown parameters are
    ignored, a missing or repeated one refuses the URI."""
    parts = urlsplit(uri)
    if parts.scheme != SCHEME or parts.netloc != "provision" or parts.path not in ("", "/"):
        raise ProvisioningError("not a securelink://provision URI")
    q = _query(parts.query)
    version = q.get("v")
    if version == VERSION:
        required = _REQUIRED_1_1 + (("dial",) if q.get("mode") == "dnis" else ())
    elif version == VERSION_1_0:
        if q.get("alg", "SLK1") != "SLK1":
            raise ProvisioningError("unsupported provisioning algorithm")
        required = _REQUIRED_1_0
    else:
        raise ProvisioningError("unsupported provisioning version")
    missing = [name for name in required if name not in q]
    if missing:
        raise ProvisioningError(f"provisioning URI lacks {missing[0]!r}")
    v11 = version == VERSION
    trunk = q.get("trunk", "")
    return Provisioning(
        key_id=q["key_id"],
        secret=_secret(q["secret"]),
        period=_uint(q, "period"),
        t0=_uint(q, "t0", 0),
        inbound_format=q["in"],
        outbound_format=q["out"],
        look_behind=_uint(q, "look_behind" if v11 else "behind", 1),
        look_ahead=_uint(q, "look_ahead" if v11 else "ahead", 0),
        trunk=tuple(trunk.split(",")) if trunk else (),
        mode=q.get("mode", "ani"),
        dial=q.get("dial", ""),
        device_id=None if v11 or "device" not in q else _uint(q, "device"),
    )
