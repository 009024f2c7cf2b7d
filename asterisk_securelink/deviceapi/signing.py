"""Request authentication of the device API (`docs/device-api.md`, "Request authentication"). Pure.

```
api_key   = HMAC-SHA256(device_secret, b"SLK1-api" || 0x00)
body_hash = lowercase hex(SHA-256(raw body))
string    = METHOD "\\n" HOST "\\n" TARGET "\\n" TS "\\n" NONCE "\\n" body_hash
sig       = unpadded base64url(HMAC-SHA256(api_key, string))
Authorization: SLK1 key_id="<key_id>", ts="<TS>", nonce="<NONCE>", sig="<sig>"
```

Checks run in the spec's order: parse (`parse_authorization`) -> signature (`verify`, constant time, the same HMAC
work for an unknown key_id) -> clock window (`verify`) -> nonce (the caller's atomic insert-if-absent, only after
`verify` passed, kept until the time `verify` returns). Every failure is `Unauthorized`; its message says which check
failed, for the server's log only (the client always gets the same 401).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Final, NamedTuple

from asterisk_securelink.core import b64
from asterisk_securelink.core.ascii import ascii_lower, ascii_upper
from asterisk_securelink.core.slk1 import SLK1Error, check_key_id
from asterisk_securelink.errors import ProtocolError, VerificationError

SCHEME: Final = "SLK1"
API_LABEL: Final = b"SLK1-api\x00"
CLOCK_WINDOW: Final = 60  # |now - TS| <= 60 s
NONCE_KEEP: Final = 61  # a nonce is kept until TS + 61 s: past the clock window, a replay fails on TS alone
MAX_HEADER: Final = 512  # far above the longest valid header (about 230 characters)
PARAMETERS: Final = frozenset({"key_id", "ts", "nonce", "sig"})

_TS: Final = re.compile(r"[0-9]{10}")
_NONCE: Final = re.compile(r"[A-Za-z0-9_-]{16,64}")
_SIG: Final = re.compile(r"[A-Za-z0-9_-]{43}")  # unpadded base64url of 32 bytes
_SCHEME: Final = re.compile(r"([^ ]*) +")  # the scheme, then 1*SP (RFC 9110: spaces only, no tab)
_PARAM: Final = re.compile(r'([A-Za-z_]+)[ \t]*=[ \t]*"([^"\\]*)"')  # double-quoted, no escapes
_OWS: Final = re.compile(r"[ \t]*")
_COMMA: Final = re.compile(r"[ \t]*,[ \t]*")
_TARGET: Final = re.compile(r"/[\x21-\x7e]*")  # origin-form, visible ASCII
_DUMMY_SECRET: Final = bytes(32)  # stands in for an unknown key_id's secret, so it costs the same HMAC work


class Unauthorized(VerificationError):
    """Authentication failed. The message names the failed check (for logs); it never holds key material."""


class BadTarget(ProtocolError, ValueError):
    """A request-target the spec refuses (400 `bad_request`)."""


class Authorization(NamedTuple):
    key_id: str
    ts: str  # exactly 10 digits, as sent (it is signed as sent)
    nonce: str
    sig: str


def api_key(device_secret: bytes) -> bytes:
    """`HMAC-SHA256(device_secret, b"SLK1-api" || 0x00)`: the key that signs a device's requests."""
    return hmac.new(device_secret, API_LABEL, hashlib.sha256).digest()


def body_hash(body: bytes) -> str:
    """Lowercase hex SHA-256 of the raw body bytes as received (`b""` when there is no body)."""
    return hashlib.sha256(body).hexdigest()


def canonical_string(method: str, host: str, target: str, ts: str, nonce: str, body_hash: str) -> bytes:
    """`METHOD \\n HOST \\n TARGET \\n TS \\n NONCE \\n body_hash`, as UTF-8 (all of it is ASCII in valid requests)."""
    return "\n".join((method, host, target, ts, nonce, body_hash)).encode("utf-8")


