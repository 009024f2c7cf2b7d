"""L4 (issue 22): no command writes a raw control character to the administrator's terminal."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from support.cli import run

from asterisk_securelink import cli
from asterisk_securelink.cli.safe_output import EscapingStream, escape_controls
from asterisk_securelink.errors import InputError
from asterisk_securelink.store.store import Store

HOSTILE = "\x1b]0;owned\x07\x1b[2J\r\x9b31m\u202egnp.exe"  # title, clear screen, CR, C1 CSI, RTL override


def test_escape_controls_keeps_text_tab_and_newline() -> None:
    assert escape_controls("a\tb\nc é ☎") == "a\tb\nc é ☎"
    assert escape_controls(HOSTILE) == "\\x1b]0;owned\\x07\\x1b[2J\\x0d\\x9b31m\\u202egnp.exe"
    out = io.StringIO()
    stream = EscapingStream(out)
    print("x\x1by", file=stream)  # type: ignore[arg-type]
    assert out.getvalue() == "x\\x1by\n"


def test_audit_list_escapes_what_a_fastagi_peer_sent(tmp_path: Path) -> None:
    run(tmp_path, "init")

    async def plant() -> None:
        store = Store.from_url(f"sqlite+aiosqlite:///{tmp_path / 'securelink.sqlite3'}")
        try:
            await store.audit("verify", "mismatch", "asterisk", call_id=HOSTILE, channel=HOSTILE, source=HOSTILE)
        finally:
            await store.close()

    asyncio.run(plant())
    for args in (("audit", "list"), ("audit", "list", "--json")):
        out = run(tmp_path, *args).stdout
        assert not any(c in out for c in "\x1b\x07\r\x9b\u202e"), out
    text = run(tmp_path, "audit", "list").stdout
    assert "\\x1b]0;owned\\x07\\x1b[2J" in text
    rows = json.loads(run(tmp_path, "audit", "list", "--json").stdout)
    assert rows[-1]["channel"] == HOSTILE  # JSON keeps the value exact (escaped by json.dumps)


def test_errors_on_stderr_are_escaped_too(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def hostile_config(path: object) -> None:
        raise InputError(f"config: {HOSTILE}")

    monkeypatch.setattr(cli.config_mod, "load", hostile_config)
    assert cli.main(["audit", "list"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\\x1b[2J" in err, err
