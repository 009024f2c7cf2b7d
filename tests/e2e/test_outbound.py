"""Outbound keyed calls on the real Asterisk: SIPp UAC -> testbed route -> [securelink-mobile]/[securelink-fork] ->
`securelink run` originates the legs -> SIPp UAS as the mobile (carrier, 127.0.0.1:5070) and the desk (5080).

Testbed routes (testbed/asterisk/extensions.conf): 6 + device id -> mobile only, 5 + device id -> fork.
Cause mapping seen by the caller: busy -> 486, no answer (ring_timeout) -> 480, rate limited -> 503,
revoked / unregistered -> 403, the caller cancelling -> 487 (its own CANCEL).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest
from harness import PERIOD, Home, fresh_window, new_home, no_channels_left
from sipp import SCENARIO_DIR, UasProcess, _parse_log, referenced, run_uac

from asterisk_securelink.core.slk1 import epoch_at_ms
from testbed import ari_get

RING_TIMEOUT = 5
CALLER = "15557770000"

UAC_CANCEL = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="securelink testbed UAC that cancels while ringing">
  <send retrans="500"><![CDATA[

      INVITE sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: [field2];tag=[pid]SIPpTag00[call_number]
      To: <sip:[field1]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      [field3]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 8
      a=rtpmap:0 PCMU/8000

    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180"/>
  <pause milliseconds="1500"/>
  <send><![CDATA[

      CANCEL sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-4]
      From: [field2];tag=[pid]SIPpTag00[call_number]
      To: <sip:[field1]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 CANCEL
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <recv response="200"/>
  <recv response="487"/>
  <send><![CDATA[

      ACK sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-7]
      From: [field2];tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <nop><action><log message="RESULT|[call_number]|[field0]|[field1]|487"/></action></nop>
</scenario>
"""


class LoggingUas(UasProcess):
    """The rings-forever UAS, also logging every CANCEL it gets: `CANCEL|<call>|<Reason header value>`."""

    def __init__(self, port: int, scenario_dir: Path) -> None:
        super().__init__(port, mode="noanswer")
        text = (SCENARIO_DIR / "uas_noanswer.xml").read_text()
        text = text.replace(
            '<recv request="CANCEL" timeout="300000"/>',
            '<recv request="CANCEL" timeout="300000"><action>'
            '<ereg regexp="([^|]*)" search_in="hdr" header="Reason:" assign_to="r0,reason"/>'
            '<log message="CANCEL|[call_number]|[$reason]"/></action></recv>',
        )
        text = referenced(text, "r0")
        self.scenario = scenario_dir / f"uas_noanswer_log_{port}.xml"
        self.scenario.write_text(text)

    def __enter__(self) -> LoggingUas:
        self.start()
        return self

    def cancels(self) -> list[str]:
        return [cause for _n, cause in _parse_log(self._dir / "uas.log", "CANCEL")] if self._tmp else []

    def wait_cancels(self, n: int = 1, timeout: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(got := self.cancels()) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"UAS on {self.port} saw {len(self.cancels())} CANCEL(s), expected {n}")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """The harness home, with a ring timeout below the SIPp UAC's 15 s wait for a final answer."""
    h = new_home(tmp_path_factory.mktemp("securelink-outbound"))
    with (h.path / "securelink.toml").open("a") as f:
        f.write(f'[outbound]\nendpoint = "PJSIP/{{number}}@carrier"\nring_timeout = {RING_TIMEOUT}\n')
    yield h
    for p in h.procs:
        h.stop(p)


def outbound_keys(home: Home, dev: dict[str, Any], start: float, end: float) -> set[str]:
    """The keys the platform may present between `start` and `end`: each epoch's current or next (SLK1.md)."""
    keys = set()
    for e in range(epoch_at_ms(int(start * 1000), PERIOD), epoch_at_ms(int(end * 1000), PERIOD) + 2):
        keys.add(home.key(dev, at=e * PERIOD + 0.1, direction="outbound"))
    return keys


def call(device_id: int, *, fork: bool = False, scenario: Path | None = None) -> int | None:
    called = ("5" if fork else "6") + str(device_id)
    (result,) = run_uac([(CALLER, called)], scenario=scenario, timeout=30)
    return result.status_code


