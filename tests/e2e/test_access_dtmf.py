"""The access number on the real Asterisk: SIPp is the phone, dials `400` (the testbed routes it to
`[securelink-access]` as +12155550400), waits for the answer and sends its key and a destination by DTMF.

How the test sees what the product hands on: this module's config sends admitted calls to the testbed's
`[testbed-admitted]` (`[inbound] admitted_context`, a product setting), which publishes SECURELINK_RESULT / DEVICE /
METHOD / DESTINATION as the AMI `UserEvent: TestbedAdmitted` and then behaves like the shipped `[securelink-admitted]`
(answer, 1 s, hang up). So the variables are read from the channel itself, after the app moved it, not from a log.

Verdicts are read from the audit (`audit list`, the row whose `call_id` is the channel's uniqueid) and from the AMI
`SecureLinkVerdict` events. The prompt is checked in Asterisk's `full` log (verbose + dtmf levels, testbed
logger.conf): the channel's `Playing 'beep...'` line comes before its first `DTMF` line.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from subprocess import Popen
from typing import Any

import pytest
from access_calls import (
    ADMITTED_CONTEXT,
    ADMITTED_EVENT,
    ANSWERED_AND_HUNG_UP,
    log_since,
    log_size,
    verdict_of,
    verdicts_of,
)
from harness import AmiMonitor, Home, ami_monitor, fresh_window, new_home, no_channels_left
from sipp import DtmfCall, dtmf_steps, run_dtmf_call

ACCESS = "400"  # dialled 400 -> Goto(securelink-access,+12155550400,1) (testbed extensions.conf)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """The harness's installation, with admitted calls sent to `[testbed-admitted]` (see the module docstring)."""
    h = new_home(tmp_path_factory.mktemp("access"))
    config = h.path / "securelink.toml"
    text = config.read_text()
    assert "[inbound]\n" in text and "[calling]" in text
    config.write_text(text.replace("[inbound]\n", f'[inbound]\nadmitted_context = "{ADMITTED_CONTEXT}"\n', 1))
    yield h
    for p in h.procs:
        h.stop(p)


NUMBERS = {  # every device the tests use, added at once (each `device add` + `register` is two CLI runs)
    "rfc4733": "15552000001",
    "info": "15552000002",
    "app": "15552000003",
    "prompt": "15552000004",
    "wrong": "15552000011",
    "silent": "15552000012",
    "caller": "15552000013",
    "other": "15552000014",
    "replay": "15552000015",
    "somebody": "15552000016",
}
UNKNOWN_NUMBER = "15552999999"  # no device has it
Devices = dict[str, dict[str, Any]]


ADD_DEVICES = """
import contextlib, io, json, sys
from asterisk_securelink.cli import main
added = {}
for name, number in json.loads(sys.argv[1]).items():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["device", "add", name, "--number", "+" + number, "--json"]) == 0
    added[name] = json.loads(out.getvalue())
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["device", "register", str(added[name]["id"])]) == 0
print(json.dumps(added))
"""


