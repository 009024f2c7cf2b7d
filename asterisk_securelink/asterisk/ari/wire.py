"""JSON as ARI's frames carry it: orjson first (issue 24: parsing every event and encoding every WebSocket request
was a tenth of the event loop's busy time), the standard library for what orjson refuses and the standard library
takes (integers beyond 64 bits, lone surrogates, NaN): every frame reads as it did, and every request carries the same
JSON values (non-ASCII text now as UTF-8 rather than escaped).
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: str | bytes) -> Any:
    """A JSON text as Python values; `ValueError` when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(value: Any) -> str:
    """Compact JSON (no spaces), UTF-8 kept as is; `TypeError` for what JSON cannot hold."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