def add_desk_device(home: Home, name: str, number: str) -> dict[str, Any]:
    out = home.cli("device", "add", name, "--number", "+" + number, "--desk-endpoint", "PJSIP/desk1001", "--json")
    dev: dict[str, Any] = json.loads(out.stdout)
    home.cli("device", "register", str(dev["id"]))
    return dev


def audit_results(home: Home, at_least: int = 0) -> list[str]:
    """The outbound verdicts in the audit; `at_least`: waits for that many (written in the background)."""
    return [e["result"] for e in home.audit("outbound", until=lambda rows: len(rows) >= at_least)]


class ChannelWatch:
    """Polls ARI /channels while a call runs: the caller's and the legs' states, the caller's connected number."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, list[dict[str, Any]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.seen.append((time.monotonic(), ari_get("/channels")))
            except Exception:  # noqa: BLE001, S112 - a poll may fail; the next one counts
                continue
            time.sleep(0.05)

    def __enter__(self) -> ChannelWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def arrival_times(*uases: UasProcess, timeout: float = 10) -> list[float]:
    """Monotonic time each UAS logged its first INVITE (polled every 10 ms)."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(uases) and time.monotonic() < deadline:
        for i, u in enumerate(uases):
            if i not in seen and u.invites():
                seen[i] = time.monotonic()
        time.sleep(0.01)
    assert len(seen) == len(uases), f"only {len(seen)} of {len(uases)} UAS got an INVITE"
    return [seen[i] for i in range(len(uases))]


def test_mobile_sees_the_outbound_key_and_caller_is_answered_only_after(home: Home, app: Popen[bytes]) -> None:
    dev = home.add_device("Out A", "15550100001")
    before = len(audit_results(home))
    fresh_window()
    with UasProcess(5070, mode="answer", ring_ms=2500) as mobile, ChannelWatch() as watch:
        start = time.time()
        t0 = time.monotonic()
        assert call(dev["id"]) == 200
        elapsed = time.monotonic() - t0
        end = time.time()
        (inv,) = mobile.invites_to("+15550100001")  # (a late INVITE of an earlier test's call is not this one)
    keys = outbound_keys(home, dev, start, end)
    assert inv.from_user in keys and inv.pai_user == inv.from_user
    assert inv.from_user != home.key(dev, at=start)  # not the inbound key
    assert elapsed >= 2.5  # the caller got 200 only after the mobile's 2.5 s of ringing
    callers = [[c for c in chans if not c["id"].startswith("slk-")] for _t, chans in watch.seen]
    legs = [[c for c in chans if c["id"].startswith("slk-")] for _t, chans in watch.seen]
    ringing = [(cs, ls) for cs, ls in zip(callers, legs, strict=True) if ls and ls[0]["state"] == "Ringing"]
    assert ringing and all(cs and cs[0]["state"] != "Up" for cs, _ in ringing)  # not answered while it rings
    connected = {c["connected"]["number"] for cs in callers for c in cs}
    assert inv.from_user not in connected  # the key never reached the caller
    assert audit_results(home, before + 1)[-1] == "admitted"
    no_channels_left()


def test_busy_mobile_gives_486(home: Home, app: Popen[bytes]) -> None:
    dev = home.add_device("Out busy", "15550100002")
    with UasProcess(5070, mode="reject", code=486, reason="Busy Here", ring_ms=300) as mobile:
        assert call(dev["id"]) == 486
        assert len(mobile.invites_to("+15550100002")) == 1
    no_channels_left()


def test_unanswered_mobile_gives_480_and_is_cancelled(home: Home, app: Popen[bytes], tmp_path: Path) -> None:
    dev = home.add_device("Out noanswer", "15550100003")
    with LoggingUas(5070, tmp_path) as mobile:
        t0 = time.monotonic()
        assert call(dev["id"]) == 480  # cause 19 (no answer) -> 480 Temporarily Unavailable
        assert RING_TIMEOUT - 0.5 <= time.monotonic() - t0 <= RING_TIMEOUT + 3
        (reason,) = mobile.wait_cancels(1)
        assert "SIP;cause=200" not in reason  # a plain CANCEL, not "answered elsewhere"
    no_channels_left()