@pytest.fixture(scope="module")
def devices(home: Home) -> Devices:
    """The devices of NUMBERS, added and registered by the CLI in one process (one CLI start each would cost ~20 s)."""
    proc = subprocess.run(
        [sys.executable, "-c", ADD_DEVICES, json.dumps(NUMBERS)],
        cwd=home.path,
        env=home.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    added: Devices = json.loads(proc.stdout.splitlines()[-1])
    assert {d["mobile_number"] for d in added.values()} == {"+" + n for n in NUMBERS.values()}
    return added


async def dial(caller: str, digits: str, *, method: str = "rfc4733", hold_ms: int = 20_000) -> DtmfCall:
    """Call the access number from `caller` and send `digits` (`,` = 1 s pause) once answered."""
    steps = dtmf_steps(digits, first_ms=800, gap_ms=200)
    return await asyncio.to_thread(run_dtmf_call, caller, ACCESS, steps, method=method, hold_ms=hold_ms)


def wrong(key: str) -> str:
    """A key of the right length that is not `key` (nor, but for a 1e-10 chance, any other live key)."""
    return "".join(str((int(c) + 3) % 10) for c in key)


async def admitted_with(
    home: Home, ami: AmiMonitor, dev: dict[str, Any], digits: str, method: str, destination: str
) -> dict[str, Any]:
    """A registered device calls from its number and sends `digits` (`KEY`: its current key): admitted by DTMF, with
    `destination` handed on. The `TestbedAdmitted` event is returned.

    The key is taken just before the call: the answer, a second later, is in its window or the next one, which the
    DTMF check accepts (look_behind 1 = ceil(dtmf_setup_s / period)), so no wait for a fresh window is needed."""
    number = dev["mobile_number"].lstrip("+")
    key = home.key(dev)
    before = len(ami.events)
    async with ami_monitor(ADMITTED_EVENT) as admitted:
        call = await dial(number, digits.replace("KEY", key), method=method)
        assert call == ANSWERED_AND_HUNG_UP
        event, row = await verdict_of(ami, home, before)
        assert (event["Result"], event["Mode"], event["Device"]) == ("admitted", "dtmf", str(dev["id"]))
        moved = await admitted.wait_for({"Uniqueid": event["Uniqueid"]})
    assert (row["result"], row["mode"], row["device"]) == ("admitted", "dtmf", dev["id"])
    assert (moved["Result"], moved["Device"], moved["Method"]) == ("admitted", str(dev["id"]), "dtmf")
    assert moved["Destination"] == destination
    assert key not in home.log_text("run")  # key digits never in the app's log
    no_channels_left()
    return moved


# ---- admitted ----------------------------------------------------------------------------------------------------
async def test_key_and_destination_by_rfc4733(home: Home, devices: Devices, app: Popen[bytes], ami: AmiMonitor) -> None:
    await admitted_with(home, ami, devices["rfc4733"], "KEY2001#", "rfc4733", "2001")


async def test_key_and_destination_by_sip_info(
    home: Home, devices: Devices, app: Popen[bytes], ami: AmiMonitor
) -> None:
    await admitted_with(home, ami, devices["info"], "KEY2001#", "info", "2001")


async def test_the_apps_dial_string_key_pause_destination_without_hash(
    home: Home, devices: Devices, app: Popen[bytes], ami: AmiMonitor
) -> None:
    # the app dials `+ACCESS,,KEY,,2001`: a 2 s pause between key and destination, and no `#`: 4 s of silence ends it
    await admitted_with(home, ami, devices["app"], "KEY,,2001", "rfc4733", "2001")


async def test_prompt_plays_before_the_first_digit(
    home: Home, devices: Devices, app: Popen[bytes], ami: AmiMonitor
) -> None:
    offset = log_size()
    moved = await admitted_with(home, ami, devices["prompt"], "KEY#", "rfc4733", "")
    channel = moved["Channel"]
    lines = [line for line in log_since(offset) if channel in line]
    playing = [i for i, line in enumerate(lines) if re.search(r"Playing 'beep\.", line)]
    dtmf = [i for i, line in enumerate(lines) if re.search(r"DTMF begin '[0-9]' received", line)]
    assert playing, "the prompt was never played on " + channel
    assert len(dtmf) == 10, "\n".join(lines)  # the key's ten digits, each seen once (the `#` is not counted here)
    assert playing[0] < dtmf[0], "\n".join(lines)


# ---- rejected ----------------------------------------------------------------------------------------------------
async def rejected(
    ami: AmiMonitor, home: Home, call: DtmfCall, since: int, verdict: str, device: Any = None
) -> dict[str, Any]:
    """The call was answered, then hung up by Asterisk (auth-incorrect, cause 21), with this one verdict."""
    assert call == ANSWERED_AND_HUNG_UP
    event, row = await verdict_of(ami, home, since)
    assert (event["Result"], event["Mode"]) == (verdict, "dtmf")
    assert (row["result"], row["mode"], row["device"]) == (verdict, "dtmf", device)
    no_channels_left()
    return row


async def test_wrong_key_is_a_mismatch(home: Home, devices: Devices, app: Popen[bytes], ami: AmiMonitor) -> None:
    n = len(ami.events)
    call = await dial(NUMBERS["wrong"], wrong(home.key(devices["wrong"])) + "2001#")
    await rejected(ami, home, call, n, "mismatch")


async def test_no_digits_within_10_s_is_no_key(
    home: Home, devices: Devices, app: Popen[bytes], ami: AmiMonitor
) -> None:
    n = len(ami.events)
    started = time.monotonic()
    call = await dial(NUMBERS["silent"], "")
    assert time.monotonic() - started >= 10  # not hung up before the first-digit timer ran out
    await rejected(ami, home, call, n, "no_key")


async def test_another_devices_key_is_a_mismatch(
    home: Home, devices: Devices, app: Popen[bytes], ami: AmiMonitor
) -> None:
    n = len(ami.events)
    call = await dial(NUMBERS["caller"], home.key(devices["other"]) + "2001#")  # the caller's number picks its device
    await rejected(ami, home, call, n, "mismatch")


async def test_the_same_key_twice_is_replayed(home: Home, devices: Devices, app: Popen[bytes], ami: AmiMonitor) -> None:
    dev = devices["replay"]
    await asyncio.to_thread(fresh_window, 4.5)  # the second call must still be answered in the key's next window
    key = home.key(dev)
    n = len(ami.events)
    first = await dial(NUMBERS["replay"], key + "#", hold_ms=300)  # no destination; hang up right after the verdict
    assert first.status_code == 200
    second = await dial(NUMBERS["replay"], key + "#")  # at once, while the key is still live: but spent
    assert second == ANSWERED_AND_HUNG_UP
    (admitted, _), (event, row) = await verdicts_of(ami, home, n, 2)  # read after both: the key's window is short
    assert admitted["Result"] == "admitted"
    assert (event["Result"], event["Mode"]) == ("replayed", "dtmf")
    assert (row["result"], row["mode"], row["device"]) == ("replayed", "dtmf", dev["id"])
    assert row["call_id"] != admitted["Uniqueid"]
    no_channels_left()


async def test_unregistered_number_is_a_mismatch(
    home: Home, devices: Devices, app: Popen[bytes], ami: AmiMonitor
) -> None:
    n = len(ami.events)
    call = await dial(UNKNOWN_NUMBER, home.key(devices["somebody"]) + "2001#")  # a valid key, from nobody's number
    await rejected(ami, home, call, n, "mismatch")


async def test_anonymous_is_refused_before_answer(home: Home, app: Popen[bytes], ami: AmiMonitor) -> None:
    n = len(ami.events)
    call = await dial("", "1234567890#")
    assert call == DtmfCall(403, "none")  # cause 21 before answer: never answered, no digit sent
    event, row = await verdict_of(ami, home, n)
    assert (event["Result"], event["Mode"]) == ("anonymous", "dtmf")
    assert (row["result"], row["mode"], row["device"]) == ("anonymous", "dtmf", None)
    no_channels_left()
