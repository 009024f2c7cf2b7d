"""`securelink asterisk install` on Debian's stock Asterisk 22 configuration, with the real Asterisk.

A second Asterisk runs from the testbed's chroot in a network and mount namespace of this test's own (its own
loopback, so its ports do not meet the shared testbed's; its own /etc/asterisk, a copy of the stock configuration
Debian ships, bind-mounted over the chroot's). The admin adds what any site has (a SIP transport, a trunk and the
route of a DID to the entry context), then: dry run changes nothing; install; a second install is a no-op; the real
Asterisk reloads; `securelink doctor` is all OK; a keyed SIPp call is admitted and a forged one rejected; uninstall
leaves every file as it was, byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import stop_process, wait_until
from sipp import DtmfCall, dtmf_steps, run_dtmf_call, run_uac

from asterisk_securelink import masterkey
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.slk1 import derive_key, device_secret

CHROOT = Path(os.environ.get("SECURELINK_TESTBED_DIR", "/var/cache/asterisk-securelink/chroot"))
STOCK = CHROOT / "usr/share/doc/asterisk-config-stock"
ASTERISK = f"chroot {CHROOT} /usr/sbin/asterisk"
DID = "4930123456"
ACCESS = "12155550199"  # the access number, as the carrier delivers it (the README: "route your calls")

ADMIN_PJSIP = """
; --- the site's own SIP setup (not securelink's) ---
[transport-udp]
type = transport
protocol = udp
bind = 127.0.0.1:5060

[carrier]
type = endpoint
transport = transport-udp
context = from-carrier
disallow = all
allow = ulaw
trust_id_inbound = yes
dtmf_mode = auto

[carrier]
type = identify
endpoint = carrier
match = 127.0.0.1

; --- Alice's desk phone, as the site already has it ---
[1001]
type = endpoint
context = from-internal
callerid = "Alice" <1001>
disallow = all
allow = ulaw
"""

ADMIN_EXTENSIONS = f"""
; --- the site's trunk context: the mobile-access DID must present a live key; the access number for any phone ---
[from-carrier]
exten => {DID},1,Goto(securelink-inbound,${{EXTEN}},1)
exten => {ACCESS},1,Goto(securelink-access,+{ACCESS},1)

; --- the site's internal context: a colleague's extension ---
[from-internal]
exten => 2001,1,Answer()
 same => n,Wait(2)
 same => n,Hangup()
