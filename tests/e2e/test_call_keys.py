"""Per-call keys on the real Asterisk: escrowed before the legs ring, the key id on every channel, the key itself
only on a TLS leg (X-SecureLink-Call-Key), never on a UDP one; the escrow opens it; the database alone does not.

The mobile is `PJSIP/{number}@carrier-tls` (testbed pjsip.conf: transport-tls to 127.0.0.1:5071). Debian's SIPp has no
TLS, so stunnel terminates TLS on 5071 and hands the plain SIP to a SIPp UAS over TCP on 5072. The desk phone
(PJSIP/desk1001) stays on UDP: a fork call rings both, so one call shows both transports.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Home, fresh_window, new_home, no_channels_left, start_app, stop_app, wait_until
from sipp import SCENARIO_DIR, UasProcess, _parse_log, referenced, run_uac

from testbed import ari_get

TLS_PORT, PLAIN_PORT = 5071, 5072
CALLER = "15557770001"
KEY_VAR = "SECURELINK_CALL_KEY_ID"


def key_logging(src: str, dest: Path, contact: str | None = None) -> Path:
    """A copy of a UAS scenario that also logs `KEY|<call>|<X-SecureLink-Call-Key value or empty>`."""
    text = (SCENARIO_DIR / src).read_text()
    text = text.replace(
        '<log message="INVITE|',
        '<ereg regexp="([A-Za-z0-9_-]+)" search_in="hdr" header="X-SecureLink-Call-Key:" assign_to="k0,ckey"/>\n'
        '      <log message="KEY|[call_number]|[$ckey]"/>\n      <log message="INVITE|',
        1,
    )
    text = referenced(text, "k0")
    if contact is not None:  # behind stunnel: the PBX must come back over TLS, not to SIPp's own TCP port
        text = text.replace("Contact: <sip:[local_ip]:[local_port];transport=[transport]>", f"Contact: <{contact}>")
    assert "KEY|" in text and "k0" in text
    dest.write_text(text)
    return dest


def header_keys(uas: UasProcess) -> list[str]:
    return [row[1] for row in _parse_log(uas._dir / "uas.log", "KEY")] if uas._tmp else []


def long_hold_uac(dest: Path) -> Path:
    """The standard UAC, holding the answered call 2.5 s (instead of 200 ms) so its channels can be inspected."""
    text = (SCENARIO_DIR / "uac.xml").read_text()
    assert 'timeout="200" ontimeout="sendbye"' in text
    dest.write_text(text.replace('timeout="200" ontimeout="sendbye"', 'timeout="2500" ontimeout="sendbye"'))
    return dest


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def stunnel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    exe = shutil.which("stunnel4") or shutil.which("stunnel")
    assert exe, "stunnel is needed for the TLS leg (scripts/bootstrap installs stunnel4)"
    d = tmp_path_factory.mktemp("stunnel")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-keyout", str(d / "tls.key"), "-out", str(d / "tls.crt")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    (d / "stunnel.conf").write_text(
        f"foreground = yes\npid =\noutput = {d / 'stunnel.log'}\n[sip]\naccept = 127.0.0.1:{TLS_PORT}\n"
        f"connect = 127.0.0.1:{PLAIN_PORT}\ncert = {d / 'tls.crt'}\nkey = {d / 'tls.key'}\n"
    )
    proc = subprocess.Popen([exe, str(d / "stunnel.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: listening(TLS_PORT), 10, "stunnel to listen")
        yield
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    h = new_home(tmp_path_factory.mktemp("securelink-callkeys"))
    h.cli("escrow", "keygen", "--private-key", "escrow.key", "--public-key", "escrow.pub")
    with (h.path / "securelink.toml").open("a") as f:
        f.write('[outbound]\nendpoint = "PJSIP/{number}@carrier-tls"\nring_timeout = 8\n')
        f.write('[escrow]\npublic_key_file = "escrow.pub"\n')
    yield h
    for p in h.procs:
        h.stop(p)


class VarWatch:
    """Polls ARI while a call runs: SECURELINK_CALL_KEY_ID of every channel seen."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for ch in ari_get("/channels"):
                    if ch["id"] not in self.values and ch["state"] == "Up":
                        got = ari_get(f"/channels/{ch['id']}/variable?variable={KEY_VAR}")
                        if got.get("value"):
                            self.values[ch["id"]] = got["value"]
            except Exception:  # noqa: BLE001, S110 - a channel may go between the two requests; poll again
                pass
            time.sleep(0.1)

    def __enter__(self) -> VarWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_call_key_only_on_the_tls_leg_escrowed_and_on_both_channels(home: Home, stunnel: None, tmp_path: Path) -> None:
    run, agi = start_app(home, agi=False)
    try:
        dev = json.loads(
            home.cli(
                "device", "add", "Keys", "--number", "+15550200001", "--desk-endpoint", "PJSIP/desk1001", "--json"
            ).stdout
        )
        home.cli("device", "register", str(dev["id"]))
        mobile_sf = key_logging("uas.xml", tmp_path / "uas_tls.xml", contact=f"sip:127.0.0.1:{TLS_PORT};transport=tls")
        desk_sf = key_logging("uas_noanswer.xml", tmp_path / "uas_desk.xml")
        fresh_window()
        with (
            UasProcess(PLAIN_PORT, mode="answer", transport="t1", scenario=mobile_sf, ring_ms=500) as mobile,
            UasProcess(5080, mode="noanswer", scenario=desk_sf) as desk,
            VarWatch() as watch,
        ):
            (result,) = run_uac([(CALLER, f"5{dev['id']}")], scenario=long_hold_uac(tmp_path / "uac.xml"), timeout=30)
            assert result.status_code == 200
            wait_until(lambda: len(header_keys(desk)) == 1, 5, "the desk INVITE")
            mobile_keys, desk_keys = header_keys(mobile), header_keys(desk)
        no_channels_left()
    finally:
        stop_app(home, run, agi)

    assert desk_keys == [""]  # the UDP leg never carries the key
    (sent,) = mobile_keys
    assert len(base64.urlsafe_b64decode(sent + "=")) == 32  # the TLS leg does
    (row,) = json.loads(home.cli("escrow", "list", "--json").stdout)
    assert row["device"] == dev["id"]
    # the key id was on the caller's channel and on the mobile leg while they were bridged
    ids = {cid: v for cid, v in watch.values.items()}
    callers = [v for cid, v in ids.items() if not cid.startswith("slk-")]
    legs = [v for cid, v in ids.items() if cid.endswith("-mobile")]
    assert callers == [row["key_id"]] and legs == [row["key_id"]], ids
    # the escrow private key opens it, and it is the key the TLS leg received
    opened = json.loads(
        home.cli(
            "escrow", "decrypt", row["call_id"], "--private-key", "escrow.key", "--reason", "e2e test", "--json"
        ).stdout
    )
    key = bytes.fromhex(opened[0]["key"])
    assert base64.urlsafe_b64encode(key).rstrip(b"=").decode() == sent
    # the database alone holds no plaintext key, in any encoding
    db = (home.path / "securelink.sqlite3").read_bytes()
    assert key not in db and key.hex().encode() not in db and sent.encode() not in db
    # one call record: both legs, the TLS mobile answered, the desk was cancelled as answered elsewhere
    (rec,) = [r for r in json.loads(home.cli("calls", "list", "--json").stdout) if r["call_id"] == row["call_id"]]
    assert rec["answered_by"] == "PJSIP/+15550200001@carrier-tls"
    outcomes: dict[str, Any] = {leg["role"]: leg["outcome"] for leg in rec["legs"]}
    assert outcomes == {"mobile": "answered", "desk": "answered_elsewhere"}
    assert "e2e test" in json.dumps(home.audit("escrow.decrypt"))
