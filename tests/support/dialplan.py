"""Reading the shipped dialplan file in tests: its contexts and their priorities' applications."""

from __future__ import annotations

import re
from pathlib import Path

DIALPLAN = Path(__file__).resolve().parents[2] / "dialplan" / "securelink.conf"


def contexts() -> dict[str, list[str]]:
    """The shipped file's contexts -> their lines, comments and blank lines dropped."""
    code = "\n".join(line.split(";", 1)[0].rstrip() for line in DIALPLAN.read_text().splitlines())
    found = re.finditer(r"^\[([\w-]+)\]\n(.*?)(?=^\[|\Z)", code, re.M | re.S)
    return {m.group(1): [ln for ln in m.group(2).splitlines() if ln.strip()] for m in found}


def app_of(line: str) -> str:
    """`exten => X,1,App(...)` or ` same => n(label),App(...)` -> `App(...)`."""
    m = re.match(r"(?:exten => [^,]+,\d+|\s*same => n(?:\(\w+\))?),(.*)$", line)
    if m is None:
        raise ValueError(f"not a priority: {line!r}")
    return m.group(1)


def first_priorities(lines: list[str]) -> dict[str, int]:
    """Extension -> the index of its priority 1 among `lines`."""
    found = {}
    for i, line in enumerate(lines):
        m = re.match(r"exten => ([^,]+),1,", line)
        if m:
            found[m.group(1)] = i
    return found