"""


class Namespace:
    """A process holding a private network + mount namespace; `run` executes a command inside it."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sleep", "3600"], start_new_session=True
        )
        self.prefix = ["nsenter", f"--target={self.holder.pid}", "--net", "--mount"]
        wait_until(lambda: self._ready(), 10, "the namespace")

    def _ready(self) -> bool:
        ns = Path(f"/proc/{self.holder.pid}/ns/net")
        return ns.exists() and os.readlink(ns) != os.readlink("/proc/self/ns/net")

    def run(self, *args: str | Path, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([*self.prefix, *map(str, args)], capture_output=True, text=True, timeout=timeout)
        if check:
            assert p.returncode == 0, f"{args}: {p.stdout[-2000:]}\n{p.stderr[-2000:]}"
        return p

    def start(self, *args: str | Path, log: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*self.prefix, *map(str, args)], stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def close(self) -> None:
        os.killpg(self.holder.pid, signal.SIGKILL)
        self.holder.wait(timeout=10)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture
def stock_pbx(tmp_path: Path) -> Iterator[tuple[Namespace, Path]]:
    assert STOCK.is_dir(), f"{STOCK} missing: `make testbed` keeps Debian's stock configuration there"
    etc = tmp_path / "etc-asterisk"
    shutil.copytree(STOCK, etc, symlinks=True)
    with (etc / "pjsip.conf").open("a") as f:
        f.write(ADMIN_PJSIP)
    with (etc / "extensions.conf").open("a") as f:
        f.write(ADMIN_EXTENSIONS)
    ns = Namespace()
    asterisk: subprocess.Popen[bytes] | None = None
    try:
        ns.run("ip", "link", "set", "lo", "up")
        mounts = {"etc/asterisk": etc}
        for d in ("var/lib/asterisk", "var/spool/asterisk", "var/log/asterisk", "run/asterisk"):
            private = tmp_path / d.replace("/", "-")
            if (CHROOT / d).is_dir():
                shutil.copytree(CHROOT / d, private, symlinks=True, ignore=shutil.ignore_patterns("*.ctl", "*.pid"))
            private.mkdir(exist_ok=True)
            mounts[d] = private
        for d, src in mounts.items():
            ns.run("mount", "--bind", src, CHROOT / d)
        asterisk = ns.start(*ASTERISK.split(), "-f", "-n", "-U", "root", "-G", "root", log=tmp_path / "asterisk.log")
        wait_until(
            lambda: ns.run(*ASTERISK.split(), "-rx", "core waitfullybooted", check=False, timeout=30).returncode == 0,
            60,
            "the stock Asterisk to boot",
        )
        yield ns, etc
    finally:
        if asterisk is not None:
            ns.run(*ASTERISK.split(), "-rx", "core stop now", check=False, timeout=30)
            stop_process(asterisk)
        ns.close()


def test_install_on_stock_asterisk_admits_a_keyed_call_and_uninstall_restores_every_file(
    stock_pbx: tuple[Namespace, Path], tmp_path: Path
) -> None:
    ns, etc = stock_pbx
    conf = tmp_path / "securelink" / "securelink.toml"
    env = [sys.executable, "-m", "asterisk_securelink.cli", "--config", conf]
    ns.run(*env, "init", "--state-dir", tmp_path / "state")
    with conf.open("a") as f:  # the README: list the access number in securelink.toml
        f.write(f'\n[calling]\naccess_numbers = ["+{ACCESS}"]\n')
    admin_files = snapshot(etc)
    common = ["--etc", CHROOT / "etc/asterisk", "--asterisk", ASTERISK, "--backup-dir", tmp_path / "backups"]

    dry = ns.run(*env, "asterisk", "install", *common, "--dry-run")
    assert "+#tryinclude securelink/" in dry.stdout  # the exact diff of what it would add
    assert snapshot(etc) == admin_files  # and nothing changed

    ns.run(*env, "asterisk", "install", *common, "--yes", timeout=180)
    installed = snapshot(etc)
    assert any(name.startswith("securelink/") for name in installed)
    for name in ("ari.conf", "manager.conf", "extensions.conf"):
        assert installed[name][0].startswith(admin_files[name][0])  # the admin's lines untouched, one line appended
    again = ns.run(*env, "asterisk", "install", *common, "--yes", timeout=180)
    assert snapshot(etc) == installed
    assert "nothing to do" in again.stdout.lower() or "already installed" in again.stdout.lower(), again.stdout

    log = tmp_path / "run.log"
    app = ns.start(*env, "run", log=log)
    try:

        def doctor_ok() -> bool:
            p = ns.run(*env, "doctor", "--json", check=False, timeout=60)
            return p.returncode == 0

        wait_until(doctor_ok, 30, "doctor to be all OK")
        checks = json.loads(ns.run(*env, "doctor", "--json").stdout)
        assert all(c["ok"] for c in checks), checks  # every check OK, not even a warning

        dev = json.loads(ns.run(*env, "device", "add", "Alice", "--number", "+15550100001", "--desk-endpoint",
                                "PJSIP/1001", "--json").stdout)  # fmt: skip
        ns.run(*env, "device", "register", str(dev["id"]))
        master = masterkey.load(conf.parent / "master.key")

        def key_now(ahead: int = 0) -> str:
            now = time.time()
            if 30 - now % 30 < 3:
                time.sleep(30 - now % 30 + 0.1)
            epoch = int(time.time() // 30) + ahead
            return derive_key(device_secret(master, dev["key_id"]), "inbound", epoch, NumberFormat("XXXXXXXXXX"))

        results = run_uac([(key_now(), DID), ("15550100001", DID)], rate=1, concurrency=1, prefix=ns.prefix)
        # the genuine key is admitted; the employee's real number, forged, is not
        assert [r.status_code for r in results] == [200, 403], results
        # call-through from any phone: the access number, KEY#2001#, on to the desk's colleague as Alice. The ANI
        # call spent this window's key: the phone's next key (look_ahead 1) is a fresh one
        steps = dtmf_steps(key_now(ahead=1) + "#2001#", first_ms=800, gap_ms=200)
        call = run_dtmf_call("15550100001", ACCESS, steps, hold_ms=20_000, prefix=ns.prefix)
        assert call == DtmfCall(200, "pbx")  # answered, put through to 2001, which hung up after 2 s
        through: list[dict[str, object]] = []

        def recorded() -> bool:  # written when the call's channel is gone
            rows = json.loads(ns.run(*env, "calls", "list", "--json", "--device", str(dev["id"])).stdout)
            through[:] = [r for r in rows if r["method"] == "dtmf"]
            return bool(through)

        wait_until(recorded, 15, "the call-through's record")
        assert [(r["destination"], r["verdict"]) for r in through] == [("2001", "admitted")], through
    finally:
        stop_process(app)
    assert "Traceback" not in log.read_text()

    ns.run(*env, "asterisk", "uninstall", *common, "--yes", timeout=180)
    assert snapshot(etc) == admin_files  # byte for byte, modes included, securelink/ gone
