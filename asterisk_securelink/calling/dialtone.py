"""The digits of the app's own dial tone (CALLING.md, "Dial tone"). Pure: the caller feeds digits and the clock.

Asterisk's DISA application is not used: it jumps into a context with no filter. Here the number is collected
first and the guard decides on it: digits end with `#` or 4 s of silence (10 s for the first digit), `*` clears
what was typed, and a number longer than 20 digits is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FIRST_DIGIT_MS = 10_000
BETWEEN_MS = 4_000
MAX_DIGITS = 20


@dataclass
class DialTone:
    started_ms: int
    digits: str = ""
    last_ms: int | None = None
    done: bool = False
    too_long: bool = field(default=False)

    def deadline_ms(self) -> int:
        return self.started_ms + FIRST_DIGIT_MS if self.last_ms is None else self.last_ms + BETWEEN_MS

    def digit(self, d: str, now_ms: int) -> None:
        if self.done:
            return
        self.last_ms = now_ms
        if d == "#":
            self.done = True
        elif d == "*":
            self.digits = ""
        elif d.isascii() and d.isdigit():
            self.digits += d
            if len(self.digits) > MAX_DIGITS:
                self.too_long = self.done = True
        # A-D: ignored (a person cannot dial them on a phone keypad)

    def expire(self, now_ms: int) -> None:
        if now_ms >= self.deadline_ms():
            self.done = True

    @property
    def number(self) -> str | None:
        """The dialled number once done; None when nothing was dialled."""
        return self.digits or None
