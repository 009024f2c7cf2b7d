"""Asterisk extension patterns, as `[routing] allowed` / `denied` are written (CALLING.md, "The guard"). Pure.

A pattern is a literal extension (`2001`, matched exactly) or `_` followed by pattern characters, as in
`extensions.conf`:

* `X` any digit 0-9, `Z` 1-9, `N` 2-9; `[...]` one character of a set, with ranges (`[1-5]`, `[0-37-9]`);
* `.` one or more characters (only at the end), `!` zero or more characters (only at the end);
* any other character stands for itself (`-` between characters is ignored, as Asterisk ignores it).

Destinations are digits only (`[0-9]{1,20}`), so letters other than X, Z and N are refused when a pattern is
parsed: a pattern that cannot match what it looks like it matches is an administrator's mistake to report, not
to guess at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from asterisk_securelink.core.ascii import ascii_upper
from asterisk_securelink.errors import InputError

_CLASSES = {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]"}


class PatternError(InputError, ValueError):
    """A pattern that is not an Asterisk extension pattern of digits."""


@dataclass(frozen=True)
class Pattern:
    text: str
    regex: re.Pattern[str]

    def matches(self, number: str) -> bool:
        return self.regex.fullmatch(number) is not None


@lru_cache(maxsize=256)
def parse(text: str) -> Pattern:
    """`text` as a `Pattern`, or PatternError saying what is wrong."""
    if not text:
        raise PatternError("an empty pattern")
    if not text.startswith("_"):
        if not (text.isascii() and text.isdigit()):
            raise PatternError(f"{text!r}: a literal extension is digits; a pattern starts with _")
        return Pattern(text, re.compile(re.escape(text)))
    body, out, i = text[1:], [], 0
    if not body:
        raise PatternError(f"{text!r}: nothing after _")
    while i < len(body):
        ch = ascii_upper(body[i])
        if ch in _CLASSES:
            out.append(_CLASSES[ch])
        elif ch.isascii() and ch.isdigit():
            out.append(ch)
        elif ch == "-":
            pass
        elif ch == "[":
            end = body.find("]", i + 1)
            if end < 0:
                raise PatternError(f"{text!r}: a [ without its ]")
            out.append(_char_set(text, body[i + 1 : end]))
            i = end
        elif ch in ".!":
            if i != len(body) - 1:
                raise PatternError(f"{text!r}: {ch} may only end a pattern")
            out.append("[0-9]+" if ch == "." else "[0-9]*")
        else:
            raise PatternError(f"{text!r}: {body[i]!r} is not a pattern character for digits (X Z N [..] . !)")
        i += 1
    return Pattern(text, re.compile("".join(out)))


def _char_set(text: str, inside: str) -> str:
    if not inside:
        raise PatternError(f"{text!r}: an empty []")
    chars: set[str] = set()
    i = 0
    while i < len(inside):
        a = inside[i]
        if not (a.isascii() and a.isdigit()):
            raise PatternError(f"{text!r}: [{inside}] holds {a!r}; a set of digits is like [1-5] or [0379]")
        if i + 2 < len(inside) and inside[i + 1] == "-":
            b = inside[i + 2]
            if not (b.isascii() and b.isdigit()) or b < a:
                raise PatternError(f"{text!r}: [{inside}] has a bad range {a}-{b}")
            chars.update(str(d) for d in range(int(a), int(b) + 1))
            i += 3
        else:
            chars.add(a)
            i += 1
    return "[" + "".join(sorted(chars)) + "]"


def matches(pattern: str, number: str) -> bool:
    """Does `number` match the Asterisk pattern `pattern`? Raises PatternError for a bad pattern."""
    return parse(pattern).matches(number)


def any_matches(patterns: tuple[str, ...], number: str) -> str | None:
    """The first of `patterns` that `number` matches, or None."""
    for p in patterns:
        if matches(p, number):
            return p
    return None
