"""A device's provisioning parameters and the one-time URI that carries them: `securelink://provision?...`.

SLK1.md 1.1 revision 2, "Provisioning parameters": `v` (`1.1`), `key_id`, `secret` (canonical unpadded base64url of
16-64 bytes), `period`, `t0`, `in`, `out`, `look_behind`, `look_ahead` (0-10), `trunk` (comma-separated, at most 16
prefixes of 1-8 digits), `mode` (`ani` | `dnis`) and, for `dnis` only, `dial` (0-16 of `0-9 * #`; empty: dial the key
itself). Every value is percent-encoded per RFC 3986 (`+` as `%2B`) and each parameter appears exactly once. Read
strictly (`parse`): a raw character RFC 3986 does not allow (space, tab, CR, LF: never deleted silently) or a
fragment refuses the URI; scheme and host compare ASCII case-insensitively; empty segments are skipped; numbers are
decimal without leading zeros; a parameter the spec does not name is ignored, one it names with a bad value refuses
the URI. A 1.0 URI (`v=1`, `behind`, `ahead`, optional `alg` and `device`) is still accepted; the device then uses
1.1's rules.

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
from urllib.parse import quote

from asterisk_securelink.core import b64
from asterisk_securelink.core.ascii import ascii_lower
from asterisk_securelink.core.compare import check_trunk_prefixes
from asterisk_securelink.core.formats import FormatError, NumberFormat
from asterisk_securelink.core.query import QueryError, parse_query
from asterisk_securelink.core.slk1 import MAX_T_MS, MIN_SECRET_LEN, SLK1Error, check_key_id, check_period
from asterisk_securelink.errors import InputError

SCHEME: Final = "securelink"
VERSION: Final = "1.1"
VERSION_1_2: Final = "1.2"
VERSION_1_0: Final = "1"
MODES: Final = ("ani", "dnis")  # 1.1
ACCESS_MODES: Final = ("dtmf", "intent")  # 1.2 only: call the access number
MODES_1_2: Final = MODES + ACCESS_MODES
MAX_LOOK: Final = 10  # look_behind / look_ahead: far above any sane window
MAX_SECRET_LEN: Final = 64  # a URI's secret is 16..64 bytes (revision 2)
MAX_T0: Final = MAX_T_MS // 1000  # a later epoch origin leaves no time with a key (t_ms is unsigned 64-bit)
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
        trunk, dial = _checked(self)
        object.__setattr__(self, "trunk", trunk)
        object.__setattr__(self, "dial", dial)

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
        elif self.mode == "dnis":  # only there: `ani` has no dial
            params.append(("dial", self.dial))
        query = "&".join(f"{name}={quote(value, safe='')}" for name, value in params)
        return f"{SCHEME}://provision?{query}"


def _checked(p: Provisioning) -> tuple[tuple[str, ...], str]:
    """Validate every field (raises ProvisioningError naming the field, never its secret value); the trunk prefixes
    as a tuple and the `dial` to keep: `dial` is for `dnis` only, so another mode keeps none (a valid one given with
    `ani` is dropped, as a URI's is: `uri` writes none)."""
    try:
        check_key_id(p.key_id)
        check_period(p.period)
        NumberFormat(p.inbound_format)
        NumberFormat(p.outbound_format)
        trunk = check_trunk_prefixes(p.trunk)
    except (SLK1Error, FormatError, ValueError) as exc:
        raise ProvisioningError(str(exc)) from None
    if not isinstance(p.secret, bytes) or not MIN_SECRET_LEN <= len(p.secret) <= MAX_SECRET_LEN:
        raise ProvisioningError(f"the secret must be {MIN_SECRET_LEN}..{MAX_SECRET_LEN} bytes")
    for name, value, high in (("t0", p.t0, MAX_T0), ("look_behind", p.look_behind, MAX_LOOK),
                              ("look_ahead", p.look_ahead, MAX_LOOK)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            raise ProvisioningError(f"{name} must be an integer in 0..{high}, got {value!r}")
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
    return trunk, p.dial if p.mode == "dnis" else ""


# -- reading a URI ---------------------------------------------------------------------------------------------------
# RFC 3986 characters allowed raw in this URI: unreserved, sub-delims, ':', '@', '/', '?' and '%' (of an escape).
# Not '#' (a fragment), nor '[' ']' (IP literals only), nor a space, a control character or anything non-ASCII.
_RAW: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")
_SHAPE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?]*)(/?)(?:\?(.*))?", re.DOTALL)
_NUMBER: Final = re.compile(r"0|[1-9][0-9]{0,16}")  # decimal ASCII without leading zeros
HOST: Final = "provision"
# every parameter SLK1.md 1.1 / 1.2 names (1.0's `behind` and `ahead` too): at most once each, and a bad value
# refuses the URI even where this version or mode does not use it; any other parameter is ignored
_NAMED: Final = frozenset(
    {"v", "key_id", "secret", "period", "t0", "in", "out", "look_behind", "look_ahead", "trunk", "mode", "dial",
     "access", "behind", "ahead"}
)  # fmt: skip
_NAMED_1_0: Final = _NAMED | {"alg", "device"}  # what a 1.0 URI also carries; in a 1.1 or 1.2 URI they are unknown


