"""A device's provisioning parameters and the one-time URI that carries them: `securelink://provision?...`.

SLK1.md 1.1, "Provisioning parameters": `v` (`1.1`), `key_id`, `secret` (unpadded base64url), `period`, `t0`, `in`,
`out`, `look_behind`, `look_ahead`, `trunk` (comma-separated), `mode` (`ani` | `dnis`) and, for `dnis`, `dial`. Every
value is percent-encoded per RFC 3986 (`+` as `%2B`) and each parameter appears exactly once. A 1.0 URI (`v=1`,
`behind`, `ahead`, optional `alg` and `device`) is still accepted; the device then uses 1.1's rules.

SLK1.md "1.2 provisioning": `v=1.2`, `mode` may also be `dtmf` or `intent` (the access number), and then `access`
(`+` and 8-15 digits) is required and `dial` absent. The version follows the mode (`DeviceParams.version`): an `ani`
or `dnis` provisioning is written as 1.1, so a 1.1 phone never receives a 1.2 value. `Offer` is what a platform gives
a phone by the version it speaks (`POST /v1/enroll`'s `"v"`).

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
VERSION_1_2: Final = "1.2"
VERSION_1_0: Final = "1"
MODES: Final = ("ani", "dnis")  # 1.1
ACCESS_MODES: Final = ("dtmf", "intent")  # 1.2 only: call the access number
MODES_1_2: Final = MODES + ACCESS_MODES
MAX_LOOK: Final = 10  # look_behind / look_ahead: far above any sane window
_UINT: Final = re.compile(r"[0-9]{1,12}")
_DIAL: Final = re.compile(r"[0-9*#]{0,16}")
_ACCESS: Final = re.compile(r"\+[0-9]{8,15}")
_PHONE_VERSION: Final = re.compile(r"([0-9]{1,3})(?:\.([0-9]{1,3}))?")

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
    mode: str = "ani"  # ani: call with the key as caller number; dnis: dial it; 1.2: dtmf, intent
    dial: str = ""  # dnis: an access prefix dialled before the key's significant part; empty: dial the key itself
    access: str = ""  # dtmf, intent (1.2): the access number, E.164; empty for ani and dnis

    @property
    def version(self) -> str:
        """The SLK1 version these parameters need: `1.2` for `dtmf` and `intent`, else `1.1`."""
        return VERSION_1_2 if self.mode in ACCESS_MODES else VERSION


def params_document(p: DeviceParams) -> dict[str, Any]:
    """The parameters as JSON sends them, in this order (the device API's answers, a device's state file): `trunk`
    comma-separated, then `dial` (ani, dnis: always present) or `access` (dtmf, intent: instead of `dial`)."""
    doc: dict[str, Any] = {
        "period": p.period,
        "t0": p.t0,
        "in": p.inbound_format,
        "out": p.outbound_format,
        "look_behind": p.look_behind,
        "look_ahead": p.look_ahead,
        "trunk": ",".join(p.trunk),
        "mode": p.mode,
    }
    if p.mode in ACCESS_MODES:
        doc["access"] = p.access
    else:
        doc["dial"] = p.dial
    return doc


def phone_speaks_1_2(v: object) -> bool:
    """Whether a phone that says it speaks SLK1 `v` (the enrollment's `"v"`; None: absent, 1.1) may be given 1.2
    values: `1.2` or a later 1.x. Raises ProvisioningError for a `v` that is not a version (`1`, `1.1`, `1.2`)."""
    if v is None:
        return False
    m = _PHONE_VERSION.fullmatch(v) if isinstance(v, str) else None
    if m is None:
        raise ProvisioningError("v must be a version such as 1.1 or 1.2")
    return (int(m[1]), int(m[2] or 0)) >= (1, 2)


@dataclass(frozen=True)
class Offer:
    """What a platform provisions, by the phone's version: `legacy` (ani or dnis, SLK1 1.1) for every phone, when the
    platform offers one; `access` (dtmf or intent, SLK1 1.2) for a phone that speaks 1.2, when it offers one."""

    legacy: DeviceParams | None
    access: DeviceParams | None = None

    def for_phone(self, speaks_1_2: bool) -> DeviceParams | None:
        """The parameters for a phone; None: it must be upgraded (409 `upgrade_required`)."""
        if speaks_1_2 and self.access is not None:
            return self.access
        return self.legacy


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
        """The 1.1 URI (1.2 for dtmf and intent): exactly the spec's parameters, each once, every value
        percent-encoded (RFC 3986)."""
        params = [
            ("v", self.version),
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
        if self.mode in ACCESS_MODES:
            params.append(("access", self.access))
        elif self.mode == "dnis" or self.dial:
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
    if p.mode not in MODES_1_2:
        raise ProvisioningError(f"mode must be one of {', '.join(MODES_1_2)}, got {p.mode!r}")
    if not isinstance(p.dial, str) or not _DIAL.fullmatch(p.dial):
        raise ProvisioningError("dial must be an access prefix of at most 16 characters 0-9 * #")
    if p.mode in ACCESS_MODES:
        if not isinstance(p.access, str) or not _ACCESS.fullmatch(p.access):
            raise ProvisioningError(f"mode {p.mode} needs access: the access number, + and 8-15 digits")
        if p.dial:
            raise ProvisioningError(f"mode {p.mode} has no dial (the access number is dialled)")
    elif p.access:
        raise ProvisioningError(f"mode {p.mode} has no access number")
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
    """A 1.2, 1.1 or 1.0 provisioning URI. Raises ProvisioningError (never echoing the URI); unknown parameters are
    ignored, a missing or repeated one refuses the URI. 1.1 knows no `dtmf` or `intent` (and no `access`); in 1.2,
    `dtmf` and `intent` need `access` and refuse `dial`, `ani` and `dnis` ignore `access`."""
    parts = urlsplit(uri)
    if parts.scheme != SCHEME or parts.netloc != "provision" or parts.path not in ("", "/"):
        raise ProvisioningError("not a securelink://provision URI")
    q = _query(parts.query)
    version = q.get("v")
    mode = q.get("mode", "ani")
    access_mode = version == VERSION_1_2 and mode in ACCESS_MODES
    if version == VERSION and mode in ACCESS_MODES:
        raise ProvisioningError(f"mode {mode} needs provisioning version {VERSION_1_2}")
    if access_mode and "dial" in q:
        raise ProvisioningError(f"mode {mode} has no dial (the access number is dialled)")
    if version in (VERSION, VERSION_1_2):
        required = _REQUIRED_1_1 + (("dial",) if mode == "dnis" else ("access",) if access_mode else ())
    elif version == VERSION_1_0:
        if q.get("alg", "SLK1") != "SLK1":
            raise ProvisioningError("unsupported provisioning algorithm")
        required = _REQUIRED_1_0
    else:
        raise ProvisioningError("unsupported provisioning version")
    missing = [name for name in required if name not in q]
    if missing:
        raise ProvisioningError(f"provisioning URI lacks {missing[0]!r}")
    v11 = version in (VERSION, VERSION_1_2)
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
        mode=mode,
        dial=q.get("dial", ""),
        access=q["access"] if access_mode else "",
        device_id=None if v11 or "device" not in q else _uint(q, "device"),
    )
