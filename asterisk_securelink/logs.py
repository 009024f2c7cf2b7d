"""Logging setup for the long-running commands: plain text or one JSON object per line.

Log lines quote values from the network (caller numbers, channel and script names from AGI and ARI). In plain text
every control character of the message is escaped (`\\r`, `\\n`, `\\x1b`, ...): a caller number holding CR/LF cannot
start a forged log line, nor an ESC sequence drive the terminal that shows the log. A traceback keeps its lines, each
indented, so none of them looks like a record. The JSON formatter escapes through `json.dumps(ensure_ascii=True)`.

The services log off their event loop (`configure(..., off_thread=True)`): the loop only makes the record and fills
in its message; formatting, escaping and the write to stderr happen on a listener thread, so a slow or blocked
stderr (a pipe, the journal) never stalls a call, and a call's log line costs the loop a fraction of what it did
(issue 24: the admitted call's INFO line was 7.5 % of the loop's busy time).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# C0 controls, DEL, C1 controls (U+0085 NEL, U+009B CSI...), the Unicode line/paragraph separators and the
# bidirectional overrides and isolates (which reorder what a reader sees)
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` with every control character written as an escape (`\\r`, `\\n`, `\\t`, `\\x1b`, `\\u2028`)."""
    return _CONTROLS.sub(_escape, text)


class EscapingFormatter(logging.Formatter):
    """The plain-text formatter: one line per record, whatever the logged values hold."""

    def format(self, record: logging.LogRecord) -> str:
        cached, record.exc_text = record.exc_text, None  # another handler's traceback text is not escaped
        try:
            return super().format(record)
        finally:
            record.exc_text = cached

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    """A traceback: its own lines kept, each escaped and indented."""
    return "\n".join("  " + escape_controls(line) for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__  # the type only: tracebacks may quote secrets
        return json.dumps(entry, ensure_ascii=True)


class _LoopSideHandler(logging.handlers.QueueHandler):
    """Puts a record on the listener's queue with only its message filled in (the arguments may change after the
    call): formatting is the listener's."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg, record.args = record.getMessage(), None
        return record


def configure(level: str = "INFO", as_json: bool = False, *, off_thread: bool = False) -> Callable[[], None]:
    """One handler on the root logger, writing to stderr; with `off_thread`, through a queue to a listener thread.
    Returns what flushes and ends that thread (nothing to do without it); call it before the process exits."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else EscapingFormatter(PLAIN_FORMAT))
    root = logging.getLogger()
    stop: Callable[[], None] = _nothing
    if off_thread:
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        listener = logging.handlers.QueueListener(records, handler)
        listener.start()
        root.handlers[:] = [_LoopSideHandler(records)]
        stop = listener.stop
    else:
        root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # alembic.runtime.plugins: seven "setup plugin" lines at INFO on every start (the schema check loads Alembic)
    for noisy in ("aiosqlite", "asyncio", "sqlalchemy.engine", "panoramisk", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return stop


def _nothing() -> None:
    return None
