"""ASCII-only case for the device API (`docs/device-api.md`): the scheme `SLK1`, parameter names, activation codes,
URI schemes and hosts compare ASCII case-insensitively, and nothing else folds. Pure.

`str.lower`, `str.upper` and `str.casefold` fold by Unicode: the long s (U+017F) upper-cases to `S`, the dotless i
(U+0131) to `I`, the Kelvin sign (U+212A) lower-cases to `k`. On untrusted text they let a value that is not the
ASCII word pass as it (`SLK1` spelled with a long s; an activation code holding one). These change `A`-`Z` and
`a`-`z` only, so a non-ASCII character never equals an ASCII one. (The same helpers as `core.ascii` of the SLK1
work; one of the two is to go.)
"""

from __future__ import annotations

import string
from typing import Final

_TO_LOWER: Final = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_TO_UPPER: Final = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


def ascii_lower(text: str) -> str:
    """`text` with `A`-`Z` as `a`-`z`; every other character, non-ASCII letters included, unchanged."""
    return text.translate(_TO_LOWER)


def ascii_upper(text: str) -> str:
    """`text` with `a`-`z` as `A`-`Z`; every other character, non-ASCII letters included, unchanged."""
    return text.translate(_TO_UPPER)
