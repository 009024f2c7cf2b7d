"""Set a few string values in a TOML file, changing nothing else: comments, order and other values stay.

Minimal on purpose: `[table]` headers and `key = "..."` / `key = '...'` lines. Anything else (dotted keys, inline
tables, multi-line strings) is refused rather than guessed; every edit is checked by parsing the result and
comparing it with the original plus exactly the values set. Values never appear in error messages.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from asterisk_securelink.errors import InputError

_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+)\s*\]\s*(?:#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[")
_SAFE = re.compile(r"^[\x20-\x7e]*$")


class TomlEditError(InputError, ValueError):
    """The file cannot be edited safely; the message says which value to set by hand."""


def quote(value: str) -> str:
    """A TOML basic string for printable ASCII `value`."""
    if not _SAFE.match(value):
        raise TomlEditError("only printable ASCII values can be written")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_values(text: str, updates: Mapping[tuple[str, str], str]) -> str:
    """`text` with `[table] key = "value"` set for every `(table, key) -> value` of `updates`."""
    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TomlEditError(f"the file is not valid TOML ({exc})") from None
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    for (table, key), value in updates.items():
        lines = _set_one(lines, table, key, quote(value), newline)
    result = "".join(lines)
    expected = copy.deepcopy(before)
    for (table, key), value in updates.items():
        expected.setdefault(table, {})[key] = value
    if _parse(result) != expected:
        names = ", ".join(f"[{t}] {k}" for t, k in updates)
        raise TomlEditError(f"cannot edit it safely (dotted keys or inline tables?): set {names} by hand")
    return result


def _parse(text: str) -> dict[str, Any] | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None


def _set_one(lines: list[str], table: str, key: str, quoted: str, newline: str) -> list[str]:
    start = next((i for i, line in enumerate(lines) if (m := _HEADER.match(line)) and m.group(1) == table), None)
    if start is None:
        out = list(lines)
        if out and not out[-1].endswith("\n"):
            out[-1] += newline
        if out and out[-1].strip():
            out.append(newline)
        return [*out, f"[{table}]{newline}", f"{key} = {quoted}{newline}"]
    end = next((i for i in range(start + 1, len(lines)) if _ANY_HEADER.match(lines[i])), len(lines))
    key_line = re.compile(rf"^(\s*(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')\s*=\s*)(.*?)(\r?\n)?$")
    value_part = re.compile(r"^(?:\"(?:[^\"\\]|\\.)*\"|'[^']*')(\s*(?:#.*)?)$")
    for i in range(start + 1, end):
        m = key_line.match(lines[i])
        if not m:
            continue
        v = value_part.match(m.group(2))
        if not v or m.group(2).startswith(("'''", '"""')):
            raise TomlEditError(f"[{table}] {key} is not a one-line string: set it by hand")
        out = list(lines)
        out[i] = f"{m.group(1)}{quoted}{v.group(1)}{m.group(3) or ''}"
        return out
    last = start
    for i in range(start + 1, end):
        if lines[i].strip():
            last = i
    out = list(lines)
    if not out[last].endswith("\n"):
        out[last] += newline
    out.insert(last + 1, f"{key} = {quoted}{newline}")
    return out
