"""L3: the systemd unit `asterisk install --systemd` writes runs this installation's own `securelink` script (never
what a PATH lookup finds), only when nobody but root may change it, and with the sandbox's hardening directives."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from asterisk_securelink.installer import resources, systemd
from asterisk_securelink.installer.plan import Refused

HARDENING = {
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "NoNewPrivileges": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "SystemCallFilter": "@system-service",
    "SystemCallArchitectures": "native",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "LimitNOFILE": "65536",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "UMask": "0077",
}


def fields(text: str) -> dict[str, str]:
    """The [Service] section's `Key=value` lines (a key given twice: an error here, systemd would merge them)."""
    section = text.split("[Service]\n", 1)[1].split("\n[", 1)[0]
    out: dict[str, str] = {}
    for line in section.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert key not in out, f"{key} given twice"
            out[key] = value
    return out


def script(folder: Path, name: str = "securelink") -> Path:
    """A root-owned 0755 console script in `folder` (made 0755, root's), its `#!` naming this host's /bin/sh."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_the_unit_runs_this_installations_script_not_the_one_path_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evil = tmp_path / "world"
    script(evil).parent.chmod(0o777)  # a world-writable PATH entry first: `which securelink` answers this one
    monkeypatch.setenv("PATH", f"{evil}:{os.environ['PATH']}")
    assert shutil.which("securelink") == str(evil / "securelink")
    installed = systemd.installed_command()
    assert installed != evil / "securelink" and installed.is_file()
    # what pip recorded for this distribution; a checkout's own metadata (an editable install's egg-info) records no
    # files, and then the scripts folder of this Python
    assert installed == (systemd.recorded_script() or systemd._in_scripts_dir())
    # the script's `#!` names this interpreter: the unit runs the code of this installation
    assert os.path.realpath(systemd._interpreter(installed)[0]) == os.path.realpath(sys.executable)
    service = systemd.Service(str(installed), Path("/etc/securelink/securelink.toml"))
    for name in ("securelink.service", "securelink-agi.service"):
        unit = fields(systemd.unit_text(name, service).decode())
        assert unit["ExecStart"] == f"{installed} {'run' if name == 'securelink.service' else 'agi'}"


def test_a_script_or_folder_others_may_change_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    good = script(tmp_path / "venv" / "bin")
    systemd.check_trusted(good)  # root's, 0755 all the way up (/tmp is sticky: allowed)
    for change, why in (
        (lambda: good.chmod(0o775), f"{good} may be changed by its group"),
        (lambda: good.chmod(0o757), f"{good} may be changed by everyone"),
        (lambda: good.parent.chmod(0o775), f"{good.parent} may be changed by its group"),
        (lambda: good.parent.parent.chmod(0o777), f"{good.parent.parent} may be changed by everyone"),
        (lambda: os.chown(good, 65534, -1), f"{good} may be changed by its owner (uid 65534"),
        (lambda: os.chown(good.parent, 65534, -1), f"{good.parent} may be changed by its owner (uid 65534"),
    ):
        change()
        with pytest.raises(Refused) as refused:
            systemd.check_trusted(good)
        assert f"the unit would run {good}, but {why}" in str(refused.value)
        assert "chown root, chmod go-w" in str(refused.value)
        shutil.rmtree(tmp_path / "venv")
        script(good.parent)  # the same path, sound again
    interpreter = script(tmp_path / "python", "python3")
    good.write_text(f"#!{interpreter}\n")
    systemd.check_trusted(good)
    interpreter.chmod(0o777)  # the interpreter the script names is run too
    with pytest.raises(Refused, match=f"but {interpreter} may be changed by everyone"):
        systemd.check_trusted(good)
    interpreter.chmod(0o755)
    link = tmp_path / "links" / "securelink"
    script(link.parent).unlink()
    link.symlink_to(good)
    systemd.check_trusted(link)  # a link in a sound folder to a sound script
    link.parent.chmod(0o777)  # anyone may now swap the link itself
    with pytest.raises(Refused, match=f"but {link.parent} may be changed by everyone"):
        systemd.check_trusted(link)
    good.parent.chmod(0o777)
    link.parent.chmod(0o755)  # the link is sound, where it leads is not
    with pytest.raises(Refused, match=f"but {good.parent} may be changed by everyone"):
        systemd.check_trusted(link)


def test_install_refuses_a_script_others_may_change_and_writes_no_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = script(tmp_path / "bin")
    bad.parent.chmod(0o777)
    monkeypatch.setattr(systemd, "recorded_script", lambda: bad)
    with pytest.raises(Refused, match=f"the unit would run {bad}, but {bad.parent} may be changed by everyone"):
        systemd.installed_command()
    monkeypatch.setattr(systemd, "recorded_script", lambda: None)
    monkeypatch.setattr(systemd, "_in_scripts_dir", lambda: None)
    with pytest.raises(Refused, match="this installation has no `securelink` command"):
        systemd.installed_command()


def test_the_units_carry_the_hardening_and_systemd_accepts_them(tmp_path: Path) -> None:
    installed = systemd.installed_command()
    service = systemd.Service(str(installed), Path("/etc/securelink/securelink.toml"), state=Path("/srv/sl/state"))
    for name in resources.names("systemd", ".service"):
        text = systemd.unit_text(name, service).decode()
        unit = fields(text)
        assert {k: unit.get(k) for k in HARDENING} == HARDENING, name
        assert unit["ReadWritePaths"] == "/srv/sl/state" and unit["User"] == "securelink"
        (tmp_path / name).write_text(text)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # no systemd here: the parse above is the check
        return
    units = [str(tmp_path / name) for name in resources.names("systemd", ".service")]
    verify = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=60)
    # an unknown or misspelt directive is only a warning there ("Unknown key ..., ignoring"): none is allowed
    assert verify.returncode == 0 and verify.stderr == "" and verify.stdout == "", verify.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", units[1]], capture_output=True, text=True, timeout=60
    )
    assert security.returncode == 0, security.stderr
    level = float(security.stdout.rsplit("Overall exposure level for securelink.service: ", 1)[1].split()[0])
    assert level <= 3.0, security.stdout[-2000:]  # 8.5 "EXPOSED" before the hardening


MDWE_CHILD = textwrap.dedent(
    """
    import asyncio, ctypes, mmap, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN: Linux 6.3
        sys.exit(3)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("a writable and executable mapping was allowed")
    except OSError:
        pass
    from datetime import UTC, datetime
    from aiohttp import ClientSession, web
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    import asterisk_securelink.app, asterisk_securelink.cli, asyncpg
    from asterisk_securelink.callkeys import escrow

    private = X25519PrivateKey.generate()
    binding = escrow.RowBinding("k", "c", 1, "inbound", datetime.now(UTC), escrow.key_version(private.public_key()))
    key = escrow.new_call_key()
    assert escrow.open_sealed(escrow.seal(key, private.public_key(), binding), private, binding) == key
    assert ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)(41) == 42  # a libffi closure

    async def main():
        engine = create_async_engine("sqlite+aiosqlite://")
        async with engine.connect() as conn:  # SQLAlchemy's greenlet bridge
            assert (await conn.execute(text("select 42"))).scalar() == 42
        await engine.dispose()
        app = web.Application()
        app.router.add_get("/", lambda request: web.Response(text="ok"))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        async with ClientSession() as http, http.get(f"http://localhost:{port}/") as answer:
            assert await answer.text() == "ok"
        await runner.cleanup()

    asyncio.run(main())
    print("ok")
    """
)


def test_the_service_stack_runs_without_writable_executable_memory() -> None:
    """MemoryDenyWriteExecute=yes: the crypto (cryptography), the database (SQLAlchemy's greenlet, aiosqlite),
    aiohttp, asyncpg's import and a libffi callback work with W^X enforced by the kernel (PR_SET_MDWE, as systemd
    >= 254 enforces the directive; older systemd uses a seccomp filter with the same rule)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", MDWE_CHILD], capture_output=True, text=True, timeout=120, env=env)
    if done.returncode == 3:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+): W^X cannot be enforced on a test process")
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr[-3000:]