def _query(uri: str) -> dict[str, str]:
    """The named parameters of a `securelink://provision?...` URI, percent-decoded (`core.query`: RFC 3986, a bare '+'
    stays '+'): the page's names, and for a 1.0 URI also `alg` and `device`. Refused: any character RFC 3986 does not
    allow raw (never deleted silently, unlike `urlsplit`, which drops tabs, CR and LF), a fragment, another scheme or
    host (both compared ASCII case-insensitively), a path, a bad escape or one that is not UTF-8, a part without '=',
    a named parameter given twice. Empty parts are skipped."""
    if not isinstance(uri, str) or "#" in uri:
        raise ProvisioningError("not a securelink://provision URI (a fragment '#' is not allowed)")
    if not _RAW.fullmatch(uri):
        raise ProvisioningError(
            "provisioning URI holds a character RFC 3986 does not allow raw (a space, tab, CR, LF, control or "
            "non-ASCII character): escape it"
        )
    shape = _SHAPE.fullmatch(uri)
    if shape is None or ascii_lower(shape[1]) != SCHEME or ascii_lower(shape[2]) != HOST:
        raise ProvisioningError("not a securelink://provision URI")
    query = shape[4] or ""
    try:
        named = _NAMED_1_0 if parse_query(query, only=("v",), skip_empty=True).get("v") == VERSION_1_0 else _NAMED
        return parse_query(query, only=named, skip_empty=True)
    except QueryError as exc:
        if exc.problem == "repeated":
            raise ProvisioningError(f"provisioning URI names {exc.name!r} more than once") from None
        if exc.problem == "encoding":
            raise ProvisioningError("provisioning URI is not valid UTF-8") from None
        raise ProvisioningError("provisioning URI is not a valid query string") from None


def _number(q: dict[str, str], name: str, default: int | None = None) -> int:
    """A number parameter: decimal ASCII without leading zeros (`0` itself is fine); its range is checked by
    `Provisioning`."""
    text = q.get(name)
    if text is None:
        if default is None:
            raise ProvisioningError(f"provisioning URI lacks {name!r}")
        return default
    if not _NUMBER.fullmatch(text):
        raise ProvisioningError(f"provisioning URI: {name!r} must be a decimal number without leading zeros")
    return int(text)


