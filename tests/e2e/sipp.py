"""SIPp helpers for the end-to-end tests against the Asterisk testbed.

* ``run_uac(calls)`` places one INVITE per ``(caller, called)`` pair at Asterisk
  (127.0.0.1:5060) with ``tests/sipp/uac.xml`` and returns the final SIP status
  code of each call.  ``caller=""`` makes an anonymous call
  (From ``"Anonymous" <sip:anonymous@anonymous.invalid>``, no P-Asserted-Identity).
* ``UasProcess`` runs a SIPp UAS (``tests/sipp/uas*.xml``) on a port, e.g. 5070
  (the ``carrier`` AOR) or 5080 (``desk1001``), and exposes the INVITEs it saw.

Results are read from SIPp's ``<log>`` action output (``-trace_logs -log_file``):
``uac.xml`` logs ``RESULT|call_number|caller|called|code`` once per call and the
UAS scenarios log ``INVITE|call_number|from_user|pai_user|code`` per INVITE
(SIPp flushes these lines immediately, so a running UAS can be polled).

SIPp runs without a terminal (``-nostdin``, stdout to a file), so this works
under pytest and in CI.  Every SIPp process is bounded by a timeout and killed
on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
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
        log = tmpdir / "results.log"
        out = tmpdir / "sipp.out"
        cmd = [
            *prefix,
            SIPP,
            target,
            "-sf",
            str(scenario),
            "-inf",
            str(csv),
            "-m",
            str(len(calls)),
            "-r",
            str(rate),
            "-l",
            str(concurrency),
            "-i",
            LOCAL_IP,
            "-mi",
            LOCAL_IP,
            "-p",
            "0",  # any free local port (so several SIPp can run at once)
            "-mp",
            str(_free_udp_port()),
            "-nostdin",
            "-trace_logs",
            "-log_file",
            str(log),
            "-trace_err",
            "-error_file",
            str(tmpdir / "errors.log"),
            "-timeout",
            f"{int(timeout)}s",
        ]
        with out.open("wb") as fh:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=tmpdir,
                start_new_session=True,
            )
            try:
                proc.wait(timeout=timeout + 10)
            except subprocess.TimeoutExpired:
                pass
            finally:
                _kill(proc)
        rows = _parse_log(log, "RESULT")
        by_index: dict[int, int | None] = {}
        for call_number, _caller, _called, code in rows:
            by_index[int(call_number) - 1] = int(code) if code.isdigit() else None
        if len(by_index) != len(calls):
            tail = out.read_text(errors="replace")[-2000:]
            errs = (
                (tmpdir / "errors.log").read_text(errors="replace")[-2000:] if (tmpdir / "errors.log").exists() else ""
            )
            raise SippError(
                f"SIPp produced {len(by_index)} of {len(calls)} results (rc={proc.returncode})\n"
                f"--- sipp output ---\n{tail}\n--- sipp errors ---\n{errs}"
            )
    # SIPp numbers calls 1..n in the order it reads the SEQUENTIAL CSV.
    return [CallResult(caller, called, by_index[i]) for i, (caller, called) in enumerate(calls)]


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
        """INVITEs received so far (also available after ``stop()``)."""
        if self._tmp is None:
            return list(getattr(self, "_last_invites", []))
        rows = _parse_log(self._dir / "uas.log", "INVITE")
        return [UasInvite(from_user=f, pai_user=p, response=int(c)) for _n, f, p, c in rows]

    def wait_for_invites(self, count: int = 1, timeout: float = 10.0) -> list[UasInvite]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.invites()
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


@contextlib.contextmanager
def uas(port: int = 5070, **kwargs: object) -> Iterator[UasProcess]:
    """Functional spelling of ``with UasProcess(port, ...)``."""
    proc = UasProcess(port, **kwargs)  # type: ignore[arg-type]
    with proc:
        yield proc
