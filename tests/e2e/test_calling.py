"""Where an admitted call goes, on the real Asterisk (CALLING.md, "Where an admitted call goes", "Call records"):
SIPp is the mobile, dials the access number (`400`), sends `KEY#DEST#` by DTMF; the shipped `[securelink-admitted]`
places the call in the device's desk context (`PJSIP/1001`: context `from-desk`, callerid `"Alice" <1001>` in the
testbed's pjsip.conf, nothing in securelink's config), where `[from-desk]` publishes what it got (`UserEvent:
TestbedRouted`) and dials the "colleague" 2xxx through the carrier: a SIPp UAS on 5070 that logs the caller ID it is
shown. Refusals are read from the audit (`route` rows) and AMI; records from `securelink calls list`; the CDR fields
from the testbed's cdr_custom file.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest
from access_calls import CHROOT, log_since, log_size
from harness import AmiMonitor, Home, ami_monitor, fresh_window, new_home, next_window, no_channels_left, wait_until
from sipp import DtmfCall, dtmf_steps, run_dtmf_call, run_uac, uas

ACCESS = "400"
ROUTED = "TestbedRouted"
CDR_FILE = CHROOT / "var/log/asterisk/cdr-custom/securelink.csv"
MAX_CALL_SECONDS = 20
LONG_NAME = "Alice Longname of the Sales Team Europe"  # its hand-off is too long for an extension
NUMBERS = {  # name -> (number, device add options)
    "alice": ("15553000001", ["--desk-endpoint", "PJSIP/1001"]),
    "home": ("15553000002", ["--desk-endpoint", "PJSIP/1001"]),
    "intl": ("15553000003", ["--desk-endpoint", "PJSIP/1001"]),
    "e911": ("15553000004", ["--desk-endpoint", "PJSIP/1001"]),
    "e9112": ("15553000005", ["--desk-endpoint", "PJSIP/1001"]),
    "busy": ("15553000006", ["--desk-endpoint", "PJSIP/1001"]),
    "nowhere": ("15553000007", []),  # no desk endpoint, no [routing] default: no_route
    "long": ("15553000008", ["--desk-endpoint", "PJSIP/1001"]),
    "disa": ("15553000009", ["--desk-endpoint", "PJSIP/1001"]),
    "anidisa": ("15553000010", ["--desk-endpoint", "PJSIP/1001"]),
    "longname": ("15553000011", ["--desk-endpoint", "PJSIP/1001", "--callerid", f'"{LONG_NAME}" <1001>']),
}
ROUTING = f"""[routing]
home = "extension:8000"
allowed = ["_X."]
max_concurrent = 2
max_call_seconds = {MAX_CALL_SECONDS}
"""

ADD_DEVICES = """
import contextlib, io, json, sys
from asterisk_securelink.cli import main
added = {}
for name, (number, extra) in json.loads(sys.argv[1]).items():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["device", "add", name, "--number", "+" + number, *extra, "--json"]) == 0
    added[name] = json.loads(out.getvalue())
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["device", "register", str(added[name]["id"])]) == 0
print(json.dumps(added))
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """The harness's installation with this module's [routing] (no default identity: the desk endpoint's)."""
    h = new_home(tmp_path_factory.mktemp("calling"))
    config = h.path / "securelink.toml"
    text = config.read_text()
    config.write_text(text[: text.index("[routing]")] + ROUTING)
    yield h
    for p in h.procs:
        h.stop(p)


