"""Settings as data: a config field carries its help, its range and its place in the skeleton. Pure.

`setting(...)` is `dataclasses.field` with metadata; `range_problems` checks every field that has a range, so a
section's bounds are written once, next to the field, and the error, the README table and the config skeleton
(`config.reference`) all read them from there. Lives in `core` because the device API's section
(`deviceapi.settings`) uses it too, and the config loader imports that.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

Bound = int | float
Range = tuple[Bound, Bound | None]  # (low, high), both inclusive; high None: no upper bound

HELP: Final = "help"  # the README table's "meaning"; `{range}` in it is replaced by the range ("5..60", ">= 1")
NOTE: Final = "note"  # the comment after the key in the config skeleton
RANGE: Final = "range"
UNIT: Final = "unit"  # said after a range in an error ("seconds")
WHAT: Final = "what"  # said before a range in an error ("a TCP port")
SHOWN: Final = "shown"  # the README's default when it is not the value itself ("the listen address")
SKELETON: Final = "skeleton"  # written into the config skeleton (`securelink init`)
EXAMPLE: Final = "example"  # the value shown in a commented-out skeleton section instead of the default
INIT: Final = "init"  # the value the config skeleton writes instead of the default (a safer choice for new installs)


def setting(
    default: Any,
    help: str,
    *,
    note: str = "",
    range: Range | None = None,
    unit: str = "",
    what: str = "",
    shown: str = "",
    skeleton: bool = False,
    example: Any = None,
    init: Any = None,
) -> Any:
    """A dataclass field with its documentation and bounds (`dataclasses.field(default=..., metadata=...)`)."""
    meta = {HELP: help, NOTE: note, RANGE: range, UNIT: unit, WHAT: what, SHOWN: shown, SKELETON: skeleton}
    if example is not None:
        meta[EXAMPLE] = example
    if init is not None:
        meta[INIT] = init
    return dataclasses.field(default=default, metadata=meta)


def describe_range(bounds: Range) -> str:
    """`5..60`, or `>= 1` without an upper bound."""
    low, high = bounds
    return f">= {low}" if high is None else f"{low}..{high}"


def fill_range(text: str, bounds: Range | None) -> str:
    """`text` with `{range}` replaced by `describe_range(bounds)`."""
    return text.replace("{range}", describe_range(bounds)) if bounds else text


def help_text(f: dataclasses.Field[Any]) -> str:
    """The field's help with `{range}` filled in."""
    return fill_range(str(f.metadata.get(HELP, "")), f.metadata.get(RANGE))


def range_problems(section: str, obj: Any) -> list[str]:
    """`section.key: must be ...` for every field of the dataclass `obj` whose value is outside its range (or is not a
    number at all: a section built in code is not coerced by the loader)."""
    out: list[str] = []
    for f in dataclasses.fields(obj):
        bounds = f.metadata.get(RANGE)
        if bounds is None:
            continue
        value = getattr(obj, f.name)
        low, high = bounds
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and low <= value and (high is None or value <= high):
            continue
        what = f.metadata.get(WHAT, "")
        unit = f.metadata.get(UNIT, "")
        wanted = " ".join(part for part in (what, describe_range(bounds), unit) if part)
        out.append(f"{section}.{f.name}: must be {wanted}, got {value!r}")
    return out
