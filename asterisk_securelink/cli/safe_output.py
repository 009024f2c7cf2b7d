"""Everything the command line writes has its control characters escaped (`docs/security.md`, "L4").

Audit rows, call records and device names hold text that came from outside (a FastAGI peer's `agi_uniqueid`, a
caller's number, an administrator's label): written raw, an ESC sequence in them would reach the administrator's
terminal (move the cursor, rewrite earlier lines, set the window title). `main` wraps stdout and stderr in
`EscapingStream` for the whole command, so every line any command prints, text, JSON or CSV, passes through
`escape_controls`: C0 controls but tab and newline, DEL, C1 controls and the Unicode bidirectional overrides
become `\\xNN` / `\\uNNNN`. JSON output has them escaped already (`json.dumps`), so it is unchanged.
"""

from __future__ import annotations

import re
from typing import Any, Final, TextIO

_UNSAFE: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` with every character that could steer a terminal written as an escape (tab and newline kept)."""
    return _UNSAFE.sub(_escaped, text)


class EscapingStream:
    """A text stream that escapes control characters on the way to `inner`; everything else is `inner`'s."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(escape_controls(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, ...
        return getattr(self.inner, name)
