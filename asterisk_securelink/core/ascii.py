"""ASCII-only case: every case-insensitive comparison of SLK1 and the device API folds `A`-`Z` to `a`-`z` and nothing
else (SLK1.md 1.1 revision 2). Pure.

`str.lower`, `str.upper` and `str.casefold` fold by Unicode: U+017F (long s) `.upper()` is `S`, U+0131 (dotless i)
`.upper()` is `I`, U+212A (Kelvin sign) `.lower()` is `k`, U+00DF (sharp s) `.upper()` is `SS`. Applied to untrusted
input they let a value that is not the ASCII word pass as it (`\u017flk1` as `SLK1`, `securelin\u212a` as
`securelink`). These helpers change ASCII letters only, so a non-ASCII character never equals an ASCII one. Not
constant time: for secrets use `hmac.compare_digest`.
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


def ascii_casefold_equal(a: str, b: str) -> bool:
    """Whether `a` equals `b` with ASCII letters compared without case (a long s is no `s`, a dotless i no `i`)."""
    return len(a) == len(b) and ascii_lower(a) == ascii_lower(b)
