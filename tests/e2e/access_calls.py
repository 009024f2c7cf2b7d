"""What the access-number e2e tests (test_access_dtmf.py, test_access_intent.py) read back from a call: its verdict
(the AMI `SecureLinkVerdict` and its audit row, matched by the channel's uniqueid) and its lines in Asterisk's `full`
log (verbose + dtmf levels, testbed logger.conf), where the prompt and the answer show.

Admitted calls go to the testbed's `[testbed-admitted]` (`[inbound] admitted_context`, a product setting), which
publishes SECURELINK_RESULT / DEVICE / METHOD / DESTINATION as `UserEvent: TestbedAdmitted` and then behaves like the
shipped `[securelink-admitted]` (answer, 1 s, hang up).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from harness import AmiMonitor, Home, wait_until
from sipp import DtmfCall

ADMITTED_CONTEXT = "testbed-admitted"
ADMITTED_EVENT = "TestbedAdmitted"
CHROOT = Path(os.environ.get("SECURELINK_TESTBED_DIR", "/var/cache/asterisk-securelink/chroot"))
FULL_LOG = CHROOT / "var/log/asterisk/full"
ANSWERED_AND_HUNG_UP = DtmfCall(200, "pbx")  # answered, then Asterisk sent BYE (admitted call ended, or rejected)
PROMPT_LINE = "Playing 'beep."  # the access number's prompt (`[calling] dtmf_prompt`, default `beep`)


def verdict_row(home: Home, uniqueid: str, mode: str | None = None) -> dict[str, Any]:
    """The audit row of the call whose channel uniqueid is `uniqueid`, of method `mode` when given (a call that
    conflicts with an intent has two: `replayed` by intent, then its DTMF verdict); written in the background: wait."""
    found: list[dict[str, Any]] = []

    def written() -> bool:
        rows = [r for r in home.audit() if r.get("call_id") == uniqueid]
        found[:] = [r for r in rows if mode is None or r.get("mode") == mode]
        return bool(found)

    wait_until(written, 10, f"the audit row of {uniqueid}")
    assert len(found) == 1, found
    return found[0]


async def verdicts_of(
    ami: AmiMonitor, home: Home, since_events: int, count: int = 1
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The `count` `SecureLinkVerdict`s the last calls produced (after the first `since_events`), each with its
    audit row; exactly `count` (a moment is given for one more to show, which would be a bug)."""
    async with asyncio.timeout(10):
        while len(ami.events) < since_events + count:
            ami.changed.clear()
            await ami.changed.wait()
    await asyncio.sleep(0.3)  # a second verdict for the same call would be a bug: give it a moment to show
    events = ami.events[since_events:]
    assert len(events) == count, events
    return [(event, await asyncio.to_thread(verdict_row, home, event["Uniqueid"], event["Mode"])) for event in events]


async def verdict_of(ami: AmiMonitor, home: Home, since_events: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one `SecureLinkVerdict` the last call produced (after the first `since_events`), and its audit row."""
    [(event, row)] = await verdicts_of(ami, home, since_events)
    return event, row


def log_size() -> int:
    return FULL_LOG.stat().st_size


def log_since(offset: int) -> list[str]:
    with FULL_LOG.open("rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace").splitlines()
