"""Normalization of presented caller / dialed numbers into the digit strings keys are compared on.

Pure. A presented number is whatever the network delivered (CALLERID(num), the dialed extension, an AGI variable):
it may be empty, withheld, carry punctuation, or be hostile (control characters, SIP escapes, SQL, unicode).
`classify` never raises. The rules are SLK1.md 1.1, "Comparing a presented number with a key", rule 1; what is compared
after it is `core.compare`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

MIN_DIGITS: Final = 3
MAX_DIGITS: Final = 20
MAX_RAW_LENGTH: Final = 256  # anything longer is malformed without further work (far above any real number)
ANONYMOUS_VALUES: Final = frozenset({"", "anonymous", "unknown", "restricted", "private"})  # exactly these, any case
_TRIM: Final = " \t\r\n\v\f"  # ASCII whitespace only
_SEPARATORS: Final = re.compile(r"[ \t\-.()/]")  # visual separators people and carriers put in numbers
_DIGITS: Final = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() would accept other scripts' digits


class Kind(StrEnum):
    DIGITS = "digits"
    ANONYMOUS = "anonymous"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Presented:
    kind: Kind
    digits: str = ""  # set only for Kind.DIGITS


def classify(raw: object) -> Presented:
    """Map a raw presented number to digits, `anonymous` or `malformed`.

    An empty value or one of `anonymous`, `unknown`, `restricted`, `private` (any case) is anonymous. Otherwise the
    value is trimmed, the separators space, tab, `-`, `.`, `(`, `)`, `/` and then one leading `+` are removed; the
    rest must be 3..20 ASCII digits, else it is malformed.
    """
    if raw is None:
        return Presented(Kind.ANONYMOUS)
    if not isinstance(raw, str):
        return Presented(Kind.MALFORMED)
    if len(raw) > MAX_RAW_LENGTH:
        return Presented(Kind.MALFORMED)
    text = raw.strip(_TRIM)
    if text.isascii() and text.lower() in ANONYMOUS_VALUES:
        return Presented(Kind.ANONYMOUS)
    text = _SEPARATORS.sub("", text)
    if text.startswith("+"):
        text = text[1:]
    if _DIGITS.fullmatch(text) and MIN_DIGITS <= len(text) <= MAX_DIGITS:
        return Presented(Kind.DIGITS, text)
    return Presented(Kind.MALFORMED)


def normalize(raw: object) -> str | None:
    """The digit string of a number, or None when it is not a usable number."""
    p = classify(raw)
    return p.digits if p.kind is Kind.DIGITS else None


def key_digits(rendered: str) -> str:
    """A rendered key (which may start with '+') in the form presented numbers are compared in."""
    return rendered[1:] if rendered.startswith("+") else rendered


def safe_display(raw: object, limit: int = 32) -> str:
    """A printable, bounded form of untrusted input, for error messages and logs (never a secret)."""
    text = raw if isinstance(raw, str) else repr(raw)
    shown = "".join(c if c.isascii() and c.isprintable() else "?" for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")
