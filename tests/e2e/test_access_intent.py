"""Intent on the real Asterisk (CALLING.md, "Intent"): the phone asks the device API (TLS) for an intent, then calls
the access number it was given from its registered number, and is admitted before answer.

The phone is the reference client: each phone enrolls with `securelink-device enroll` (an activation code from
`device add --activation`), `securelink-device intent 2001 --json` gives the number SIPp dials (or, refused, the DTMF
string it falls back to), and `securelink-device dial 2001` gives `ACCESS,,KEY,DEST`, which SIPp turns into the call:
the access number dialled, then the digits by RFC 4733, each `,` a pause. Never a hand-built string.

The installation runs on PostgreSQL with `[calling] intent_ttl = 20` (15 is the minimum, but a phone dials an intent
only with at least 15 s of it left, so with 15 it would always fall back to DTMF) and sends admitted calls to the
testbed's `[testbed-admitted]` (access_calls.py), where `UserEvent: TestbedAdmitted` shows what the product handed
on and where an admitted call is answered. "Admitted before answer" is read from Asterisk's `full` log: the channel's
only `Answer` is in `[testbed-admitted]` and no prompt was played on it. A call that is not admitted by intent goes
to DTMF: it is answered and hears the prompt; SIPp hangs up a moment later (a probe), and its verdict is `no_key`.

Two nodes: a second `securelink run` (Stasis app `securelink2`, the testbed's `0` + `4XX` route, its
`[testbed-access2]`) shares the database and the master key; one intent raced from both admits exactly one call.
`intent = off` runs as its own installation (SQLite) on `securelink2`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from access_calls import (
    ADMITTED_CONTEXT,
    ADMITTED_EVENT,
    ANSWERED_AND_HUNG_UP,
    PROMPT_LINE,
    log_since,
    log_size,
    verdict_of,
    verdicts_of,
)
from device_api_harness import Api, add_settings, serving
from harness import ACCESS_NUMBERS, AmiMonitor, Home, ami_monitor, new_home, no_channels_left, start_app, stop_app
from sipp import DtmfCall, dtmf_steps, run_dtmf_call
from support import device_cli
from support.deviceapi_fakes import raw_request
from support.pg import empty_pg_database

TTL = 20  # [calling] intent_ttl
NODE2 = "securelink2"
ACCESS_PREFIX = "+12155550"  # the testbed routes dialled 4XX to +121555504XX (node 1), 0 + 4XX likewise to node 2
SETTINGS = {"inbound": f'admitted_context = "{ADMITTED_CONTEXT}"\n', "calling": f"intent_ttl = {TTL}\n"}
PROBE_MS = 1500  # a call that is not admitted by intent: SIPp hangs up this long after the answer, during the prompt
RACED_EVENT = "SecureLinkIntentRaced"
DESTINATION = "2001"
NUMBERS = {  # one phone per scenario: a call that matches no intent leaves a noise record on its device
    "admitted": "+15553000001",
    "ttl": "+15553000002",
    "other_access": "+15553000003",
    "other_number": "+15553000004",
    "probed": "+15553000005",
    "dial": "+15553000006",
    "race": "+15553000007",
}
STRANGER = "15553999999"  # no device has this number


# -- the phones: enrolled by the reference client ------------------------------------------------------------
@dataclass
class Phone:
    """An enrolled phone: its device (as `device add --json` printed it) and the reference client's state file."""

    dev: dict[str, Any]
    state: Path

    @property
    def number(self) -> str:
        """The registered number as SIPp presents it (the testbed's carrier: digits, no `+`)."""
        return str(self.dev["mobile_number"]).lstrip("+")

    def client(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`securelink-device ARGS --state FILE` as a user runs it."""
        return device_cli.run(*args, "--state", str(self.state))

    def intent(self, destination: str = DESTINATION) -> tuple[dict[str, Any], str]:
        """`securelink-device intent DEST --json`: its document (`method` intent or dtmf, `dial`) and its stderr."""
        p = self.client("intent", destination, "--json")
        assert p.returncode == 0, p.stderr
        doc: dict[str, Any] = json.loads(p.stdout)
        return doc, p.stderr

    async def ask_route(self, api: Api, destination: str = DESTINATION) -> tuple[int, str]:
        """`POST /v1/calls/intent` signed with this phone's credentials (from its state file) by the harness's
        signer: the route's own status and error code, which the reference client only acts on."""
        signer = api.phone()
        doc = json.loads(self.state.read_text())
        signer.key_id, signer.secret = doc["key_id"], base64.urlsafe_b64decode(doc["enrollment"]["secret"] + "==")
        request = signer.signed("POST", "/v1/calls/intent", json.dumps({"destination": destination}).encode())
        got = await raw_request(signer.port, request, signer.ctx)
        return got.status, got.error

    def dial(self, destination: str = DESTINATION) -> str:
        """`securelink-device dial DEST`: the first line it prints, the dial string `ACCESS,,KEY,DEST`."""
        p = self.client("dial", destination)
        assert p.returncode == 0, p.stderr
        lines = p.stdout.splitlines()
        assert lines[1] == "tel:" + lines[0], p.stdout
        return lines[0]


CLI_BATCH = """
import contextlib, io, json, sys
from asterisk_securelink.cli import main
outs = []
for args in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0, args
    outs.append(out.getvalue())
print(json.dumps(outs))
"""


def cli_batch(home: Home, commands: list[list[str]]) -> list[str]:
    """`securelink ARGS` for each of `commands`, in one process (a CLI start each would cost a second each)."""
    p = subprocess.run([sys.executable, "-c", CLI_BATCH, json.dumps(commands)], cwd=home.path, env=home.env,
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert p.returncode == 0, p.stderr
    outs: list[str] = json.loads(p.stdout.splitlines()[-1])
    return outs


def enroll_phones(api: Api, numbers: Mapping[str, str], folder: Path, mode: str) -> dict[str, Phone]:
    """`device add --activation` for each, `securelink-device enroll` with the code over TLS (provisioned for the
    access number in `mode`), then `device register` (an intent needs a registered device)."""
    added = [json.loads(out) for out in cli_batch(api.home, [["device", "add", name, "--number", number,
                                                               "--activation", "--json"]
                                                              for name, number in numbers.items()])]  # fmt: skip

    def enroll(dev: dict[str, Any]) -> Phone:
        phone = Phone(dev, folder / f"{dev['name']}.json")
        p = phone.client("enroll", dev["enrollment_uri"], "--ca", str(api.cert), "--json")
        assert p.returncode == 0, p.stderr
        doc = json.loads(p.stdout)
        assert (doc["key_id"], doc["mode"], doc["access"]) == (dev["key_id"], mode, ACCESS_NUMBERS[0])
        return phone

    with ThreadPoolExecutor(4) as pool:
        phones = list(pool.map(enroll, added))
    cli_batch(api.home, [["device", "register", str(p.dev["id"])] for p in phones])
    return {name: phone for name, phone in zip(numbers, phones, strict=True)}


# -- the installation ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with empty_pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[Api]:
    """Node 1: `securelink run` (Stasis app `securelink`) with the device API on TLS, on PostgreSQL."""
    yield from serving(tmp_path_factory.mktemp("intent-node1"), db_url=pg_url, settings=SETTINGS)


@pytest.fixture(scope="module")
def phones(node: Api, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Phone]:
    return enroll_phones(node, NUMBERS, tmp_path_factory.mktemp("phones"), "intent")


@contextmanager
def second_node(node: Api, path: Path, pg_url: str) -> Iterator[Home]:
    """Node 2: another `securelink run` (Stasis app `securelink2`) on the same database and master key."""
    path.mkdir()
    shutil.copy2(node.home.path / "master.key", path / "master.key")
    home = new_home(path, db_url=pg_url, app=NODE2)
    add_settings(home, SETTINGS)
    run, _ = start_app(home, name=NODE2, agi=False)
    try:
        yield home
    finally:
        stop_app(home, run)


# -- calls ---------------------------------------------------------------------------------------------------
def called(access: str, node: int = 1) -> str:
    """What SIPp dials to reach the access number `access` (E.164) on node 1 (`4XX`) or node 2 (`0` + `4XX`)."""
    assert access in ACCESS_NUMBERS and access.startswith(ACCESS_PREFIX), access
    exten = access.removeprefix(ACCESS_PREFIX)
    return exten if node == 1 else "0" + exten


def other(access: str) -> str:
    (number,) = [n for n in ACCESS_NUMBERS if n != access]
    return number


async def call(caller: str, dial: str, node: int = 1, hold_ms: int = PROBE_MS) -> DtmfCall:
    """SIPp calls `dial` from `caller`: a bare access number, or a phone's dial string `ACCESS,,KEY[,DEST]` (the
    access number dialled, then the rest sent by RFC 4733 once answered, each `,` one second of silence). SIPp
    hangs up `hold_ms` after the answer unless Asterisk hangs up first."""
    access, _, tail = dial.partition(",")
    steps = dtmf_steps("," + tail if tail else "", first_ms=0, gap_ms=200, comma_ms=1000)
    return await asyncio.to_thread(run_dtmf_call, caller, called(access, node), steps, hold_ms=hold_ms)


def channel_lines(offset: int, channel: str) -> list[str]:
    return [line for line in log_since(offset) if channel in line]  # names are `PJSIP/carrier-` + 8 hex digits


def answered_by_the_admitted_context(offset: int, channel: str) -> None:
    """Admitted before answer: no prompt on the channel, and its one `Answer` is the admitted context's."""
    lines = channel_lines(offset, channel)
    answers = [line for line in lines if re.search(r"\] Answer\(", line)]
    assert len(answers) == 1 and f"@{ADMITTED_CONTEXT}:" in answers[0], "\n".join(lines)
    assert not any(PROMPT_LINE in line for line in lines), "\n".join(lines)


def prompted(offset: int, channel: str) -> None:
    """Went to DTMF: the channel was answered by the app (no dialplan `Answer`) and heard the prompt."""
    lines = channel_lines(offset, channel)
    assert any(PROMPT_LINE in line for line in lines), "\n".join(lines)
    assert not any(f"@{ADMITTED_CONTEXT}:" in line for line in lines), "\n".join(lines)


async def by_intent(node: Api, ami: AmiMonitor, phone: Phone, dial: str) -> dict[str, Any]:
    """`phone` calls `dial` (an intent's number) from its registered number: admitted before answer, method intent,
    the intent's destination handed on. Returns the verdict event."""
    offset, before = log_size(), len(ami.events)
    async with ami_monitor(ADMITTED_EVENT) as admitted:
        result = await call(phone.number, dial, hold_ms=10_000)
        assert result == ANSWERED_AND_HUNG_UP  # answered by [testbed-admitted], which hangs up after 1 s
        event, row = await verdict_of(ami, node.home, before)
        moved = await admitted.wait_for({"Uniqueid": event["Uniqueid"]})
    device = phone.dev["id"]
    assert (event["Result"], event["Mode"], event["Device"]) == ("admitted", "intent", str(device))
    assert (row["result"], row["mode"], row["device"]) == ("admitted", "intent", device)
    assert (moved["Method"], moved["Device"], moved["Destination"]) == ("intent", str(device), DESTINATION)
    exten = moved["Exten"]  # ours and the channel's own `Exten` header: both the access number dialled
    assert set(exten if isinstance(exten, list) else [exten]) == {dial}, exten
    answered_by_the_admitted_context(offset, moved["Channel"])
    no_channels_left()
    return event


async def to_dtmf(
    node: Api, ami: AmiMonitor, caller: str, dial: str, node_no: int = 1, *, conflict: bool = False
) -> dict[str, Any]:
    """A call from `caller` to `dial` that is not admitted by intent: answered, prompted, hung up by SIPp during
    the prompt; verdict `no_key` (method dtmf), after `replayed` (method intent) when it conflicts with an intent of
    its number (CALLING.md, "cancel on conflict"). Returns the `no_key` verdict event."""
    offset, before = log_size(), len(ami.events)
    result = await call(caller, dial, node_no)
    assert result == DtmfCall(200, "uac")
    if conflict:
        (first, first_row), (event, row) = await verdicts_of(ami, node.home, before, 2)
        assert (first["Result"], first["Mode"], first_row["result"], first_row["mode"]) == (
            "replayed",
            "intent",
            "replayed",
            "intent",
        )
        assert first["Uniqueid"] == event["Uniqueid"]  # the same call: replayed, then DTMF
    else:
        event, row = await verdict_of(ami, node.home, before)
    assert (event["Result"], event["Mode"]) == ("no_key", "dtmf")
    assert (row["result"], row["mode"]) == ("no_key", "dtmf")
    prompted(offset, event["Channel"])
    no_channels_left()
    return event


async def by_dtmf(home: Home, ami: AmiMonitor, phone: Phone, dial: str, node_no: int = 1) -> None:
    """`phone` calls its dial string `ACCESS,,KEY,DEST`: admitted after answer by DTMF, DEST handed on."""
    offset, before = log_size(), len(ami.events)
    async with ami_monitor(ADMITTED_EVENT) as admitted:
        result = await call(phone.number, dial, node_no, hold_ms=30_000)
        assert result == ANSWERED_AND_HUNG_UP
        event, row = await verdict_of(ami, home, before)
        moved = await admitted.wait_for({"Uniqueid": event["Uniqueid"]})
    device = phone.dev["id"]
    assert (event["Result"], event["Mode"], event["Device"]) == ("admitted", "dtmf", str(device))
    assert (row["result"], row["mode"], row["device"]) == ("admitted", "dtmf", device)
    assert (moved["Method"], moved["Destination"]) == ("dtmf", DESTINATION)
    prompted_then_admitted = channel_lines(offset, moved["Channel"])
    assert any(PROMPT_LINE in line for line in prompted_then_admitted), "\n".join(prompted_then_admitted)
    key = dial.split(",")[2]
    assert key not in home.log_text("run")  # key digits never in the app's log
    no_channels_left()


def dtmf_fallback(doc: dict[str, Any], stderr: str) -> str:
    """`securelink-device intent` got no intent and printed the DTMF dial string instead, saying so."""
    assert doc["method"] == "dtmf" and "calling by DTMF" in stderr, (doc, stderr)
    dial = str(doc["dial"])
    assert re.fullmatch(rf"\+\d+,,\d{{10}},{DESTINATION}", dial) and doc["tel"] == "tel:" + dial, doc
    return dial


def intent_dial(doc: dict[str, Any]) -> str:
    """`securelink-device intent` got an intent: the number to dial, one of the pool, with at least 15 s left."""
    assert doc["method"] == "intent", doc
    assert doc["dial"] in ACCESS_NUMBERS and doc["remaining_ms"] >= 15_000, doc
    return str(doc["dial"])


# -- admitted by intent, once --------------------------------------------------------------------------------
async def test_an_intent_admits_its_call_before_answer_once(
    node: Api, phones: dict[str, Phone], ami: AmiMonitor
) -> None:
    phone = phones["admitted"]
    dial = intent_dial(phone.intent()[0])
    first = await by_intent(node, ami, phone, dial)
    async with ami_monitor(RACED_EVENT) as raced:
        second = await to_dtmf(node, ami, phone.number, dial, conflict=True)  # a second time: spent
        event = await raced.wait_for({"RacingChannel": second["Uniqueid"]})
    assert (event["Channel"], event["Device"]) == (first["Uniqueid"], str(phone.dev["id"]))


# -- not admitted by intent: after the ttl, on the other access number, from another number -------------------
async def test_after_its_ttl_an_intent_no_longer_admits(node: Api, phones: dict[str, Phone], ami: AmiMonitor) -> None:
    phone = phones["ttl"]
    doc, _ = phone.intent()
    dial = intent_dial(doc)
    await asyncio.sleep(doc["remaining_ms"] / 1000 + 1)
    await to_dtmf(node, ami, phone.number, dial)


async def test_the_other_access_number_is_not_admitted_and_cancels_the_intent(
    node: Api, phones: dict[str, Phone], ami: AmiMonitor
) -> None:
    phone = phones["other_access"]
    dial = intent_dial(phone.intent()[0])
    await to_dtmf(node, ami, phone.number, other(dial), conflict=True)
    await to_dtmf(node, ami, phone.number, dial)  # cancelled on conflict: its own number no longer admits either


async def test_a_call_from_another_number_is_not_admitted(node: Api, phones: dict[str, Phone], ami: AmiMonitor) -> None:
    phone = phones["other_number"]
    dial = intent_dial(phone.intent()[0])
    await to_dtmf(node, ami, STRANGER, dial)
    await by_intent(node, ami, phone, dial)  # the stranger did not spend it: the phone's own call is admitted


# -- a probe from the registered number; the reference client's DTMF string ----------------------------------
async def test_after_a_probe_from_its_number_a_new_intent_is_refused_and_the_phone_uses_dtmf(
    node: Api, phones: dict[str, Phone], ami: AmiMonitor
) -> None:
    phone = phones["probed"]
    await to_dtmf(node, ami, phone.number, ACCESS_NUMBERS[0])  # a spoofer with the phone's number, no intent
    assert await phone.ask_route(node) == (409, "use_dtmf")  # within intent_quiet (120 s) of the probe
    doc, stderr = phone.intent()
    dial = dtmf_fallback(doc, stderr)
    refused = [r for r in node.home.audit("intent.create") if r["device"] == phone.dev["id"]]
    assert [(r["result"], r["detail"]) for r in refused] == [("refused", {"reason": "noise"})] * 2, refused
    await by_dtmf(node.home, ami, phone, dial)


async def test_the_dial_string_of_the_reference_client_is_admitted_by_dtmf(
    node: Api, phones: dict[str, Phone], ami: AmiMonitor
) -> None:
    phone = phones["dial"]
    dial = phone.dial()
    assert re.fullmatch(rf"{re.escape(ACCESS_NUMBERS[0])},,\d{{10}},{DESTINATION}", dial), dial
    await by_dtmf(node.home, ami, phone, dial)


# -- two nodes on one PostgreSQL race one intent -------------------------------------------------------------
async def test_two_nodes_racing_one_intent_admit_exactly_one_call(
    node: Api, phones: dict[str, Phone], ami: AmiMonitor, tmp_path: Path, pg_url: str
) -> None:
    phone = phones["race"]
    with second_node(node, tmp_path / "node2", pg_url):
        dial = intent_dial(phone.intent()[0])
        before = len(ami.events)
        async with ami_monitor(RACED_EVENT) as raced:
            results = await asyncio.gather(call(phone.number, dial, 1, 3000), call(phone.number, dial, 2, 3000))
            verdicts = await verdicts_of(ami, node.home, before, 3)  # admitted; the loser: replayed, then no_key
            outcome = sorted((e["Result"], e["Mode"], r["result"], r["mode"]) for e, r in verdicts)
            assert outcome == [
                ("admitted", "intent", "admitted", "intent"),
                ("no_key", "dtmf", "no_key", "dtmf"),
                ("replayed", "intent", "replayed", "intent"),
            ]
            (won,) = [e for e, _ in verdicts if e["Result"] == "admitted"]
            (lost,) = [e for e, _ in verdicts if e["Result"] == "no_key"]
            event = await raced.wait_for({"RacingChannel": lost["Uniqueid"]})
        assert event["Channel"] == won["Uniqueid"]  # the call the intent admitted is hung up (cancel on conflict)
        # the loser was answered for its DTMF; the winner is hung up with cause 21: a 403 when that comes before the
        # routed call is answered, a BYE after a 200 when it comes later
        assert sorted(r.status_code for r in results) in ([200, 200], [200, 403]), results
        no_channels_left()


# -- intent = off --------------------------------------------------------------------------------------------
async def test_intent_off_the_route_says_use_dtmf_and_the_phone_calls_by_dtmf(tmp_path: Path, ami: AmiMonitor) -> None:
    settings = {**SETTINGS, "calling": SETTINGS["calling"] + 'intent = "off"\n'}
    (tmp_path / "off").mkdir()
    with contextmanager(serving)(tmp_path / "off", app=NODE2, settings=settings) as off:
        (phone,) = enroll_phones(off, {"off": "+15553000010"}, tmp_path, "dtmf").values()
        assert await phone.ask_route(off) == (409, "use_dtmf")
        doc, stderr = phone.intent()
        dial = dtmf_fallback(doc, stderr)
        rows = off.home.audit("intent.create")
        assert [(r["result"], r["device"], r["detail"]) for r in rows] == [
            ("refused", phone.dev["id"], {"reason": "intent_off"})
        ] * 2
        await by_dtmf(off.home, ami, phone, dial, node_no=2)
