"""The README's install path on Debian's stock Asterisk 22 configuration, with the real Asterisk: its commands are
read from README.md and run as written, as root from /root, the service user's as that user.

A second Asterisk runs from the testbed's chroot in a network and mount namespace of this test's own (its own
loopback, so its ports do not meet the shared testbed's; its own /etc/asterisk, a copy of the stock configuration
Debian ships, bind-mounted over the chroot's). The namespace also gets its own /etc (a copy: `useradd` writes
there), /opt, /srv, /var/lib, /var/backups and /usr/local, so the README's commands change nothing of this host;
`asterisk` on the PATH runs the chroot's. The site has what any site has (Alice's desk phone 1001 and her
colleague's extension 2001; in one run its own SIP transport). Then, from the README only: the package in a venv,
the service user, `init`, `asterisk install --systemd` (systemd is not running here: the unit is written, and the
test runs its ExecStart as its User, as systemd would), the transport (when `pjsip show transports` lists none), the
`carrier` trunk, the routes, the reloads, `device add` with the desk endpoint and `doctor`: all OK, a keyed call
admitted, a forged one rejected, call-through by DTMF on the access number to 2001 as Alice. Uninstall names the
routes left and what stays, and restores every file it touched, byte for byte.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
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

from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.slk1 import derive_key, device_secret

ROOT = Path(__file__).resolve().parents[2]
CHROOT = Path(os.environ.get("SECURELINK_TESTBED_DIR", "/var/cache/asterisk-securelink/chroot"))
STOCK = CHROOT / "usr/share/doc/asterisk-config-stock"
ASTERISK = f"chroot {CHROOT} /usr/sbin/asterisk"
DID = "4930123456"  # the README's ANI route
ACCESS = "+12155550199"  # the README's access number, as the carrier delivers it
CARRIER_EXAMPLE = "203.0.113.10"  # the README's carrier address: here the SIPp "carrier" is on the loopback
BUILD_LEFTOVERS = (".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", ".demo", ".venv")
DEBIAN_ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PRIVATE = ("opt", "srv", "var/lib", "var/backups", "usr/local/bin", "usr/local/sbin")

SITE_PJSIP = """
; --- Alice's desk phone, as the site already has it ---
[1001]
type = endpoint
context = from-internal
callerid = "Alice" <1001>
disallow = all
allow = ulaw
"""
SITE_TRANSPORT = """
; --- the site's own SIP transport ---
[site-udp]
type = transport
protocol = udp
bind = 127.0.0.1:5060
"""
SITE_EXTENSIONS = """
; --- the site's internal context: a colleague's extension ---
[from-internal]
exten => 2001,1,Answer()
 same => n,Wait(2)
 same => n,Hangup()
"""


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block of the README's install section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Install on your own Asterisk") : text.index("## Troubleshooting")]
    return re.findall(r"^```(\w*)\n(.*?)^```", section, re.MULTILINE | re.DOTALL)


def block(*needles: str) -> str:
    found = [body for _, body in readme_blocks() if all(n in body for n in needles)]
    assert len(found) == 1, f"the README's install section has {len(found)} blocks with {needles}"
    return found[0]


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

    def run(
        self, *args: str | Path, check: bool = True, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [*self.prefix, *map(str, args)]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        if check:
            assert p.returncode == 0, f"{args}: {p.stdout[-2000:]}\n{p.stderr[-2000:]}"
        return p

    def start(self, *args: str | Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*self.prefix, *map(str, args)],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
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


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tree to install (a copy: pip builds in it) and the wheels of what it needs, fetched once with this host's
    network: the namespace has none, so the README's `pip install` runs with the site's own package mirror."""
    work = tmp_path_factory.mktemp("readme-install")
    src = work / "asterisk-securelink"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*BUILD_LEFTOVERS))
    wheels = work / "wheels"
    argv = [sys.executable, "-m", "pip", "download", "-q", "-d", wheels, src, "setuptools", "wheel"]
    got = subprocess.run(list(map(str, argv)), capture_output=True, text=True, timeout=600, cwd=work)
    assert got.returncode == 0, got.stderr[-3000:]
    return src, wheels


