"""The testbed's `[bench-cost]` context (bench/asterisk_cost.py) stands in for the app with hand-offs written out
by hand: they must be what the app sends today, or the bench measures a dialplan path no call takes."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from support.dialplan import app_of, contexts

from asterisk_securelink.core.handoff import Handoff, decode

EXTENSIONS = Path(__file__).resolve().parents[1] / "testbed" / "asterisk" / "extensions.conf"


def _bench_handoffs() -> dict[str, str]:
    text = EXTENSIONS.read_text()
    section = text.split("[bench-cost]", 1)[1].split("\n[", 1)[0]
    found: dict[str, str] = {}
    ext = ""
    for line in section.splitlines():
        m = re.match(r"exten => (\w+),1,", line)
        if m:
            ext = m.group(1)
        g = re.search(r"Goto\(securelink-verdict,([^,]+),1\)", line)
        if g:
            found[ext] = g.group(1)
    return found


def test_the_bench_hand_offs_are_the_apps_own_for_an_admitted_call() -> None:
    found = _bench_handoffs()
    assert set(found) == {"7107", "7108"}
    admitted = Handoff("a", "admitted", 600, "ani", home="10", timeout=3600, context="testbed-routed",
                       callerid='"Mobile" <1000>', emit_verdict=True)  # fmt: skip
    assert found["7108"] == admitted.encode()
    with_end = dataclasses.replace(admitted, report_end=True)
    assert found["7107"] == with_end.encode()
    assert decode(found["7107"]).report_end and not decode(found["7108"]).report_end


def test_the_bench_admitted_calls_clear_as_the_entry_contexts_do() -> None:
    """7107 and 7108 stand in for a call that entered [securelink-inbound] with the number 100."""
    entry = app_of(contexts()["securelink-inbound"][0])
    bench = {m.group(1): m.group(2) for m in re.finditer(r"^exten => (710[78]),1,(.*)$", EXTENSIONS.read_text(), re.M)}
    assert set(bench) == {"7107", "7108"}
    assert all(first == entry.replace("${EXTEN}", "100") for first in bench.values()), bench