@pytest.fixture(scope="module")
def devices(home: Home) -> dict[str, dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-c", ADD_DEVICES, json.dumps(NUMBERS)], cwd=home.path, env=home.env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    added: dict[str, dict[str, Any]] = json.loads(proc.stdout.splitlines()[-1])
    return added


async def dial(home: Home, dev: dict[str, Any], digits: str, hold_ms: int = 6_000) -> tuple[DtmfCall, float]:
    """`dev` calls the access number and sends `digits` (`KEY` = its current key); the outcome and how long SIPp's
    call lasted (seconds)."""
    steps = dtmf_steps(digits.replace("KEY", home.key(dev)), first_ms=800, gap_ms=200)
    number = dev["mobile_number"].lstrip("+")
    started = time.monotonic()
    call = await asyncio.to_thread(run_dtmf_call, number, ACCESS, steps, hold_ms=hold_ms, timeout=90)
    return call, time.monotonic() - started


def route_rows(home: Home, device_id: int) -> list[dict[str, Any]]:
    return [r for r in home.audit("route") if r.get("device") == device_id]


def records(home: Home, *args: str) -> list[dict[str, Any]]:
    rows = json.loads(home.cli("calls", "list", "--json", *args).stdout)
    assert isinstance(rows, list)
    return rows


def cdr_of(uniqueid: str) -> list[str]:
    """The testbed's cdr_custom line of a channel: uniqueid, dst, dcontext, securelink_device, securelink_method,
    disposition."""
    found: list[list[str]] = []

    def written() -> bool:
        if CDR_FILE.exists():
            with CDR_FILE.open(newline="") as fh:
                found[:] = [row for row in csv.reader(fh) if row and row[0] == uniqueid]
        return bool(found)

    wait_until(written, 10, f"the CDR of {uniqueid}")
    return found[-1]


# ---- call-through --------------------------------------------------------------------------------------------
async def test_call_through_with_the_desk_identity(
    home: Home, devices: dict[str, dict[str, Any]], app: Popen[bytes], ami: AmiMonitor, tmp_path: Path
) -> None:
    alice = devices["alice"]
    with uas(5070) as colleague:
        async with ami_monitor(ROUTED) as routed:
            (call, lasted) = await dial(home, alice, "KEY#2011#", hold_ms=MAX_CALL_SECONDS * 1000 + 15_000)
            event = await routed.wait_for({"Dest": "2011"})
        invites = colleague.invites_to("2011")
    # the destination rang with the desk phone's caller ID, read from pjsip.conf when the call arrived
    seen = (event["CidNum"], event["CidName"], event["CdrDevice"], event["CdrMethod"])
    assert seen == ("1001", "Alice", str(alice["id"]), "dtmf")
    assert [i.from_user for i in invites] == ["1001"]
    # cut by [routing] max_call_seconds (TIMEOUT(absolute)), long before SIPp would have hung up
    assert call == DtmfCall(200, "pbx")
    assert MAX_CALL_SECONDS - 2 < lasted < MAX_CALL_SECONDS + 12
    no_channels_left()
    # the call record: inbound, dtmf, the caller number as delivered, the destination, the hangup cause
    wait_until(lambda: bool(records(home, "--device", str(alice["id"]))), 10, "alice's call record")
    [rec] = records(home, "--device", str(alice["id"]))
    number = alice["mobile_number"].lstrip("+")
    assert (rec["direction"], rec["method"], rec["destination"], rec["caller"]) == ("inbound", "dtmf", "2011", number)
    assert rec["hangup_cause"] and rec["ended_at"] and rec["verdict"] == "admitted"
    # handed over in one request, its end reported by the dialplan over AMI ([securelink-end]), answer time included
    [line] = [ln for ln in home.log_text("run").splitlines() if f"admitted {event['Uniqueid']}:" in ln]
    assert line.endswith("its end by AMI") and rec["answered_at"]
    # Asterisk's own CDR carries the fields the dialplan set from the hand-off
    cdr = cdr_of(event["Uniqueid"])
    assert cdr[3:5] == [str(alice["id"]), "dtmf"]


async def test_no_destination_goes_home(home: Home, devices: dict[str, dict[str, Any]], app: Popen[bytes]) -> None:
    dev = devices["home"]
    async with ami_monitor(ROUTED) as routed:
        call, _ = await dial(home, dev, "KEY#", hold_ms=20_000)  # 4 s of silence: no destination
        event = await routed.wait_for({"CdrDevice": str(dev["id"])})
    assert (event["Dest"], event["CidNum"]) == ("8000", "1001")
    assert call == DtmfCall(200, "pbx")


async def test_a_hand_off_too_long_for_an_extension_goes_the_long_way(
    home: Home, devices: dict[str, dict[str, Any]], app: Popen[bytes]
) -> None:
    """A caller ID whose %-encoding makes the hand-off longer than an extension (79): the app sets it in
    SECURELINK_HANDOFF and continues at `v` ([securelink-verdict]), which goes on at its kind's `fields` (`a~v`);
    the call goes on as any other."""
    dev = devices["longname"]
    offset = log_size()
    async with ami_monitor(ROUTED) as routed:
        call, _ = await dial(home, dev, "KEY#", hold_ms=20_000)
        event = await routed.wait_for({"CdrDevice": str(dev["id"])})
    assert (event["Dest"], event["CidNum"], event["CidName"], event["CdrMethod"]) == ("8000", "1001", LONG_NAME, "dtmf")
    assert call == DtmfCall(200, "pbx")
    verdicts = [ln for ln in log_since(offset) if "@securelink-verdict:" in ln]
    where = [re.search(r"\[([^@\]]+)@securelink-verdict:(\w+)\]", ln) for ln in verdicts]
    steps = [(m.group(1), m.group(2)) for m in where if m]
    assert len(steps) == len(verdicts) and steps[:3] == [("v", "1"), ("v", "2"), ("v", "3")], steps
    assert {exten for exten, _ in steps[3:]} == {"a~v"} and steps[3][1] == "2", steps  # at `fields`, never the long way


# ---- the guard -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "destination", "reason"),
    [("e911", "911", "emergency"), ("e9112", "9112", "emergency"), ("intl", "0044207946000", "denied_pattern"),
     ("long", "00" + "4" * 18, "denied_pattern")],  # 20 digits, the longest destination
)  # fmt: skip
async def test_the_guard_refuses_before_anything_is_dialled(
    home: Home, devices: dict[str, dict[str, Any]], app: Popen[bytes], name: str, destination: str, reason: str
) -> None:
    dev = devices[name]
    with uas(5070) as colleague:
        async with ami_monitor(ROUTED) as routed:
            call, _ = await dial(home, dev, f"KEY#{destination}#")
            await asyncio.sleep(1)
            assert routed.events == []
        assert colleague.invites_to(destination) == []
    assert call.ended_by == "pbx"
    wait_until(lambda: bool(route_rows(home, dev["id"])), 10, "the guard's audit row")
    [row] = route_rows(home, dev["id"])
    assert row["result"] == "denied"
    assert row["detail"]["reason"] == reason
    no_channels_left()