def _secret(text: str) -> bytes:
    """Canonical unpadded base64url of 16..64 bytes: no '=', no non-zero unused bits (one secret, one spelling)."""
    try:
        secret = b64.decode(text)
    except ValueError:
        raise ProvisioningError("provisioning URI: the secret is not unpadded base64url") from None
    if b64.encode(secret) != text:
        raise ProvisioningError("provisioning URI: the secret is not canonical base64url (non-zero unused bits)")
    if not MIN_SECRET_LEN <= len(secret) <= MAX_SECRET_LEN:
        raise ProvisioningError(f"provisioning URI: the secret must be {MIN_SECRET_LEN}..{MAX_SECRET_LEN} bytes")
    return secret


def _unused_values(q: dict[str, str], used: set[str]) -> None:
    """A named parameter this version or mode does not use still follows its rule (SLK1.md: a parameter named there
    with a value outside its rules refuses the URI)."""
    for name in ("look_behind", "look_ahead", "behind", "ahead"):
        if name in q and name not in used and _number(q, name) > MAX_LOOK:
            raise ProvisioningError(f"provisioning URI: {name!r} must be 0..{MAX_LOOK}")
    if "dial" in q and "dial" not in used and not _DIAL.fullmatch(q["dial"]):
        raise ProvisioningError("provisioning URI: 'dial' must be at most 16 characters 0-9 * #")
    if "access" in q and "access" not in used and not _ACCESS.fullmatch(q["access"]):
        raise ProvisioningError("provisioning URI: 'access' must be + and 8-15 digits")


def parse(uri: str) -> Provisioning:
    """A 1.2, 1.1 or 1.0 provisioning URI (SLK1.md 1.1 revision 2, "Provisioning parameters"). Raises
    ProvisioningError, never echoing the URI or the secret: for a raw character RFC 3986 does not allow, a fragment,
    a named parameter missing, repeated or with a value outside its rules. Unknown parameters are ignored. 1.1 knows
    no `dtmf` or `intent`; in 1.2 they need `access` and refuse `dial`. `dial` is kept for `dnis` only."""
    q = _query(uri)
    version = q.get("v")
    if version not in (VERSION, VERSION_1_2, VERSION_1_0):
        raise ProvisioningError("unsupported provisioning version")
    v11 = version != VERSION_1_0
    mode = q.get("mode", "ani")
    if version == VERSION and mode in ACCESS_MODES:
        raise ProvisioningError(f"mode {mode} needs provisioning version {VERSION_1_2}")
    if mode not in (MODES_1_2 if version == VERSION_1_2 else MODES):
        raise ProvisioningError(f"provisioning URI: unknown mode {mode[:16]!r}")
    access_mode = mode in ACCESS_MODES
    if access_mode and "dial" in q:
        raise ProvisioningError(f"mode {mode} has no dial (the access number is dialled)")
    if v11:
        required = _REQUIRED_1_1 + (("dial",) if mode == "dnis" else ("access",) if access_mode else ())
        behind, ahead = "look_behind", "look_ahead"
    else:
        if q.get("alg", "SLK1") != "SLK1":
            raise ProvisioningError("unsupported provisioning algorithm")
        required, behind, ahead = _REQUIRED_1_0, "behind", "ahead"
    missing = [name for name in required if name not in q]
    if missing:
        raise ProvisioningError(f"provisioning URI lacks {missing[0]!r}")
    used = {behind, ahead} | ({"dial"} if mode == "dnis" else set()) | ({"access"} if access_mode else set())
    _unused_values(q, used)
    trunk = q.get("trunk", "")
    return Provisioning(
        key_id=q["key_id"],
        secret=_secret(q["secret"]),
        period=_number(q, "period"),
        t0=_number(q, "t0", 0),
        inbound_format=q["in"],
        outbound_format=q["out"],
        look_behind=_number(q, behind, 1),
        look_ahead=_number(q, ahead, 0),
        trunk=tuple(trunk.split(",")) if trunk else (),
        mode=mode,
        dial=q.get("dial", "") if mode == "dnis" else "",
        access=q["access"] if access_mode else "",
        device_id=None if v11 or "device" not in q else _number(q, "device"),
    )
