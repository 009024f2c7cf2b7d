"""The audit writer's local spool: while the database is down, queued events also go to an append-only file.

One JSON object per line, appended and fsynced per batch, so a crash or a long outage loses nothing: at start the
writer replays the file ahead of new events, and removes it once everything in it has been written. A crash between
the database commit and the removal replays those events again (at least once, never lost). The quarantine file
next to it keeps events the database refused as data (one bad event never blocks the rest).
The file is created 0600: audit events hold no secret, but caller numbers are personal data.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_DATETIME_TAG = "$datetime"


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {_DATETIME_TAG: value.isoformat()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {_DATETIME_TAG}:
        return datetime.fromisoformat(value[_DATETIME_TAG])
    return value


def dumps(event: dict[str, Any]) -> str:
    return json.dumps({k: _encode(v) for k, v in event.items()}, sort_keys=True, separators=(",", ":"))


def loads(line: str) -> dict[str, Any]:
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("not an audit event")
    return {k: _decode(v) for k, v in data.items()}


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.quarantine_path = path.with_name(path.stem + "-quarantine" + path.suffix)

    def append(self, events: Iterable[dict[str, Any]], *, quarantine: bool = False) -> None:
        """Append and fsync; raises OSError when the file cannot be written (the events stay in memory)."""
        target = self.quarantine_path if quarantine else self.path
        data = "".join(dumps(e) + "\n" for e in events).encode("utf-8")
        if not data:
            return
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        """The spooled events, oldest first; a torn last line (a crash mid-write) is skipped with a warning."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        events: list[dict[str, Any]] = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                events.append(loads(line))
            except ValueError:
                log.warning("audit spool %s: line %d is not a complete event; skipped", self.path, number)
        return events

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
