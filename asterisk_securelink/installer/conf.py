"""Asterisk configuration text, read as much as the installer needs: comments, sections, values, includes."""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath

_SECTION = re.compile(r"^\[([^\]]+)\](?:\(([^)]*)\))?")
_INCLUDE = re.compile(r'^#(try)?include\s+(?:"([^"]+)"|<([^>]+)>|(\S+))')
_TRUE = frozenset({"yes", "true", "y", "t", "1", "on"})


def logical_lines(text: str) -> Iterator[str]:
    """Each line without its comments (`;` to the end of the line, `;-- ... --;` blocks), stripped.

    As Asterisk's config.c reads them: `\\;` is not a comment, and a block comment may span lines.
    """
    in_block = False
    for raw in text.splitlines():
        out: list[str] = []
        i = 0
        while i < len(raw):
            if in_block:
                end = raw.find("--;", i)
                if end < 0:
                    i = len(raw)
                else:
                    in_block, i = False, end + 3
                continue
            ch = raw[i]
            if ch == ";" and i > 0 and raw[i - 1] == "\\":
                out[-1] = ";"  # an escaped semicolon is text
                i += 1
            elif ch == ";" and raw.startswith(";--", i) and not raw.startswith(";---", i):
                in_block, i = True, i + 3
            elif ch == ";":
                break
            else:
                out.append(ch)
                i += 1
        yield "".join(out).strip()


def sections(text: str) -> list[str]:
    """The category names, in order (templates and `(+)` additions included)."""
    found: list[str] = []
    for line in logical_lines(text):
        m = _SECTION.match(line)
        if m:
            found.append(m.group(1).strip())
    return found


def values(text: str, section: str) -> list[tuple[str, str]]:
    """`(key, value)` of every `key = value` / `key => value` line in the categories named `section`, in order."""
    out: list[tuple[str, str]] = []
    current: str | None = None
    for line in logical_lines(text):
        m = _SECTION.match(line)
        if m:
            current = m.group(1).strip()
            continue
        if current != section or "=" not in line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        out.append((key.strip().lower(), value.lstrip(">").strip()))
    return out


def last_value(text: str, section: str, key: str) -> str | None:
    """The value Asterisk ends up with for `key` in `section` (the last one wins), or None."""
    found = [v for k, v in values(text, section) if k == key]
    return found[-1] if found else None


def is_true(value: str | None) -> bool:
    """Asterisk's ast_true()."""
    return value is not None and value.strip().lower() in _TRUE


def includes(text: str) -> list[str]:
    """The targets of the `#include` / `#tryinclude` lines, in order, as written."""
    out: list[str] = []
    for line in logical_lines(text):
        m = _INCLUDE.match(line)
        if m:
            out.append(m.group(2) or m.group(3) or m.group(4))
    return out


def resolve_include(target: str, root: str, files: Mapping[str, bytes]) -> list[str]:
    """The snapshot paths (relative to the config dir) an include target names; globs allowed.

    Relative targets are relative to Asterisk's config directory; an absolute one counts only when it lies in
    `root` (the config directory as an absolute POSIX path).
    """
    if target.startswith("/"):
        rel = posixpath.relpath(target, root)
        if rel.startswith(".."):
            return []
        target = rel
    target = str(PurePosixPath(target))
    if any(c in target for c in "*?["):
        return sorted(p for p in files if fnmatch.fnmatchcase(p, target))
    return [target] if target in files else []


def sections_with_includes(name: str, root: str, files: Mapping[str, bytes], skip: frozenset[str]) -> list[str]:
    """The category names of `name` and of every file it includes (recursively), except the paths in `skip`."""
    seen: set[str] = set()
    found: list[str] = []

    def visit(path: str) -> None:
        if path in seen or path in skip or path not in files:
            return
        seen.add(path)
        text = decode(files[path])
        found.extend(sections(text))
        for target in includes(text):
            for included in resolve_include(target, root, files):
                visit(included)

    visit(name)
    return found


def included_files(name: str, root: str, files: Mapping[str, bytes], skip: frozenset[str]) -> list[str]:
    """`name` and every file it includes (recursively), in reading order, except the paths in `skip`."""
    seen: list[str] = []

    def visit(path: str) -> None:
        if path in seen or path in skip or path not in files:
            return
        seen.append(path)
        for target in includes(decode(files[path])):
            for included in resolve_include(target, root, files):
                visit(included)

    visit(name)
    return seen


def lines_naming(pattern: re.Pattern[str], path: str, files: Mapping[str, bytes]) -> list[tuple[int, str]]:
    """`(line number, line without comments)` of each line of `path` in which `pattern` occurs."""
    text = decode(files[path])
    return [(n, line) for n, line in enumerate(logical_lines(text), 1) if pattern.search(line)]


def decode(data: bytes) -> str:
    """Config bytes as text; bytes that are not UTF-8 survive a round trip (surrogateescape)."""
    return data.decode("utf-8", "surrogateescape")


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