def test_caller_hanging_up_first_cancels_the_mobile(home: Home, app: Popen[bytes], tmp_path: Path) -> None:
    dev = home.add_device("Out cancel", "15550100004")
    scenario = tmp_path / "uac_cancel.xml"
    scenario.write_text(UAC_CANCEL)
    with LoggingUas(5070, tmp_path) as mobile:
        assert call(dev["id"], scenario=scenario) == 487
        assert len(mobile.invites_to("+15550100004")) == 1
        (reason,) = mobile.wait_cancels(1)
        assert "SIP;cause=200" not in reason
    no_channels_left()


def test_fork_rings_both_and_first_answer_wins(home: Home, app: Popen[bytes], tmp_path: Path) -> None:
    dev = add_desk_device(home, "Out fork", "15550100005")
    fresh_window()
    with LoggingUas(5070, tmp_path) as mobile, UasProcess(5080, mode="answer", ring_ms=1000) as desk:
        result: list[int | None] = []
        t = threading.Thread(target=lambda: result.append(call(dev["id"], fork=True)))
        start = time.time()
        t.start()
        t_mobile, t_desk = arrival_times(mobile, desk)
        t.join(30)
        assert result == [200]
        assert abs(t_mobile - t_desk) <= 2.0  # both ring together (one after the other: ~5 s apart, the ring timeout)
        (reason,) = mobile.wait_cancels(1)
        assert "SIP;cause=200" in reason  # Reason: SIP;cause=200;text="Call completed elsewhere"
        (m_inv,) = mobile.invites_to("+15550100005")
        (d_inv,) = desk.invites()
    assert m_inv.from_user in outbound_keys(home, dev, start, time.time())
    assert d_inv.from_user == CALLER  # the desk sees the real caller, never the key
    no_channels_left()


def test_fork_off_rings_only_the_mobile(home: Home, app: Popen[bytes]) -> None:
    dev = add_desk_device(home, "Out nofork", "15550100007")
    home.cli("device", "fork", str(dev["id"]), "off")
    with UasProcess(5070, mode="answer", ring_ms=300) as mobile, UasProcess(5080, mode="answer") as desk:
        assert call(dev["id"], fork=True) == 200
        assert len(mobile.invites_to("+15550100007")) == 1 and desk.invites() == []
    no_channels_left()


def test_revoked_and_unregistered_devices_get_no_leg(home: Home, app: Popen[bytes]) -> None:
    revoked = home.add_device("Out revoked", "15550100008")
    home.cli("device", "revoke", str(revoked["id"]), "--reason", "lost")
    unregistered = home.add_device("Out new", "15550100009", register=False)
    before = len(audit_results(home))
    with UasProcess(5070, mode="answer") as mobile:
        assert call(revoked["id"]) == 403
        assert call(unregistered["id"]) == 403
        assert call(999999) == 403  # no such device
        time.sleep(0.5)
        assert not {i.to_user for i in mobile.invites()} & {"+15550100008", "+15550100009"}
    assert audit_results(home, before + 3)[-3:] == ["revoked", "unregistered", "error"]
    no_channels_left()


def test_third_call_within_one_period_is_rate_limited(home: Home, app: Popen[bytes]) -> None:
    dev = home.add_device("Out rate", "15550100010")
    before = len(audit_results(home))
    fresh_window(3.5)
    with UasProcess(5070, mode="answer", ring_ms=200) as mobile:
        start = time.time()
        results = [r.status_code for r in run_uac([(CALLER, f"6{dev['id']}")] * 3, rate=20, timeout=30)]
        end = time.time()
        invites = mobile.invites_to("+15550100010")
    assert sorted(results, key=str) == sorted([200, 200, 503], key=str)  # rate limited: cause 34 -> 503
    assert len(invites) == 2
    presented = [i.from_user for i in invites]
    assert len(set(presented)) == 2 and set(presented) <= outbound_keys(home, dev, start, end)
    assert sorted(audit_results(home, before + 3)[-3:]) == ["admitted", "admitted", "rate_limited"]
    no_channels_left()
