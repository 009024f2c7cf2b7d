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

from asterisk_securelink.core.ascii import ascii_lower

MIN_DIGITS: Final = 3
MAX_DIGITS: Final = 20
MAX_RAW_LENGTH: Final = 256  # anything longer is malformed without further work (far above any real number)
ANONYMOUS_VALUES: Final = frozenset({"", "anonymous", "unknown", "restricted", "private"})  # these, any ASCII case
_TRIM: Final = " \t"  # revision 2: spaces and tabs only (a CR, LF, VT or FF at either end is malformed)
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

    A value longer than 256 characters is malformed at once. Otherwise ASCII spaces and tabs are trimmed at both ends
    (nothing else: `"\\n622"` is malformed); then an empty value or one of `anonymous`, `unknown`, `restricted`,
    `private` (ASCII case-insensitive: the Kelvin sign is no `k`) is anonymous. Otherwise the separators space, tab,
    `-`, `.`, `(`, `)`, `/` and then one leading `+` are removed; the rest must be 3..20 ASCII digits, else it is
    malformed.
    """
    if raw is None:
        return Presented(Kind.ANONYMOUS)
    if not isinstance(raw, str):
        return Presented(Kind.MALFORMED)
    if len(raw) > MAX_RAW_LENGTH:
        return Presented(Kind.MALFORMED)
    text = raw.strip(_TRIM)
    if ascii_lower(text) in ANONYMOUS_VALUES:
        return Presented(Kind.ANONYMOUS)
    text = remove_separators(text)
    if text.startswith("+"):
        text = text[1:]
    if is_ascii_digits(text) and MIN_DIGITS <= len(text) <= MAX_DIGITS:
        return Presented(Kind.DIGITS, text)
    return Presented(Kind.MALFORMED)


def remove_separators(text: str) -> str:
    """`text` without the separators of rule 1: space, tab, `-`, `.`, `(`, `)`, `/`."""
    return _SEPARATORS.sub("", text)


def is_ascii_digits(text: str) -> bool:
    """One or more of `0`-`9` and nothing else (not other scripts' digits, which `str.isdigit` accepts)."""
    return _DIGITS.fullmatch(text) is not None


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
