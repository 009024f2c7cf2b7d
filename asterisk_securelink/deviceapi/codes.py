"""Activation codes and the enrollment URI (`docs/device-api.md`, "Enrollment codes"). Pure but for `new_code`.

A code is 80 random bits: 16 characters of RFC 4648 base32 without padding, shown grouped `XXXX-XXXX-XXXX-XXXX`.
On input, ASCII case is ignored and dashes and spaces (U+0020) anywhere are removed; any other character (a tab, a
Unicode dash or space, a dotless i or a long s) makes the code unknown: no Unicode case folding. Only
`code_hash(code)` (SHA-256 of the normalized code) is ever stored. The enrollment URI is
`securelink://enroll?server=<https URL>&code=<code>`, values percent-encoded (RFC 3986); a raw character RFC 3986
does not allow (a space, tab, CR, LF, non-ASCII) refuses it, as in SLK1's provisioning URI, instead of being deleted.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Callable
from typing import Final
from urllib.parse import quote, urlsplit

from asterisk_securelink.core.ascii import ascii_lower, ascii_upper
from asterisk_securelink.core.query import QueryError, parse_query
from asterisk_securelink.errors import InputError

CODE_BYTES: Final = 10  # 80 bits
CODE_LEN: Final = 16  # base32 characters; 80 bits fill them exactly, so there is no padding
GROUP: Final = 4
SCHEME: Final = "securelink"
URI_HOST: Final = "enroll"

_CODE: Final = re.compile(r"[A-Z2-7]{16}")
_URI: Final = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what RFC 3986 can allow raw, and no more
_HOST: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(:[0-9]{1,5})?")


class CodeError(InputError, ValueError):
    """Not an activation code or enrollment URI. Messages never contain the code."""


def new_code(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A fresh code, normalized (16 characters, no dashes); `format_code` groups it for display."""
    return base64.b32encode(random_bytes(CODE_BYTES)).decode("ascii")


def normalize_code(text: str) -> str:
    """The 16-character form of a code as a person typed it: dashes and spaces (U+0020 only) dropped anywhere, ASCII
    letters upper-cased; any other character refuses it (no Unicode folding: the long s is not `S`). Raises
    CodeError."""
    code = ascii_upper(text.replace("-", "").replace(" ", "")) if isinstance(text, str) else ""
    if not _CODE.fullmatch(code):
        raise CodeError("an activation code is 16 characters A-Z and 2-7 (dashes and spaces ignored)")
    return code


def format_code(code: str) -> str:
    """`XXXX-XXXX-XXXX-XXXX`."""
    c = normalize_code(code)
    return "-".join(c[i : i + GROUP] for i in range(0, CODE_LEN, GROUP))


def code_hash(code: str) -> str:
    """Lowercase hex SHA-256 of the normalized code: the only form a code is stored in."""
    return hashlib.sha256(normalize_code(code).encode("ascii")).hexdigest()


def check_public_host(public_host: str) -> str:
    """`host[:port]` (a DNS name, an IPv4 address or a bracketed IPv6 address). Raises CodeError."""
    m = _HOST.fullmatch(public_host) if isinstance(public_host, str) else None
    if m is None or (m[3] is not None and not 1 <= int(m[3][1:]) <= 65535):
        raise CodeError(f"must be host[:port], e.g. pbx.example.com:8443, got {public_host!r}")
    return public_host


def server_url(public_host: str) -> str:
    """The https URL phones are given for a deployment's `public_host`."""
    return f"https://{check_public_host(public_host)}"


def enrollment_uri(server: str, code: str) -> str:
    """`securelink://enroll?server=<https URL>&code=<XXXX-XXXX-XXXX-XXXX>`, every value percent-encoded."""
    _check_server(server)
    return f"{SCHEME}://{URI_HOST}?server={quote(server, safe='')}&code={quote(format_code(code), safe='')}"


def parse_enrollment_uri(uri: str) -> tuple[str, str]:
    """(server URL, normalized code) from an enrollment URI: `server` and `code` each exactly once (other parameters
    ignored), RFC 3986 percent-decoding (a bare `+` stays `+`); scheme and host compare ASCII case-insensitively. A
    character RFC 3986 does not allow raw refuses the URI (`urlsplit` would delete a tab, CR or LF). Raises
    CodeError."""
    if not isinstance(uri, str) or not _URI.fullmatch(uri):
        raise CodeError("not an enrollment URI (a space, tab, line break or non-ASCII character in it)")
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise CodeError("not an enrollment URI") from None
    if parts.scheme != SCHEME or ascii_lower(parts.netloc) != URI_HOST or parts.path not in ("", "/") or parts.fragment:
        raise CodeError(f"an enrollment URI starts with {SCHEME}://{URI_HOST}?")
    try:
        found = parse_query(parts.query, only=("server", "code"))
    except QueryError as exc:
        if exc.problem == "repeated":
            raise CodeError(f"enrollment URI: {exc.name} appears more than once") from None
        raise CodeError("enrollment URI is not a valid query string") from None
    if found.keys() != {"server", "code"}:
        raise CodeError("enrollment URI: server and code are required")
    return _check_server(found["server"]), normalize_code(found["code"])


def _check_server(server: str) -> str:
    parts = urlsplit(server)
    if parts.scheme != "https" or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise CodeError("the enrollment server must be an https://host[:port] URL")
    check_public_host(parts.netloc)
    return server