def sign(key: bytes, string: bytes) -> str:
    """Unpadded base64url of `HMAC-SHA256(api_key, string)`."""
    mac = hmac.new(key, string, hashlib.sha256).digest()
    return b64.encode(mac)


def authorization(
    key_id: str, key: bytes, *, method: str, host: str, target: str, body: bytes, ts: int | str, nonce: str
) -> str:
    """The `Authorization` header value a device sends (the client side of `verify`)."""
    ts_s = str(ts)
    sig = sign(key, canonical_string(method, host, target, ts_s, nonce, body_hash(body)))
    return f'{SCHEME} key_id="{key_id}", ts="{ts_s}", nonce="{nonce}", sig="{sig}"'


def parse_authorization(value: str) -> Authorization:
    """`SLK1 key_id="..", ts="..", nonce="..", sig=".."`: exactly these four parameters (any order), each once,
    double-quoted without escapes, each value well-formed. As in RFC 9110: the scheme is followed by one or more
    spaces (not a tab); the scheme and the parameter names compare ASCII case-insensitively (a long s is not `S`);
    spaces or tabs may stand around `=` and `,`; an empty list element (`, ,`, a trailing `,`) is invalid. The values
    are case-sensitive. Raises Unauthorized."""
    if len(value) > MAX_HEADER:
        raise Unauthorized("authorization header too long")
    start = _SCHEME.match(value)
    if start is None or ascii_upper(start[1]) != SCHEME:
        raise Unauthorized("not an SLK1 authorization")
    params: dict[str, str] = {}
    pos = start.end()
    while True:
        m = _PARAM.match(value, pos)
        if m is None:
            raise Unauthorized("malformed authorization parameters")
        name = ascii_lower(m[1])
        if name not in PARAMETERS or name in params:
            raise Unauthorized("unknown or repeated authorization parameter")
        params[name] = m[2]
        pos = m.end()
        if _OWS.fullmatch(value, pos):
            break
        sep = _COMMA.match(value, pos)
        if sep is None:
            raise Unauthorized("malformed authorization parameters")
        pos = sep.end()
    if params.keys() != PARAMETERS:
        raise Unauthorized("missing authorization parameter")
    auth = Authorization(params["key_id"], params["ts"], params["nonce"], params["sig"])
    try:
        check_key_id(auth.key_id)
    except SLK1Error:
        raise Unauthorized("malformed key_id") from None
    if not _TS.fullmatch(auth.ts) or not _NONCE.fullmatch(auth.nonce) or not _SIG.fullmatch(auth.sig):
        raise Unauthorized("malformed ts, nonce or sig")
    return auth


def check_target(target: str) -> str:
    """The request-target as sent: origin-form (`/path?query`), visible ASCII, and none of `%`, `//`, `..` (no
    decoding, no normalization: what is signed is what is routed). Raises BadTarget."""
    if not _TARGET.fullmatch(target) or "%" in target or "//" in target or ".." in target:
        raise BadTarget("request-target must be a plain path without %, // or ..")
    return target


def verify(
    auth: Authorization, secret: bytes | None, *, method: str, host: str, target: str, body: bytes, now: int
) -> int:
    """Check the signature (constant time; `secret` None = unknown key_id, which costs the same HMAC work and
    fails), then `|now - TS| <= 60` (`now` in unix seconds). Returns the unix time until which the caller must keep
    the nonce (TS + 61), to be inserted if absent as the last check. Raises Unauthorized."""
    key = api_key(secret if secret is not None else _DUMMY_SECRET)
    expected = sign(key, canonical_string(method, host, target, auth.ts, auth.nonce, body_hash(body)))
    if not hmac.compare_digest(expected, auth.sig) or secret is None:
        raise Unauthorized("bad signature or unknown key_id")
    ts = int(auth.ts)
    if abs(now - ts) > CLOCK_WINDOW:
        raise Unauthorized("timestamp outside the clock window")
    return ts + NONCE_KEEP
