"""`logs.configure`: values from the network (caller numbers, channel and script names) cannot forge log lines."""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
from collections.abc import Iterator

import pytest

from asterisk_securelink import logs

HOSTILE = "4915\r\n2026-01-01 00:00:00,000 INFO asterisk_securelink: admitted\x1b[2J\x9b\u2028\u202e\x00\x7f"


class Stderr:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def getvalue(self) -> str:
        return self.capsys.readouterr().err


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[Stderr]:
    """What `configure`'s handler writes to stderr; the root logger's handlers and level are restored afterwards."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        yield Stderr(capsys)
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def test_plain_text_lines_carry_no_control_characters(stderr: Stderr) -> None:
    logs.configure("INFO")
    logging.getLogger("asterisk_securelink.test").info("agi %s: caller %s", "PJSIP/x\n-1", HOSTILE)
    text = stderr.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one record, one line
    line = text[:-1]
    assert not [c for c in line if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u202e"]
    assert "caller 4915\\r\\n2026-01-01" in line  # escaped, still readable
    assert "\\x1b[2J" in line and "\\x9b" in line and "\\u2028" in line and "\\u202e" in line
    assert "agi PJSIP/x\\n-1" in line
    assert "INFO asterisk_securelink.test: agi" in line


def test_a_traceback_keeps_its_lines_but_cannot_forge_one(stderr: Stderr) -> None:
    logs.configure("INFO")
    try:
        raise ValueError("bad\n2026-01-01 00:00:00,000 INFO x: forged\x1b[2J")
    except ValueError:
        logging.getLogger("asterisk_securelink.test").exception("failed for %s", "a\rb")
    text = stderr.getvalue()
    lines = text.split("\n")[:-1]
    assert lines[0].endswith("failed for a\\rb")
    assert len(lines) > 2  # the traceback is still readable line by line
    assert all(line.startswith("  ") for line in lines[1:])  # no continuation line looks like a record
    assert "\x1b" not in text and "\r" not in text


def test_json_lines_are_escaped_too(stderr: Stderr) -> None:
    logs.configure("INFO", as_json=True)
    logging.getLogger("asterisk_securelink.test").info("caller %s", HOSTILE)
    [line] = stderr.getvalue().split("\n")[:-1]
    assert json.loads(line)["msg"] == "caller " + HOSTILE
    assert not [c for c in line if ord(c) < 0x20 or ord(c) > 0x7E]


def test_escape_controls() -> None:
    assert logs.escape_controls("a\tb\\c é ü") == "a\\tb\\c é ü"
    assert logs.escape_controls("\x00\x1b\x7f\x85\u2029\u2066") == "\\x00\\x1b\\x7f\\x85\\u2029\\u2066"


def test_a_traceback_formatted_by_another_handler_first_is_still_escaped(stderr: Stderr) -> None:
    logs.configure("INFO")
    root = logging.getLogger()
    other = logging.StreamHandler(io.StringIO())  # e.g. a handler an embedding application adds, before ours
    root.handlers.insert(0, other)
    try:
        raise ValueError("x\x1b[2J")
    except ValueError:
        logging.getLogger("asterisk_securelink.test").exception("failed")
    assert "\x1b" in other.stream.getvalue()  # the plain logging.Formatter: as is
    text = stderr.getvalue()
    assert "\x1b" not in text and "\\x1b[2J" in text


def test_off_the_loop_a_listener_thread_writes_the_same_escaped_lines_in_order(
    stderr: Stderr, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    class Recording(io.StringIO):
        writers: set[str] = set()

        def write(self, s: str) -> int:
            self.writers.add(threading.current_thread().name)
            return super().write(s)

    out = Recording()
    monkeypatch.setattr("sys.stderr", out)
    flush = logs.configure("INFO", off_thread=True)
    [queued] = logging.getLogger().handlers
    assert isinstance(queued, logging.handlers.QueueHandler)
    log = logging.getLogger("asterisk_securelink.test")
    for i in range(200):
        log.info("call %d from %s", i, HOSTILE)
    flush()
    lines = out.getvalue().splitlines()
    assert [int(line.split("call ")[1].split(" ")[0]) for line in lines] == list(range(200))
    assert all("from 4915\\r\\n2026-01-01" in line and "\x1b" not in line for line in lines)
    assert out.writers and threading.current_thread().name not in out.writers  # written by the listener


def test_off_the_loop_a_message_is_what_its_arguments_were_when_logged(stderr: Stderr) -> None:
    flush = logs.configure("INFO", off_thread=True)
    numbers = ["+15550001"]
    logging.getLogger("asterisk_securelink.test").info("numbers %s", numbers)
    numbers.append("+15550002")  # changed after the call, perhaps before the listener formats the record
    flush()
    assert stderr.getvalue().rstrip("\n").endswith("numbers ['+15550001']")


def test_off_the_loop_a_traceback_is_still_indented_and_escaped(stderr: Stderr) -> None:
    flush = logs.configure("INFO", off_thread=True)
    try:
        raise ValueError("bad\n2026-01-01 00:00:00,000 INFO forged")
    except ValueError:
        logging.getLogger("asterisk_securelink.test").exception("failed")
    flush()
    text = stderr.getvalue()
    assert "ERROR asterisk_securelink.test: failed" in text.splitlines()[0]  # one record, its traceback below
    assert [ln for ln in text.splitlines()[1:] if not ln.startswith("  ")] == []
    assert "bad\\n2026-01-01" in text
