"""The query string of a `securelink://` URI (provisioning, enrollment): `name=value` pairs joined by `&`, every name
and value percent-decoded per RFC 3986 (a bare `+` stays `+`, unlike form encoding). Pure.

Read strictly, because these URIs carry secrets and are typed or scanned: a part without `=`, a `%` not followed by
two hex digits, or an escape that is not UTF-8 refuses the whole string, and so does a parameter given twice. Each
URI's module turns `QueryError` into its own message; nothing here quotes the string (it may hold a secret).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final, Literal
from urllib.parse import unquote

from asterisk_securelink.errors import InputError

_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")

Problem = Literal["syntax", "encoding", "repeated"]


class QueryError(InputError, ValueError):
    """Why a query string was refused: `problem` is `syntax`, `encoding` (an escape that is not UTF-8) or `repeated`
    (then `name` is the parameter given twice)."""

    def __init__(self, problem: Problem, name: str = "") -> None:
        super().__init__(f"query string: {problem}" + (f" ({name!r})" if name else ""))
        self.problem: Problem = problem
        self.name = name


def parse_query(query: str, *, only: Collection[str] | None = None, skip_empty: bool = False) -> dict[str, str]:
    """Name -> value. With `only`, other names are dropped (and may repeat); a name of `only`, or without it any
    name, given twice raises `QueryError("repeated", name)`. An empty part (`a=1&&b=2`, or an empty string) is a
    syntax error unless `skip_empty`. Problems are reported in the order of the string: the first one wins."""
    found: dict[str, str] = {}
    for part in query.split("&"):
        if not part and skip_empty:
            continue
        raw_name, sep, raw_value = part.partition("=")
        if not sep or _BAD_ESCAPE.search(part):
            raise QueryError("syntax")
        try:
            name, value = unquote(raw_name, errors="strict"), unquote(raw_value, errors="strict")
        except UnicodeDecodeError:
            raise QueryError("encoding") from None
        if only is not None and name not in only:
            continue
        if name in found:
            raise QueryError("repeated", name)
        found[name] = value
    return found
