"""A routing identity's values (CALLING.md, "Routing identity"): an Asterisk context name and a caller ID written
as Asterisk writes `CALLERID(all)` (`"Alice" <1001>`, `Alice <1001>`, `<1001>` or `1001`). Pure.

Both are handed to Asterisk (`SECURELINK_CONTEXT`, `CALLERID(all)`), so they are checked strictly: a context is
1-79 characters of letters, digits, `_ - .`; a caller ID's number is 1-20 characters of digits, `+ * #`, its name
printable ASCII without quotes, angle brackets or control characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

CONTEXT: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,78}")
_NUMBER: Final = re.compile(r"[+]?[0-9*#]{1,20}")
_FULL: Final = re.compile(r'\s*(?:"([^"<>]*)"|([^"<>]*?))\s*<([^<>]*)>\s*')


@dataclass(frozen=True)
class CallerId:
    name: str
    number: str

    def __str__(self) -> str:
        """As `CALLERID(all)` takes it."""
        return f'"{self.name}" <{self.number}>' if self.name else f"<{self.number}>"


def check_context(text: str) -> str:
    """`text` when it is a usable context name; else ValueError."""
    if not CONTEXT.fullmatch(text):
        raise ValueError(f"context {text[:80]!r}: 1-79 characters of A-Z a-z 0-9 _ - . (an extensions.conf context)")
    return text


def parse_callerid(text: str) -> CallerId:
    """`"Alice" <1001>`, `Alice <1001>`, `<1001>` or `1001`; ValueError saying what is accepted."""
    m = _FULL.fullmatch(text)
    name, number = ((m.group(1) or m.group(2) or "").strip(), m.group(3).strip()) if m else ("", text.strip())
    if not _NUMBER.fullmatch(number):
        raise ValueError(f'caller ID {text[:80]!r}: write it as "Name" <number> or a number (1-20 digits, + * #)')
    if len(name) > 80 or not (name.isascii() and name.isprintable()):
        raise ValueError(f"caller ID {text[:80]!r}: the name is at most 80 printable ASCII characters")
    return CallerId(name, number)
