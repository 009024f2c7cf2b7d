"""Number formats: how a key index becomes a dialable number (SLK1.md, "Number formats").

`+` (leading, optional) and literal digits are copied; placeholders `X` (0-9), `N` (2-9), `Z` (1-9) are filled from
the rightmost to the leftmost, least significant first. A format's *literal prefix* is the digits before its first
placeholder (no '+'); the rest is its *significant part* (length K), which holds all of a key's entropy: presented
numbers are compared on it (`core.compare`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from asterisk_securelink.errors import InputError

# placeholder -> (radix, first character)
PLACEHOLDERS: Final[dict[str, tuple[int, str]]] = {"X": (10, "0"), "N": (8, "2"), "Z": (9, "1")}
MIN_SIZE: Final = 10**6  # below: refused, too guessable
WARN_SIZE: Final = 10**8  # below: allowed with a warning naming its bits
MAX_DIGITS: Final = 20  # a number longer than this is not dialable anywhere
MAX_SIZE: Final = 2**64  # above: refused, the 64-bit `v` cannot cover the space


class FormatError(InputError, ValueError):
    """A number format that cannot be used."""


@dataclass(frozen=True)
class NumberFormat:
    pattern: str
    size: int = field(init=False)
    literal_prefix: str = field(init=False)  # digits before the first placeholder, no '+': '1' for +1NXXNXXXXXX
    significant_length: int = field(init=False)  # K: from the first placeholder to the end
    _slots: tuple[tuple[int, int, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        p = self.pattern
        body = p[1:] if p.startswith("+") else p
        if not body:
            raise FormatError("number format is empty")
        bad = sorted({c for c in body if (c not in PLACEHOLDERS and not c.isdigit()) or not c.isascii()})
        if bad:
            raise FormatError(
                f"number format {p!r} has invalid characters {''.join(bad)!r}: use digits, X, N, Z and a leading +"
            )
        if len(body) > MAX_DIGITS:
            raise FormatError(f"number format {p!r} has {len(body)} digits; at most {MAX_DIGITS}")
        offset = 1 if p.startswith("+") else 0
        slots = tuple((i + offset, *PLACEHOLDERS[c]) for i, c in reversed(list(enumerate(body))) if c in PLACEHOLDERS)
        size = math.prod(radix for _, radix, _ in slots)
        if size < MIN_SIZE:
            raise FormatError(
                f"number format {p!r} allows only {size} keys ({self._bits(size):.1f} bits); "
                f"at least {MIN_SIZE} are required"
            )
        if size > MAX_SIZE:
            raise FormatError(
                f"number format {p!r} allows {size} keys ({self._bits(size):.1f} bits), more than 2^64: "
                "the 64-bit key value cannot cover it"
            )
        first = min(i for i, c in enumerate(body) if c in PLACEHOLDERS)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "literal_prefix", body[:first])
        object.__setattr__(self, "significant_length", len(body) - first)
        object.__setattr__(self, "_slots", slots)

    @staticmethod
    def _bits(size: int) -> float:
        return math.log2(size) if size > 0 else 0.0

    @property
    def bits(self) -> float:
        return self._bits(self.size)

    @property
    def warning(self) -> str | None:
        """A warning for formats that are allowed but weak (fewer than 10^8 keys)."""
        if self.size < WARN_SIZE:
            return (
                f"number format {self.pattern!r} allows only {self.size} keys ({self.bits:.1f} bits); "
                f"{WARN_SIZE} or more is recommended"
            )
        return None

    def render(self, index: int) -> str:
        if not 0 <= index < self.size:
            raise FormatError("index out of range for this format")
        out = list(self.pattern)
        for pos, radix, first in self._slots:
            index, d = divmod(index, radix)
            out[pos] = chr(ord(first) + d)
        return "".join(out)

    def significant(self, rendered_key: str) -> str:
        """The significant part of a key this format rendered: its last K digits (`+1NXXNXXXXXX`: 10)."""
        return rendered_key[-self.significant_length :]

    def matches(self, digits: str) -> bool:
        """Whether a normalized digit string (no '+') could have been rendered by this format."""
        return _fits(digits, self.pattern.lstrip("+"))

    def significant_fits(self, digits: str) -> bool:
        """Whether `digits` could be the significant part (the last K positions) of a key of this format."""
        return _fits(digits, self.pattern.lstrip("+")[-self.significant_length :])


def _fits(digits: str, pattern: str) -> bool:
    """Each digit within its placeholder's range, each literal equal; the lengths equal."""
    if len(digits) != len(pattern):
        return False
    for c, p in zip(digits, pattern, strict=True):
        if p in PLACEHOLDERS:
            radix, first = PLACEHOLDERS[p]
            if not 0 <= ord(c) - ord(first) < radix:
                return False
        elif c != p:
            return False
    return True