async def test_no_routing_identity_is_no_route(
    home: Home, devices: dict[str, dict[str, Any]], app: Popen[bytes]
) -> None:
    dev = devices["nowhere"]
    async with ami_monitor(ROUTED) as routed:
        call, _ = await dial(home, dev, "KEY#2001#")
        await asyncio.sleep(1)
        assert routed.events == []
    assert call.ended_by == "pbx"
    wait_until(lambda: bool(route_rows(home, dev["id"])), 10, "the no_route audit row")
    assert [r["result"] for r in route_rows(home, dev["id"])] == ["no_route"]


async def test_a_third_concurrent_call_of_one_device_is_refused(
    home: Home, devices: dict[str, dict[str, Any]], app: Popen[bytes]
) -> None:
    """Three calls of one device, each admitted with the key of its own window: two are put through; the third,
    while both still hold their leases, gets `rate_limited` and never reaches the destination."""
    dev = devices["busy"]
    hold = MAX_CALL_SECONDS * 1000
    with uas(5070):
        async with ami_monitor(ROUTED) as routed:
            calls = []
            for _ in range(3):
                await asyncio.to_thread(next_window)
                calls.append(asyncio.create_task(dial(home, dev, "KEY#2002#", hold_ms=hold)))
                await asyncio.sleep(1)
            done = [c for c, _ in await asyncio.gather(*calls)]
            reached = [e for e in routed.events if e.get("CdrDevice") == str(dev["id"])]
    assert len(reached) == 2  # the destination's dialplan ran for two calls
    assert [c.status_code for c in done] == [200, 200, 200]
    rows = route_rows(home, dev["id"])
    assert [r["result"] for r in rows] == ["rate_limited"]
    no_channels_left(15)


async def test_dial_tone_in_the_app_then_the_guard(
    home: Home, devices: dict[str, dict[str, Any]], app: Popen[bytes]
) -> None:
    """`home = disa` (set on the device): no destination after the key, so the app plays its own dial tone and
    collects the number, which then goes through the guard like any destination."""
    dev = devices["disa"]
    home.cli("device", "set", str(dev["id"]), "--home", "disa")
    offset = log_size()
    async with ami_monitor(ROUTED) as routed:
        call, _ = await dial(home, dev, "KEY#,,,,,,2001#", hold_ms=20_000)  # 6 s of silence, then the number
        event = await routed.wait_for({"CdrDevice": str(dev["id"])})
    assert (event["Dest"], event["CidNum"]) == ("2001", "1001")
    assert call.status_code == 200
    assert not [line for line in log_since(offset) if "Playback failed" in line]  # the tone played


async def test_an_ani_call_with_dial_tone_home_is_answered_by_the_app(
    home: Home, devices: dict[str, dict[str, Any]], app: Popen[bytes]
) -> None:
    """A SIP client admitted by ANI brings no destination: with `home = disa` the app answers it and plays its dial
    tone (the client hangs up; nothing was dialled, nothing routed)."""
    dev = devices["anidisa"]
    home.cli("device", "set", str(dev["id"]), "--home", "disa")
    await asyncio.to_thread(fresh_window)
    [result] = await asyncio.to_thread(run_uac, [(home.key(dev), "100")], timeout=30)
    assert result.status_code == 200
    no_channels_left()
    wait_until(lambda: bool(records(home, "--device", str(dev["id"]))), 10, "the record")
    [rec] = records(home, "--device", str(dev["id"]))
    assert (rec["method"], rec["destination"], rec["caller"]) == ("ani", None, None)  # the key is never recorded