@pytest.fixture
def stock_pbx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Namespace, Path, Path]]:
    """(namespace, the Asterisk config dir, the namespace's /etc as seen from here); `request.param`: whether the
    site already has a SIP transport."""
    assert STOCK.is_dir(), f"{STOCK} missing: `make testbed` keeps Debian's stock configuration there"
    etc = tmp_path / "etc-asterisk"
    shutil.copytree(STOCK, etc, symlinks=True)
    with (etc / "pjsip.conf").open("a") as f:
        f.write(SITE_PJSIP + (SITE_TRANSPORT if request.param else ""))
    with (etc / "extensions.conf").open("a") as f:
        f.write(SITE_EXTENSIONS)
    host_etc = tmp_path / "root-etc"
    shutil.copytree("/etc", host_etc, symlinks=True, ignore_dangling_symlinks=True)
    (host_etc / "asterisk").mkdir(exist_ok=True)
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
        # the host as the README's administrator finds it, private to the namespace
        opt = tmp_path / "host-opt"
        for d in PRIVATE:
            (tmp_path / f"host-{d.replace('/', '-')}").mkdir(exist_ok=True)
        for d in PRIVATE:
            ns.run("mount", "--bind", tmp_path / f"host-{d.replace('/', '-')}", f"/{d}")
        ns.run("mount", "--bind", host_etc, "/etc")
        ns.run("mount", "--bind", etc, "/etc/asterisk")
        wrapper = tmp_path / "host-usr-local-sbin" / "asterisk"
        wrapper.write_text(f'#!/bin/sh\nexec {ASTERISK} "$@"\n')
        wrapper.chmod(0o755)
        assert opt.is_dir()
        asterisk = ns.start(*ASTERISK.split(), "-f", "-n", "-U", "root", "-G", "root", log=tmp_path / "asterisk.log")
        wait_until(
            lambda: ns.run(*ASTERISK.split(), "-rx", "core waitfullybooted", check=False, timeout=30).returncode == 0,
            60,
            "the stock Asterisk to boot",
        )
        yield ns, etc, host_etc
    finally:
        if asterisk is not None:
            ns.run(*ASTERISK.split(), "-rx", "core stop now", check=False, timeout=30)
            stop_process(asterisk)
        ns.close()


