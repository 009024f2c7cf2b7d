"""Unpadded base64url (RFC 4648 section 5, no `=`): how secrets and call keys travel in URIs and JSON. Pure.

One place for the encoding, and for the strict reading of it: only the URL-safe alphabet, no length that cannot be
base64 (a remainder of one character), padding only where the caller accepts it (a provisioning URI may carry it).
"""

from __future__ import annotations

import base64
import re
from typing import Final

_UNPADDED: Final = re.compile(r"[A-Za-z0-9_-]+")
_PADDED: Final = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def encode(data: bytes) -> str:
    """`data` as unpadded base64url text."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode(text: str, *, padding: bool = False) -> bytes:
    """The bytes of unpadded base64url `text` (with `padding`, up to two trailing `=` are also taken). Raises
    `ValueError` for anything else, empty text included; the message never quotes the text (it may be a secret)."""
    if not isinstance(text, str) or not (_PADDED if padding else _UNPADDED).fullmatch(text):
        raise ValueError("not unpadded base64url")
    bare = text.rstrip("=")
    if len(bare) % 4 == 1:
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))  # the checks above leave nothing it refuses
