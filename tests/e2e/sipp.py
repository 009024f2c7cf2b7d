"""SIPp helpers for the end-to-end tests against the Asterisk testbed.

* ``run_uac(calls)`` places one INVITE per ``(caller, called)`` pair at Asterisk
  (127.0.0.1:5060) with ``tests/sipp/uac.xml`` and returns the final SIP status
  code of each call.  ``caller=""`` makes an anonymous call
  (From ``"Anonymous" <sip:anonymous@anonymous.invalid>``, no P-Asserted-Identity).
* ``UasProcess`` runs a SIPp UAS (``tests/sipp/uas*.xml``) on a port, e.g. 5070
  (the ``carrier`` AOR) or 5080 (``desk1001``), and exposes the INVITEs it saw.
* ``run_dtmf_call(caller, called, steps, method=...)`` places one call that, once
  answered, sends DTMF digits after given pauses (``dtmf_steps("KEY,,2001")``) by
  RFC 4733 or SIP INFO, from a scenario written per call (``dtmf_scenario``), and
  reports the final status and who hung up.

Results are read from SIPp's ``<log>`` action output (``-trace_logs -log_file``):
``uac.xml`` logs ``RESULT|call_number|caller|called|code`` once per call and the
UAS scenarios log ``INVITE|call_number|from_user|pai_user|to_user|to_tag|code`` per INVITE
(SIPp flushes these lines immediately, so a running UAS can be polled).

SIPp runs without a terminal (``-nostdin``, stdout to a file), so this works
under pytest and in CI.  Every SIPp process is bounded by a timeout and killed
on exit.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "sipp"
ASTERISK_SIP = "127.0.0.1:5060"
LOCAL_IP = "127.0.0.1"
SIPP = os.environ.get("SECURELINK_SIPP", "sipp")


class SippError(RuntimeError):
    """SIPp could not be started or did not produce the expected results."""


@dataclass(frozen=True)
class CallResult:
    caller: str
    called: str
    status_code: int | None  # None: no final response within the scenario's 15 s


@dataclass(frozen=True)
class UasInvite:
    from_user: str
    pai_user: str  # "" when the INVITE had no P-Asserted-Identity
    to_user: str  # the number called
    response: int  # final response the UAS sent (or will send)


def sipp_available() -> bool:
    return shutil.which(SIPP) is not None


def _check_field(value: str, what: str) -> None:
    if any(c in value for c in ";\n\r|"):
        raise ValueError(f"{what} {value!r} must not contain ';', '|' or newlines (SIPp CSV/log separators)")


def _csv_row(caller: str, called: str) -> str:
    _check_field(caller, "caller")
    _check_field(called, "called")
    if not called:
        raise ValueError("called number must not be empty")
    if caller:
        from_hdr = f"<sip:{caller}@{LOCAL_IP}>"
        extra = f"P-Asserted-Identity: <sip:{caller}@{LOCAL_IP}>"
    else:  # anonymous: no number anywhere
        from_hdr = '"Anonymous" <sip:anonymous@anonymous.invalid>'
        extra = "X-Securelink-Test: anonymous"
    return f"{caller};{called};{from_hdr};{extra}\n"


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a SIPp process (its own process group) and reap it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=3)


def _parse_log(path: Path, kind: str) -> list[list[str]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(kind + "|"):
            rows.append(line.split("|")[1:])
    return rows


def run_uac(
    calls: Sequence[tuple[str, str]],
    *,
    rate: float = 10.0,
    concurrency: int = 10,
    timeout: float = 60.0,
    target: str = ASTERISK_SIP,
    scenario: Path | None = None,
    prefix: Sequence[str] = (),
) -> list[CallResult]:
    """Place ``calls`` (caller, called) through Asterisk; return results in input order.

    ``rate`` is calls per second, ``concurrency`` the max simultaneous calls.
    Raises SippError if SIPp fails to start or some call produced no result line. ``prefix`` runs SIPp through
    another command (e.g. `nsenter --net=...` into a test's own network namespace).
    """
    if not calls:
        return []
    scenario = scenario or SCENARIO_DIR / "uac.xml"
    with tempfile.TemporaryDirectory(prefix="securelink-sipp-") as tmp:
        tmpdir = Path(tmp)
        csv = tmpdir / "calls.csv"
        csv.write_text("SEQUENTIAL\n" + "".join(_csv_row(a, b) for a, b in calls))
        log, rc = _run_sipp(
            tmpdir,
            [str(scenario), "-inf", str(csv), "-m", str(len(calls)), "-r", str(rate), "-l", str(concurrency)],
            timeout=timeout,
            target=target,
            prefix=prefix,
        )
        rows = _parse_log(log, "RESULT")
        by_index: dict[int, int | None] = {}
        for call_number, _caller, _called, code in rows:
            by_index[int(call_number) - 1] = int(code) if code.isdigit() else None
        if len(by_index) != len(calls):
            raise _failed(tmpdir, f"SIPp produced {len(by_index)} of {len(calls)} results (rc={rc})")
    # SIPp numbers calls 1..n in the order it reads the SEQUENTIAL CSV.
    return [CallResult(caller, called, by_index[i]) for i, (caller, called) in enumerate(calls)]


def _run_sipp(
    tmpdir: Path,
    scenario_args: Sequence[str],
    *,
    timeout: float,
    target: str = ASTERISK_SIP,
    prefix: Sequence[str] = (),
) -> tuple[Path, int | None]:
    """One SIPp UAC run in `tmpdir` against `target` (`scenario_args`: `-sf`'s file and the call options): loopback
    addresses, any free ports (several SIPp may run at once), its result log and errors in `tmpdir`; bounded by
    `timeout` and killed after it. Returns (the result log, its exit code); `_failed` reads its output."""
    log, out = tmpdir / "results.log", tmpdir / "sipp.out"
    cmd = [
        *prefix, SIPP, target, "-sf", *scenario_args,
        "-i", LOCAL_IP, "-mi", LOCAL_IP,
        "-p", "0",  # any free local port (so several SIPp can run at once)
        "-mp", str(_free_udp_port()),
        "-nostdin", "-trace_logs", "-log_file", str(log), "-trace_err", "-error_file", str(tmpdir / "errors.log"),
        "-timeout", f"{int(timeout)}s",
    ]  # fmt: skip
    with out.open("wb") as fh:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, cwd=tmpdir, start_new_session=True
        )
        try:
            proc.wait(timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            pass
        finally:
            _kill(proc)
    return log, proc.returncode


def _failed(tmpdir: Path, what: str) -> SippError:
    """`what` went wrong in the SIPp run of `tmpdir`: the error, with the tail of SIPp's output and errors."""
    out, errors = tmpdir / "sipp.out", tmpdir / "errors.log"
    tail = out.read_text(errors="replace")[-2000:] if out.exists() else ""
    errs = errors.read_text(errors="replace")[-2000:] if errors.exists() else ""
    return SippError(f"{what}\n--- sipp output ---\n{tail}\n--- sipp errors ---\n{errs}")


def _free_udp_port() -> int:
    """A currently free UDP port for SIPp's RTP socket (default 6000 would collide)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCAL_IP, 0))
        return int(s.getsockname()[1])


class UasProcess:
    """A SIPp UAS on ``port`` that answers (``mode="answer"``), rejects
    (``mode="reject"``, ``code``/``reason``) or never answers (``mode="noanswer"``).

    ``ring_ms`` is the delay between 180 Ringing and the final response.  Use as
    a context manager; the process is always killed on exit::

        with UasProcess(5070) as uas:
            ...originate a call...
            invites = uas.wait_for_invites(1)
    """

    def __init__(
        self,
        port: int = 5070,
        *,
        mode: str = "answer",
        ring_ms: int = 200,
        code: int = 486,
        reason: str = "Busy Here",
        max_lifetime: float = 300.0,
        transport: str = "u1",
        scenario: Path | None = None,
    ) -> None:
        scenarios = {"answer": "uas.xml", "reject": "uas_reject.xml", "noanswer": "uas_noanswer.xml"}
        if mode not in scenarios:
            raise ValueError(f"mode must be one of {sorted(scenarios)}")
        self.port = port
        self.scenario = SCENARIO_DIR / scenarios[mode]
        self.mode = mode
        self.ring_ms = ring_ms
        self.code = code
        self.reason = reason
        self.max_lifetime = max_lifetime
        self.transport = transport  # u1 (UDP) or t1 (TCP: behind stunnel for TLS)
        if scenario is not None:
            self.scenario = scenario
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def _dir(self) -> Path:
        assert self._tmp is not None
        return Path(self._tmp.name)

    def start(self) -> UasProcess:
        self._tmp = tempfile.TemporaryDirectory(prefix="securelink-sipp-uas-")
        scenario = self.scenario
        if self.mode == "reject":
            # SIPp checks status codes at load time, so substitute into a copy.
            _check_field(self.reason, "reason")
            text = scenario.read_text().replace("486 Busy Here", f"{int(self.code)} {self.reason}")
            text = text.replace('|486"/>', f'|{int(self.code)}"/>')
            scenario = self._dir / "uas_reject.xml"
            scenario.write_text(text)
        cmd = [
            SIPP,
            "-sf",
            str(scenario),
            "-i",
            LOCAL_IP,
            "-mi",
            LOCAL_IP,
            "-p",
            str(self.port),
            "-mp",
            str(_free_udp_port()),
            "-d",
            str(self.ring_ms),
            "-nostdin",
            "-t",
            self.transport,
            "-trace_logs",
            "-log_file",
            str(self._dir / "uas.log"),
            "-trace_err",
            "-error_file",
            str(self._dir / "errors.log"),
            "-timeout",
            f"{int(self.max_lifetime)}s",
        ]
        self._out = (self._dir / "sipp.out").open("wb")
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=self._dir,
            start_new_session=True,
        )
        # Wait until SIPp has bound the port (or died, e.g. port in use).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                out = (self._dir / "sipp.out").read_text(errors="replace")[-2000:]
                self.stop()
                raise SippError(f"SIPp UAS on port {self.port} exited at start:\n{out}")
            if (_tcp_port_listening if self.transport.startswith("t") else _udp_port_bound)(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise SippError(f"SIPp UAS did not bind 127.0.0.1:{self.port} within 5 s")

    def stop(self) -> None:
        if self._proc is not None:
            _kill(self._proc)
            self._out.close()
            self._proc = None
        if self._tmp is not None:
            self._last_invites = self.invites()
            self._tmp.cleanup()
            self._tmp = None

    def invites(self) -> list[UasInvite]:
        """The calls that reached this UAS so far: their first INVITE (also available after ``stop()``)."""
        if self._tmp is None:
            return list(getattr(self, "_last_invites", []))
        rows = _parse_log(self._dir / "uas.log", "INVITE")
        # an INVITE whose To has a tag belongs to a dialog this UAS did not start: an earlier UAS's call on the same
        # port (Asterisk's late re-INVITE of a call that UAS answered) or SIPp's own call it could not match; the
        # UAS answers it, and it is not a call that reached this UAS
        return [UasInvite(f, p, t, int(c)) for _n, f, p, t, tag, c in rows if not tag]

    def invites_to(self, number: str) -> list[UasInvite]:
        """INVITEs received so far that called `number`. A test that counts calls to a number should be the only one
        calling it: Asterisk keeps resending an INVITE nobody answered for 32 s (PJSIP's timer B), also after the
        caller hung up, so an earlier test's call to a number with no UAS reaches the next UAS bound to this port
        (2001, the colleague the DTMF and intent tests dial and nobody answers, is such a number)."""
        return [i for i in self.invites() if i.to_user == number]

    def wait_for_invites(self, count: int = 1, timeout: float = 10.0, to: str | None = None) -> list[UasInvite]:
        """At least `count` calls (to `to` only, when given) within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.invites() if to is None else self.invites_to(to)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise SippError(f"UAS on port {self.port} saw {len(self.invites())} INVITE(s), expected {count}")

    def __enter__(self) -> UasProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tcp_port_listening(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((LOCAL_IP, port)) == 0


def _udp_port_bound(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((LOCAL_IP, port))
        except OSError:
            return True
    return False


def referenced(scenario: str, *names: str) -> str:
    """`scenario` (a UAS scenario's text) with `names` added to its `<Reference variables=...>`: SIPp refuses a
    scenario with a variable assigned and never used (e.g. an ereg's whole-match group)."""
    text, n = re.subn(
        r'<Reference variables="([^"]*)"/>',
        lambda m: f'<Reference variables="{",".join([m.group(1), *names])}"/>',
        scenario,
    )
    if n != 1:
        raise ValueError("the scenario has no single <Reference variables=...> line")
    return text


@contextlib.contextmanager
def uas(port: int = 5070, **kwargs: object) -> Iterator[UasProcess]:
    """Functional spelling of ``with UasProcess(port, ...)``."""
    proc = UasProcess(port, **kwargs)  # type: ignore[arg-type]
    with proc:
        yield proc


# ---- DTMF after answer: the access number --------------------------------------------------------------------
PCAP_DIR = Path(os.environ.get("SECURELINK_SIPP_PCAPS", "/usr/share/sip-tester"))
PCAP_NAMES = {**{d: d for d in "0123456789"}, "*": "star", "#": "pound"}
TELEPHONE_EVENT_PT = 101  # the payload type SIPp's dtmf_2833_*.pcap files carry
PCAP_PLAY_MS = 200  # each dtmf_2833_*.pcap lasts 140 ms: a digit sent by RFC 4733 needs this long before the next
FAILURE_CODES = (400, 401, 403, 404, 407, 408, 480, 481, 484, 486, 487, 488, 500, 502, 503, 504, 603)


@dataclass(frozen=True)
class DtmfCall:
    """One call that sends DTMF after the answer: what ``run_dtmf_call`` reports."""

    status_code: int | None  # the INVITE's final status (None: none within 15 s)
    ended_by: str  # "pbx": Asterisk sent BYE; "uac": SIPp hung up after ``hold_ms``; "none": never answered


def _digit_step(digit: str, method: str, cseq: int, from_hdr: str, called: str, pcap: Path) -> str:
    if method == "rfc4733":
        return f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n'
    return f"""  <send retrans="500">
    <![CDATA[

      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: {from_hdr};tag=[pid]SIPpTag00[call_number]
      To: <sip:{called}@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      [routes]
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal={digit}
      Duration=160

    ]]>
  </send>
  <recv request="BYE" optional="true" next="answerbye"/>
  <recv response="200" timeout="5000" ontimeout="hangup"/>
"""


def write_dtmf_pcaps(digits: str, folder: Path) -> list[Path]:
    """One pcap per digit (``folder/dtmf_<i>.pcap``): SIPp's dtmf_2833_<d>.pcap with the RTP sequence numbers and
    timestamps rewritten to keep rising from digit to digit.

    SIPp replays a pcap's RTP headers unchanged, and every one of its DTMF pcaps carries a fixed timestamp (digit 1:
    13280, 2: 23200, ...; 0: 17632). Asterisk takes an RFC 4733 event only when its timestamp is newer than the last
    event's, so a key such as ``21`` or ``11`` played from the stock files loses digits. Rewritten, each digit is
    a new event, as a phone sends it.
    """
    out = []
    for i, digit in enumerate(digits):
        data = bytearray((PCAP_DIR / f"dtmf_2833_{PCAP_NAMES[digit]}.pcap").read_bytes())
        if struct.unpack_from("<I", data, 0)[0] != 0xA1B2C3D4 or struct.unpack_from("<I", data, 20)[0] != 1:
            raise SippError(f"{PCAP_DIR}: expected little-endian Ethernet pcaps")
        offset, k = 24, 0
        while offset < len(data):
            incl = struct.unpack_from("<I", data, offset + 8)[0]
            ip = offset + 16 + 14  # pcap record header + Ethernet header
            udp = ip + (data[ip] & 0x0F) * 4
            rtp = udp + 8
            if data[rtp + 1] & 0x7F != TELEPHONE_EVENT_PT:
                raise SippError(f"{PCAP_DIR}: a packet of digit {digit!r} is not payload type {TELEPHONE_EVENT_PT}")
            struct.pack_into(">HI", data, rtp + 2, 1000 + 20 * i + k, 8000 * (i + 1))  # seq, timestamp
            struct.pack_into(">H", data, udp + 6, 0)  # no UDP checksum (valid for IPv4)
            offset += 16 + incl
            k += 1
        path = folder / f"dtmf_{i}.pcap"
        path.write_bytes(bytes(data))
        out.append(path)
    return out


def dtmf_scenario(
    caller: str,
    called: str,
    steps: Sequence[tuple[int, str]],
    *,
    method: str = "rfc4733",
    hold_ms: int = 20_000,
    pcap_dir: Path = Path("."),
) -> str:
    """A SIPp UAC scenario: INVITE ``called`` from ``caller`` (From and P-Asserted-Identity, as uac.xml; "" is
    anonymous), ACK the 200, then for each ``(pause_ms, digit)`` wait ``pause_ms`` and send the digit, by RFC 4733
    (``method="rfc4733"``: ``pcap_dir/dtmf_<i>.pcap`` from ``write_dtmf_pcaps``, payload type 101 offered in the SDP)
    or SIP INFO (``"info"``: application/dtmf-relay, no telephone-event offered); then wait ``hold_ms`` for
    Asterisk's BYE, else
    send BYE. A BYE from Asterisk at any pause ends the call (answered). It logs ``RESULT|code|ended_by``.

    Each pause is a ``recv BYE`` with a timeout, so the PBX may hang up at any moment without an "unexpected
    message" abort. The digits are written into the XML, so build one scenario per call.
    """
    if method not in ("rfc4733", "info"):
        raise ValueError("method must be rfc4733 or info")
    _check_field(caller, "caller")
    _check_field(called, "called")
    for pause, digit in steps:
        if digit not in PCAP_NAMES or pause < 0:
            raise ValueError(f"bad DTMF step {(pause, digit)!r}: a digit 0-9 * # after a pause >= 0 ms")
        if method == "rfc4733" and pause < PCAP_PLAY_MS:
            raise ValueError(f"RFC 4733 digits need at least {PCAP_PLAY_MS} ms between them (the pcap plays 140 ms)")
    if caller:
        from_hdr = f"<sip:{caller}@{LOCAL_IP}>"
        identity = f"P-Asserted-Identity: <sip:{caller}@{LOCAL_IP}>"
    else:
        from_hdr = '"Anonymous" <sip:anonymous@anonymous.invalid>'
        identity = "X-Securelink-Test: anonymous"
    media = "0 101" if method == "rfc4733" else "0"
    event = (
        f"a=rtpmap:{TELEPHONE_EVENT_PT} telephone-event/8000\n      a=fmtp:{TELEPHONE_EVENT_PT} 0-16\n      "
        if method == "rfc4733"
        else ""
    )
    failures = "".join(
        f'  <recv response="{c}" optional="true" next="failed"><action><assignstr assign_to="code" value="{c}"/>'
        f"</action></recv>\n"
        for c in FAILURE_CODES
    )
    body = []
    cseq = 2
    for i, (pause, digit) in enumerate(steps):
        body.append(f'  <recv request="BYE" timeout="{max(pause, 1)}" ontimeout="d{i}" next="answerbye"/>\n')
        body.append(f'  <label id="d{i}"/>\n')
        body.append(_digit_step(digit, method, cseq, from_hdr, called, pcap_dir / f"dtmf_{i}.pcap"))
        cseq += method == "info"
    dialog = f"""      From: {from_hdr};tag=[pid]SIPpTag00[call_number]
      To: <sip:{called}@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]"""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="securelink testbed DTMF UAC">
  <send retrans="500">
    <![CDATA[

      INVITE sip:{called}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: {from_hdr};tag=[pid]SIPpTag00[call_number]
      To: <sip:{called}@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      {identity}
      Max-Forwards: 70
      User-Agent: securelink-testbed-sipp-dtmf
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP {media}
      a=rtpmap:0 PCMU/8000
      {event}a=sendrecv

    ]]>
  </send>

  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
{failures}  <recv response="200" rrs="true" timeout="15000" ontimeout="noanswer">
    <action><assignstr assign_to="code" value="200"/></action>
  </recv>

  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
{dialog}
      CSeq: 1 ACK
      [routes]
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>

{"".join(body)}
  <recv request="BYE" timeout="{max(hold_ms, 1)}" ontimeout="hangup" next="answerbye"/>

  <label id="hangup"/>
  <nop><action><assignstr assign_to="ended" value="uac"/></action></nop>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
{dialog}
      CSeq: {cseq} BYE
      [routes]
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv request="BYE" optional="true" next="answerbye"/>
  <recv response="200" crlf="true" next="done"/>

  <label id="answerbye"/>
  <nop><action><assignstr assign_to="ended" value="pbx"/></action></nop>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <nop next="done"/>

  <label id="failed"/>
  <nop><action><assignstr assign_to="ended" value="none"/></action></nop>
  <send>
    <![CDATA[

      ACK sip:{called}@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: {from_hdr};tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop next="done"/>

  <label id="noanswer"/>
  <nop><action><assignstr assign_to="code" value="timeout"/><assignstr assign_to="ended" value="none"/></action></nop>

  <label id="done"/>
  <nop><action><log message="RESULT|[$code]|[$ended]"/></action></nop>
</scenario>
"""


def dtmf_steps(digits: str, *, first_ms: int = 1000, gap_ms: int = 250, comma_ms: int = 1000) -> list[tuple[int, str]]:
    """``(pause_ms, digit)`` steps for a dial string: the first digit ``first_ms`` after the ACK, each next one
    ``gap_ms`` later; every ``,`` adds ``comma_ms`` of silence (as a phone's pause character does)."""
    steps: list[tuple[int, str]] = []
    pause = first_ms
    for ch in digits:
        if ch == ",":
            pause += comma_ms
            continue
        steps.append((pause, ch))
        pause = gap_ms
    return steps


def run_dtmf_call(
    caller: str,
    called: str,
    steps: Sequence[tuple[int, str]],
    *,
    method: str = "rfc4733",
    hold_ms: int = 20_000,
    timeout: float = 60.0,
    prefix: Sequence[str] = (),
) -> DtmfCall:
    """Place one call with ``dtmf_scenario`` and report how it went; SIPp is killed after ``timeout`` seconds.
    Raises SippError when SIPp produced no result line."""
    with tempfile.TemporaryDirectory(prefix="securelink-sipp-dtmf-") as tmp:
        tmpdir = Path(tmp)
        if method == "rfc4733":
            write_dtmf_pcaps("".join(d for _pause, d in steps), tmpdir)
        scenario_xml = dtmf_scenario(caller, called, steps, method=method, hold_ms=hold_ms, pcap_dir=tmpdir)
        scenario = tmpdir / "dtmf.xml"
        scenario.write_text(scenario_xml)
        log, rc = _run_sipp(tmpdir, [str(scenario), "-m", "1"], timeout=timeout, prefix=prefix)
        rows = _parse_log(log, "RESULT")
        if len(rows) != 1:
            raise _failed(tmpdir, f"SIPp DTMF call produced {len(rows)} results (rc={rc})")
    code, ended = rows[0]
    return DtmfCall(int(code) if code.isdigit() else None, ended)