class Admin:
    """The README's administrator: a root shell in /root on the PBX (the namespace), with the site's package mirror."""

    def __init__(self, ns: Namespace, wheels: Path, exports: str = "") -> None:
        self.ns = ns
        self.exports = exports
        self.env = {"PATH": DEBIAN_ROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "PIP_NO_INDEX": "1",
                    "PIP_FIND_LINKS": str(wheels), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # fmt: skip

    def sh(
        self, script: str, *, check: bool = True, timeout: float = 600, answer: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `script`; with `answer`, at a terminal (util-linux `script`) that types `answer` when asked."""
        if answer is not None:
            script = f"printf '{answer}\\n' | script -qec {shlex.quote(script)} /dev/null"
        p = self.ns.run("sh", "-ec", f"cd /root\n{self.exports}{script}", check=False, timeout=timeout, env=self.env)
        if check:
            assert p.returncode == 0, f"{script}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        return p


def unit_fields(unit: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in unit.read_text().splitlines() if re.match(r"^[A-Z]\w*=", line))


@pytest.mark.parametrize(
    ("stock_pbx", "layout"),
    [(False, "standard"), (True, "state-dir")],
    ids=["stock-no-transport", "own-transport-state-dir"],
    indirect=["stock_pbx"],
)
def test_the_readme_install_path_on_stock_asterisk_admits_a_keyed_call(
    stock_pbx: tuple[Namespace, Path, Path], layout: str, wheelhouse: tuple[Path, Path], tmp_path: Path
) -> None:
    ns, etc, host_etc = stock_pbx
    src, wheels = wheelhouse
    install_block = block("useradd", "asterisk install --systemd", "/etc/securelink").replace(
        "/path/to/asterisk-securelink", str(src)
    )
    if layout == "standard":
        admin, user = Admin(ns, wheels), "securelink"
        steps = install_block
        conf = host_etc / "securelink" / "securelink.toml"
        ns_conf = "/etc/securelink/securelink.toml"
    else:  # the package as above, then the README's "another folder or user"
        custom = block("--state-dir", "export SECURELINK_CONFIG=")
        exports = "".join(line + "\n" for line in custom.splitlines() if line.startswith("export "))
        admin, user = Admin(ns, wheels, exports), re.search(r"runuser -u (\S+)", custom).group(1)  # type: ignore[union-attr]
        package = [line for line in install_block.splitlines() if line.startswith(("python3 -m venv", "ln -s"))]
        steps = "\n".join([*package, *(line for line in custom.splitlines() if not line.startswith("export "))])
        ns_conf = re.search(r"SECURELINK_CONFIG=(\S+)", custom).group(1)  # type: ignore[union-attr]
        conf = tmp_path / "host-srv" / Path(ns_conf).relative_to("/srv")
    *before, install_line = steps.rstrip("\n").splitlines()
    assert "asterisk install --systemd" in install_line
    admin.sh("\n".join(before))
    site_files = snapshot(etc)
    dry = admin.sh(install_line + " --dry-run")
    assert "+#tryinclude securelink/" in dry.stdout and snapshot(etc) == site_files  # the diff; nothing changed
    installed = admin.sh(install_line, timeout=180, answer="y")  # "apply these changes? [y/N]"
    out = installed.stdout.replace("\r\n", "\n")
    assert f"doctor (as {user}, the owner of " in out and "[ok  ] master key" in out, out  # not root's FAIL
    assert "the units are written to /etc/systemd/system, not started" in out
    again = admin.sh(install_line, timeout=180, answer="n")
    assert "nothing to change" in again.stdout, again.stdout

    unit = unit_fields(host_etc / "systemd/system/securelink.service")
    assert unit["User"] == user and unit["Group"] == user
    # the venv's own script (root's, writable by root only), not the /usr/local/bin link PATH finds; sandboxed
    venv = re.search(r"python3 -m venv (\S+)", install_block).group(1)  # type: ignore[union-attr]
    assert unit["ExecStart"] == f"{venv}/bin/securelink run"
    assert unit["CapabilityBoundingSet"] == "" and unit["SystemCallFilter"] == "@system-service"
    assert unit["MemoryDenyWriteExecute"] == "yes" and unit["LimitNOFILE"] == "65536"
    assert unit["Environment"] == f"SECURELINK_CONFIG={ns_conf}"
    if layout == "state-dir":
        state = re.search(r"--state-dir (\S+)", block("--state-dir")).group(1)  # type: ignore[union-attr]
        assert unit["WorkingDirectory"] == state and unit["ReadWritePaths"] == state
        assert (tmp_path / "host-srv" / Path(state).relative_to("/srv") / "securelink.sqlite3").is_file()
        assert not (conf.parent / "securelink.sqlite3").exists()
    else:
        assert unit["WorkingDirectory"] == "/var/lib/securelink" == unit["ReadWritePaths"]
    with conf.open("a") as f:  # the README: list the access number in securelink.toml
        f.write(f'\n[calling]\naccess_numbers = ["{ACCESS}"]\n')

    # the transport when there is none, the carrier trunk, the routes, the reloads: as the README shows them
    pasted = {"pjsip.conf": "", "extensions.conf": ""}
    transports = admin.sh("asterisk -rx 'pjsip show transports'").stdout
    if "No objects found" in transports:
        assert layout == "standard"
        pasted["pjsip.conf"] += "\n" + block("type = transport")
    else:
        assert "site-udp" in transports
    pasted["pjsip.conf"] += "\n" + block("type = identify").replace(CARRIER_EXAMPLE, "127.0.0.1")
    pasted["extensions.conf"] += "\n" + block("[from-carrier]", "Goto(securelink-access")
    for name, text in pasted.items():
        with (etc / name).open("a") as f:
            f.write(text)
    admin.sh(block("dialplan reload", "res_pjsip"))

    # systemd is not running here: what the unit would run, as its user, in its folder
    log = tmp_path / "run.log"
    service = f"cd {unit['WorkingDirectory']} && export {unit['Environment']} && exec {unit['ExecStart']}"
    app = ns.start("runuser", "-u", unit["User"], "-g", unit["Group"], "--", "sh", "-c", service, log=log,
                   env=admin.env)  # fmt: skip
    try:
        enroll = block("device add", "--desk-endpoint PJSIP/1001", "doctor").replace("-u securelink", f"-u {user}")
        doctor = next(line for line in enroll.splitlines() if line.endswith(" doctor"))
        wait_until(lambda: admin.sh(doctor, check=False).returncode == 0, 30, "the README's doctor to pass")
        enrolled = admin.sh(enroll)
        lines = [line for line in enrolled.stdout.splitlines() if line.startswith("[")]
        assert lines and all(line.startswith("[ok  ]") for line in lines), enrolled.stdout  # all OK, not a warning
        uri = re.search(r"securelink://provision\?\S+", enrolled.stdout).group(0)  # type: ignore[union-attr]
        assert "\u2588" in admin.sh(f"securelink-device qr '{uri}'").stdout  # on the PATH, a QR code to scan

        listed = admin.sh(f"runuser -u {user} -- securelink device list --json").stdout
        [dev] = json.loads(listed)
        master = base64.b64decode((conf.parent / "master.key").read_bytes().strip())

        def key_now(ahead: int = 0) -> str:
            now = time.time()
            if 30 - now % 30 < 3:
                time.sleep(30 - now % 30 + 0.1)
            epoch = int(time.time() // 30) + ahead
            return derive_key(device_secret(master, dev["key_id"]), "inbound", epoch, NumberFormat("XXXXXXXXXX"))

        results = run_uac([(key_now(), DID), ("15550100001", DID)], rate=1, concurrency=1, prefix=ns.prefix)
        # the genuine key is admitted (its first call: it registers the device); the real number, forged, is not
        assert [r.status_code for r in results] == [200, 403], results
        # call-through from any phone: the access number, KEY#2001#. The ANI call spent this window's key: the
        # phone's next key (look_ahead 1) is a fresh one
        steps_dtmf = dtmf_steps(key_now(ahead=1) + "#2001#", first_ms=800, gap_ms=200)
        call = run_dtmf_call("15550100001", ACCESS, steps_dtmf, hold_ms=20_000, prefix=ns.prefix)
        assert call == DtmfCall(200, "pbx")  # answered, put through to 2001 as Alice, which hung up after 2 s
        through: list[dict[str, object]] = []

        def recorded() -> bool:  # written when the call's channel is gone
            rows = json.loads(admin.sh(f"runuser -u {user} -- securelink calls list --json").stdout)
            through[:] = [r for r in rows if r["method"] == "dtmf"]
            return bool(through)

        wait_until(recorded, 15, "the call-through's record")
        assert [(r["destination"], r["verdict"]) for r in through] == [("2001", "admitted")], through
    finally:
        stop_process(app)
    assert "Traceback" not in log.read_text()

    uninstall = install_line.replace("asterisk install --systemd", "asterisk uninstall")  # the README's uninstall
    removed = admin.sh(uninstall, timeout=180, answer="y")
    out = removed.stdout.replace("\r\n", "\n")
    assert "such a call gets 603 Decline" in out and "Goto(securelink-access,${EXTEN},1)" in out, out
    assert "left in place, yours to keep or remove:" in out and f"the service user {user}" in out
    assert not (host_etc / "systemd/system/securelink.service").exists()
    expected = dict(site_files)
    for name, text in pasted.items():
        data, mode = expected[name]
        expected[name] = (data + text.encode(), mode)
    assert snapshot(etc) == expected  # byte for byte, modes included, securelink/ gone, the admin's pastes kept
