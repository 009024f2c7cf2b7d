"""`securelink asterisk install|uninstall` on a copy of Debian's stock Asterisk 22 configuration (no Asterisk runs:
a fake `asterisk` command answers -V and records -rx)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import os
import shutil
import stat
import sys
import tomllib
from pathlib import Path

import pytest

from asterisk_securelink import config as config_mod
from asterisk_securelink import doctor
from asterisk_securelink.cli import asterisk as cli_asterisk
from asterisk_securelink.installer import apply as applier
from asterisk_securelink.installer import conf, resources, safefs, systemd
from asterisk_securelink.installer.plan import (
    Plan,
    Refused,
    Secrets,
    Settings,
    include_line,
    plan_install,
    plan_uninstall,
)

STOCK = Path(__file__).parent / "data" / "asterisk-stock"
TOML = config_mod.SKELETON + '\n[log]\nlevel = "INFO"  # kept\n'
ARI_PW = "a" * 64
AMI_PW = "b" * 64
AGI_TK = "t" * 64  # agi.result_token
FAKE_ASTERISK = """\
import os, sys
if sys.argv[1] == "-V":
    print("Asterisk " + os.environ["FAKE_ASTERISK_VERSION"] + "+dfsg-1")
elif sys.argv[1] == "-rx":
    with open(__file__ + ".log", "a") as f:
        f.write(sys.argv[2] + "\\n")
"""


def tree(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every file and folder under `root`: bytes (None for a folder) and mode."""
    out: dict[str, tuple[bytes | None, int]] = {}
    for p in sorted(root.rglob("*")):
        data = None if p.is_dir() else p.read_bytes()
        out[p.relative_to(root).as_posix()] = (data, stat.S_IMODE(p.stat().st_mode))
    return out


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    root = tmp_path / "etc" / "asterisk"
    shutil.copytree(STOCK, root, ignore=shutil.ignore_patterns("README.md"))
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o640)
    return root


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "etc" / "securelink" / "securelink.toml"
    path.parent.mkdir(parents=True)
    path.write_text(TOML)
    path.chmod(0o640)
    return path


def settings(toml: Path) -> Settings:
    return Settings("securelink", "securelink", "securelink", 8088, toml, toml.read_text(), applier.owner_of(toml))


def plan(etc: Path, toml: Path, asterisk_gid: int | None = None) -> Plan:
    snap = dataclasses.replace(applier.scan(etc), asterisk_gid=asterisk_gid)
    return plan_install(snap, settings(toml), Secrets(ARI_PW, AMI_PW, AGI_TK), (22, 10))


def install(etc: Path, toml: Path, tmp_path: Path) -> Plan:
    p = plan(etc, toml)
    applier.preflight(p)
    applier.apply(p, tmp_path / "backups")
    return p


# -- install --------------------------------------------------------------------------------------------------
def test_install_adds_own_files_one_line_each_and_the_passwords(etc: Path, toml: Path, tmp_path: Path) -> None:
    before = tree(etc)
    p = install(etc, toml, tmp_path)
    assert p.reloads == ("module reload http", "module reload res_ari.so", "manager reload", "dialplan reload")
    for admin, own in (
        ("ari.conf", "ari.conf"),
        ("manager.conf", "manager.conf"),
        ("extensions.conf", "securelink.conf"),
        ("http.conf", "http.conf"),
    ):
        data = (etc / admin).read_bytes()
        original = before[admin][0]
        assert original is not None and data.startswith(original)  # the admin's lines untouched
        added = data[len(original) :].decode()
        broke = not original.endswith(b"\n")  # stock http.conf has no final line break
        assert added == "\n" * broke + include_line(f"securelink/{own}", broke)
        assert stat.S_IMODE((etc / admin).stat().st_mode) == 0o640
    ari = (etc / "securelink/ari.conf").read_text()
    ami = (etc / "securelink/manager.conf").read_text()
    assert "[securelink]\ntype = user\nread_only = no\n" in ari and f"password = {ARI_PW}\n" in ari
    assert f"secret = {AMI_PW}\n" in ami and "permit = 127.0.0.1/255.255.255.255" in ami
    for name in ("ari.conf", "manager.conf"):
        assert stat.S_IMODE((etc / "securelink" / name).stat().st_mode) == 0o640
    installed = (etc / "securelink/securelink.conf").read_bytes()
    shipped = resources.read("dialplan", "securelink.conf")
    assert b"@AGI_TOKEN@" in shipped and installed.endswith(shipped.replace(b"@AGI_TOKEN@", AGI_TK.encode()))
    assert tomllib.loads(toml.read_text())["agi"]["result_token"] == AGI_TK  # the service returns what the plan checks
    assert (
        "[general](+)\nenabled = yes\nbindaddr = 127.0.0.1\nbindport = 8088\n"
        in (etc / "securelink/http.conf").read_text()
    )
    # what Asterisk reads: the users through the includes, the HTTP server on
    assert "securelink" in conf.sections_with_includes("ari.conf", str(etc), applier.scan(etc).files, frozenset())
    http = (etc / "http.conf").read_text() + (etc / "securelink/http.conf").read_text()
    assert conf.is_true(conf.last_value(http, "general", "enabled"))
    values = tomllib.loads(toml.read_text())
    assert values["ari"]["password"] == ARI_PW and values["ami"]["secret"] == AMI_PW
    assert stat.S_IMODE(toml.stat().st_mode) == 0o600
    old, new = TOML.splitlines(), toml.read_text().splitlines()  # the two secret lines changed, the token added
    assert [line for line in old if line not in new] == ['password = ""', 'secret = ""']
    assert [line for line in new if line not in old] == [f'password = "{ARI_PW}"', f'secret = "{AMI_PW}"',
                                                        f'result_token = "{AGI_TK}"']  # fmt: skip


def test_second_install_is_a_no_op_and_says_so(etc: Path, toml: Path, tmp_path: Path, fake: Fake) -> None:
    install(etc, toml, tmp_path)
    after = tree(etc), toml.read_bytes()
    assert plan(etc, toml).empty
    code, out, _ = fake.run("install", "--etc", str(etc), "--yes")
    assert code == 0 and "already installed" in out and "nothing to change" in out
    assert (tree(etc), toml.read_bytes()) == after and fake.reloads() == []


def test_a_second_install_keeps_the_passwords_and_mends_the_config(etc: Path, toml: Path, tmp_path: Path) -> None:
    install(etc, toml, tmp_path)
    toml.write_text(toml.read_text().replace(f'password = "{ARI_PW}"', 'password = ""'))
    snap = applier.scan(etc)
    again = plan_install(snap, settings(toml), Secrets("c" * 64, "d" * 64, "e" * 64), (22, 0))
    assert [c.path for c in again.changes] == [toml] and not again.reloads
    assert f'password = "{ARI_PW}"' in (again.changes[0].after or b"").decode()


def test_an_admins_edits_to_installs_files_are_kept_then_removed_with_a_backup(
    etc: Path, toml: Path, tmp_path: Path
) -> None:
    install(etc, toml, tmp_path)
    own = etc / "securelink/securelink.conf"
    own.write_text(own.read_text() + "[mine]\nexten => 1,1,Dial(PJSIP/1001)\n")
    again = plan(etc, toml)
    assert again.empty and again.notes == (f"{own} was edited after install: kept as it is",)
    p = plan_uninstall(applier.scan(etc))
    assert f"{own} was edited after install: removed; the backup keeps your edits" in p.notes
    backup = applier.apply(p, tmp_path / "backups")
    assert backup is not None and b"Dial(PJSIP/1001)" in (backup / own.relative_to("/")).read_bytes()


def test_owner_and_mode_follow_the_neighbours_secrets_get_asterisks_group(etc: Path, toml: Path) -> None:
    (etc / "extensions.conf").chmod(0o644)
    p = plan(etc, toml, asterisk_gid=4242)
    by_name = {c.path.relative_to(etc).as_posix(): c.owner for c in p.changes if c.path.is_relative_to(etc)}
    assert by_name["securelink/ari.conf"].gid == 4242 and by_name["securelink/ari.conf"].mode == 0o640
    dialplan = by_name["securelink/securelink.conf"]  # holds agi.result_token: not for everyone to read
    assert dialplan.mode == 0o640 and dialplan.gid == 4242
    assert by_name["extensions.conf"].mode == 0o644 and p.make_dir is not None and p.make_dir.mode == 0o755


def test_the_app_name_and_http_port_come_from_the_config(etc: Path, toml: Path) -> None:
    snap = applier.scan(etc)
    s = Settings("slari", "slami", "myapp", 8089, toml, toml.read_text(), applier.owner_of(toml))
    p = plan_install(snap, s, Secrets(ARI_PW, AMI_PW, AGI_TK), (16, 0))
    text = {c.path.relative_to(etc).as_posix(): (c.after or b"").decode() for c in p.changes if c.path != toml}
    dialplan = text["securelink/securelink.conf"]
    assert "Stasis(myapp,inbound,ani,${SECURELINK_SOURCE})" in dialplan and "Stasis(securelink," not in dialplan
    assert "[slari]" in text["securelink/ari.conf"] and "[slami]" in text["securelink/manager.conf"]
    assert "bindport = 8089" in text["securelink/http.conf"]


def test_http_left_alone_when_the_admin_turned_it_on(etc: Path, toml: Path) -> None:
    (etc / "http.conf").write_text("[general]\nenabled=yes\nbindaddr=0.0.0.0\nbindport=8088\n")
    p = plan(etc, toml)
    assert not any("http" in c.path.name for c in p.changes) and "module reload http" not in p.reloads


def test_ari_over_https_leaves_http_conf_alone(etc: Path, toml: Path) -> None:
    s = Settings("securelink", "securelink", "securelink", None, toml, toml.read_text(), applier.owner_of(toml))
    p = plan_install(applier.scan(etc), s, Secrets(ARI_PW, AMI_PW, AGI_TK), (22, 0))
    assert not any("http" in c.path.name for c in p.changes) and "module reload http" not in p.reloads
    assert any("tlsenable" in note for note in p.notes)


def test_an_admins_comment_naming_the_installer_is_just_a_comment(etc: Path, toml: Path, tmp_path: Path) -> None:
    (etc / "ari.conf").write_text((etc / "ari.conf").read_text() + "; see `securelink asterisk install`\n")
    before = tree(etc)
    install(etc, toml, tmp_path)
    applier.apply(plan_uninstall(applier.scan(etc)), tmp_path / "backups")
    assert tree(etc) == before


# -- dry run ------------------------------------------------------------------------------------------------
def test_dry_run_prints_every_diff_and_changes_nothing(etc: Path, toml: Path, fake: Fake) -> None:
    before = tree(etc), toml.read_bytes()
    code, out, err = fake.run("install", "--etc", str(etc), "--dry-run")
    assert code == 0, err
    assert (tree(etc), toml.read_bytes()) == before and fake.reloads() == []
    assert not (etc / "securelink").exists()
    for name in ("ari.conf", "manager.conf", "extensions.conf", "http.conf"):
        assert f"--- a{etc / name}\n+++ b{etc / name}\n" in out
        assert f"+#tryinclude securelink/{'securelink.conf' if name == 'extensions.conf' else name} ;" in out
    assert f"--- /dev/null\n+++ b{etc / 'securelink/ari.conf'}\n" in out
    assert "+password = (hidden)\n" in out and "+secret = (hidden)\n" in out  # the toml and the user files
    assert '-password = ""\n' in out  # the config's empty password was unset: nothing hidden
    assert "dry run: nothing changed" in out
    for line in out.splitlines():  # no generated secret shown
        assert not any(len(word) >= 40 and word.replace("-", "").replace("_", "").isalnum() for word in line.split())


# -- uninstall ----------------------------------------------------------------------------------------------
def test_uninstall_restores_every_file_byte_for_byte(etc: Path, toml: Path, tmp_path: Path, fake: Fake) -> None:
    before = tree(etc)
    code, out, err = fake.run("install", "--etc", str(etc), "--yes")
    assert code == 0, err
    assert fake.reloads() == ["module reload http", "module reload res_ari.so", "manager reload", "dialplan reload"]
    assert "doctor:\n  [ok  ] ARI: password set\n" in out and "backups of the files changed" in out
    code, out, err = fake.run("uninstall", "--etc", str(etc), "--yes")
    assert code == 0, err
    assert tree(etc) == before
    code, out, _ = fake.run("uninstall", "--etc", str(etc), "--yes")
    assert code == 0 and "not installed" in out


def test_uninstall_of_a_file_that_had_no_final_newline(etc: Path, toml: Path, tmp_path: Path) -> None:
    (etc / "extensions.conf").write_bytes((etc / "extensions.conf").read_bytes().rstrip(b"\n"))
    before = tree(etc)
    install(etc, toml, tmp_path)
    text = (etc / "extensions.conf").read_text()
    original = before["extensions.conf"][0]
    assert original is not None and text.startswith(original.decode() + "\n#tryinclude securelink/securelink.conf ;")
    p = plan_uninstall(applier.scan(etc))
    applier.apply(p, tmp_path / "backups")
    assert tree(etc) == before


def test_uninstall_keeps_what_the_admin_added_after_install(etc: Path, toml: Path, tmp_path: Path) -> None:
    original = (etc / "extensions.conf").read_bytes()
    install(etc, toml, tmp_path)
    with (etc / "extensions.conf").open("a") as f:
        f.write("[mine]\nexten => 1,1,Goto(securelink-inbound,${EXTEN},1)\n")
    applier.apply(plan_uninstall(applier.scan(etc)), tmp_path / "backups")
    assert (
        etc / "extensions.conf"
    ).read_bytes() == original + b"[mine]\nexten => 1,1,Goto(securelink-inbound,${EXTEN},1)\n"


def test_a_missing_http_conf_is_created_and_removed(etc: Path, toml: Path, tmp_path: Path) -> None:
    (etc / "http.conf").unlink()
    before = tree(etc)
    install(etc, toml, tmp_path)
    assert "[general]\nenabled = yes" in (etc / "securelink/http.conf").read_text()
    applier.apply(plan_uninstall(applier.scan(etc)), tmp_path / "backups")
    assert tree(etc) == before


def test_systemd_on_a_host_without_it_says_so_and_skips(
    etc: Path, toml: Path, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(systemd, "available", lambda: False)
    code, out, err = fake.run("install", "--etc", str(etc), "--yes", "--systemd")
    assert code == 0, err
    assert "note: systemd is not running on this host: --systemd skipped" in out
    assert not (toml.parent / "units").exists()


def test_without_systemd_running_the_units_are_written_for_the_configs_owner_not_started(
    etc: Path, toml: Path, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(systemd, "available", lambda: False)
    monkeypatch.setattr(systemd, "run_systemctl", lambda args: pytest.fail(f"systemctl {args} ran"))
    units = toml.parent / "units"
    units.mkdir()
    code, out, err = fake.run("install", "--etc", str(etc), "--yes", "--systemd")
    assert code == 0, err
    assert f"note: systemd is not running on this host: the units are written to {units}, not started" in out
    text = (units / "securelink.service").read_text()
    owner = applier.owner_of(toml)
    user, group = applier.user_name(owner.uid), applier.group_name(owner.gid)
    assert f"User={user}\nGroup={group}\nWorkingDirectory={toml.parent}\n" in text  # the database is beside it
    assert f"ReadWritePaths={toml.parent}\n" in text and f"SECURELINK_CONFIG={toml}\n" in text


def test_the_unit_runs_this_installations_script_whatever_path_finds_first(
    etc: Path, toml: Path, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """L3: a world-writable PATH entry's `securelink` was what `which` found, and became ExecStart."""
    monkeypatch.setattr(systemd, "available", lambda: False)
    evil = toml.parent.parent / "world-writable"
    evil.mkdir(mode=0o777)
    (evil / "securelink").write_text("#!/bin/sh\nexec id\n")
    (evil / "securelink").chmod(0o755)
    monkeypatch.setenv("PATH", f"{evil}:{os.environ['PATH']}")
    (toml.parent / "units").mkdir()
    code, _, err = fake.run("install", "--etc", str(etc), "--yes", "--systemd")
    assert code == 0, err
    exec_start = next(
        line
        for line in (toml.parent / "units/securelink.service").read_text().splitlines()
        if line.startswith("ExecStart=")
    )
    command = Path(exec_start.removeprefix("ExecStart=").removesuffix(" run"))
    assert command.is_absolute() and command.parent != evil and command.name == "securelink"
    shebang = command.read_text().splitlines()[0].removeprefix("#!")
    assert os.path.realpath(shebang) == os.path.realpath(sys.executable)  # the script of this installation


def test_install_refuses_a_unit_command_others_may_change_and_changes_nothing(
    etc: Path, toml: Path, fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(systemd, "available", lambda: False)
    bad = toml.parent.parent / "bin" / "securelink"
    bad.parent.mkdir()
    bad.parent.chmod(0o775)
    bad.write_text("#!/bin/sh\n")
    bad.chmod(0o755)
    monkeypatch.setattr(systemd, "recorded_script", lambda: bad)
    (toml.parent / "units").mkdir()
    err = _refused(fake, etc, toml, "install", "--etc", str(etc), "--yes", "--systemd")
    assert f"the unit would run {bad}, but {bad.parent} may be changed by its group (uid 0, mode 0775)" in err
    assert list((toml.parent / "units").iterdir()) == []


def test_uninstall_names_the_routes_left_pointing_at_securelink_and_what_stays(
    etc: Path, toml: Path, tmp_path: Path, fake: Fake
) -> None:
    with (etc / "extensions.conf").open("a") as f:
        f.write("#include routes/carrier.conf\n[from-internal-x]\nexten => 7,1,Dial(PJSIP/7) ; securelink-free\n")
    (etc / "routes").mkdir()
    (etc / "routes/carrier.conf").write_text("[from-carrier]\nexten => 55,1,Goto(securelink-access,+55,1) ; DID\n")
    code, out, err = fake.run("install", "--etc", str(etc), "--yes")
    assert code == 0, err
    code, out, err = fake.run("uninstall", "--etc", str(etc), "--yes")
    assert code == 0, err
    assert (
        "note: your dialplan still sends calls into securelink's contexts (removed now: such a call gets 603 Decline);"
        f" change or remove these lines, then `dialplan reload`:\n  {etc}/routes/carrier.conf:2: "
        "exten => 55,1,Goto(securelink-access,+55,1)\n"
    ) in out
    assert "exten => 7" not in out  # a comment naming securelink- is not a route
    stays = out[out.index("note: left in place, yours to keep or remove:") :]
    for what in (f"the config {toml} (it holds the ARI and AMI passwords)", f"the master key {toml.parent}/master.key",
                 f"the database {toml.parent}/securelink.sqlite3", f"the Python package in {sys.prefix}"):  # fmt: skip
        assert what in stays, stays
    code, out, _ = fake.run("uninstall", "--etc", str(etc), "--yes")
    assert "603 Decline" not in out  # nothing was removed this time: nothing to warn about


def test_uninstall_removes_the_units_install_wrote(etc: Path, toml: Path, tmp_path: Path, fake: Fake) -> None:
    install(etc, toml, tmp_path)
    units = toml.parent / "units"
    units.mkdir()
    (units / "securelink.service").write_bytes(
        systemd.unit_text("securelink.service", systemd.Service("/x/securelink", toml))
    )
    (units / "other.service").write_text("[Unit]\n")
    code, out, err = fake.run("uninstall", "--etc", str(etc), "--yes")
    assert code == 0, err
    assert sorted(p.name for p in units.iterdir()) == ["other.service"] and "securelink.service" in out


# -- backups, atomicity -----------------------------------------------------------------------------------
def test_every_touched_file_is_backed_up_0600(etc: Path, toml: Path, tmp_path: Path) -> None:
    originals = {name: (etc / name).read_bytes() for name in ("ari.conf", "manager.conf", "extensions.conf")}
    p = plan(etc, toml)
    first = applier.apply(p, tmp_path / "backups")
    assert first is not None and first.parent == tmp_path / "backups"
    for name, data in originals.items():
        saved = first / (etc / name).relative_to("/")
        assert saved.read_bytes() == data and stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert (first / toml.relative_to("/")).exists()
    second = applier.apply(plan_uninstall(applier.scan(etc)), tmp_path / "backups")
    assert second is not None and second != first  # same second: its own folder


def test_a_failed_write_puts_everything_back(
    etc: Path, toml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = tree(etc), toml.read_bytes()
    real = safefs.write_at
    calls: list[str] = []

    def flaky(dir_fd: int, name: str, data: bytes, owner: applier.Owner) -> None:
        calls.append(name)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        real(dir_fd, name, data, owner)

    monkeypatch.setattr(safefs, "write_at", flaky)
    with pytest.raises(OSError):
        applier.apply(plan(etc, toml), tmp_path / "backups")
    assert (tree(etc), toml.read_bytes()) == before


def test_a_file_changed_after_planning_is_not_overwritten(etc: Path, toml: Path, tmp_path: Path) -> None:
    p = plan(etc, toml)
    (etc / "ari.conf").write_text("[general]\nenabled = yes\n")
    with pytest.raises(Refused, match="changed while the plan was made"):
        applier.apply(p, tmp_path / "backups")
    assert not (etc / "securelink").exists()


# -- refusals: one line, nothing changed --------------------------------------------------------------------
def _refused(fake: Fake, etc: Path, toml: Path, *argv: str) -> str:
    before = tree(etc.parent), toml.read_bytes()
    code, out, err = fake.run(*argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("securelink: error: "), (code, out, err)
    assert (tree(etc.parent), toml.read_bytes()) == before
    return err


def test_refuses_a_folder_that_is_not_an_asterisk_config(etc: Path, toml: Path, tmp_path: Path, fake: Fake) -> None:
    assert "is not an Asterisk config directory" in _refused(
        fake, etc, toml, "install", "--etc", str(tmp_path), "--yes"
    )
    err = _refused(fake, etc, toml, "install", "--etc", str(tmp_path / "nope"), "--yes")
    assert "no such directory" in err
    (etc / "manager.conf").unlink()
    err = _refused(fake, etc, toml, "uninstall", "--etc", str(etc), "--yes")
    assert "(no manager.conf)" in err


def test_refuses_an_ari_or_ami_user_install_did_not_create(etc: Path, toml: Path, fake: Fake) -> None:
    (etc / "ari.conf").write_text((etc / "ari.conf").read_text() + "\n[securelink]\ntype = user\npassword = x\n")
    err = _refused(fake, etc, toml, "install", "--etc", str(etc), "--yes")
    assert "ari.conf already has an ARI user [securelink]" in err
    (etc / "ari.conf").write_bytes((STOCK / "ari.conf").read_bytes())
    (etc / "manager.d" / "securelink.conf").write_text("[securelink]\nsecret = x\n")  # via #include "manager.d/*.conf"
    assert "AMI user [securelink]" in _refused(fake, etc, toml, "install", "--etc", str(etc), "--yes")


def test_refuses_an_asterisk_older_than_16(etc: Path, toml: Path, fake: Fake) -> None:
    fake.version = "13.38.3"
    assert "Asterisk 13.38 is too old" in _refused(fake, etc, toml, "install", "--etc", str(etc), "--yes")


def test_refuses_a_manual_install(etc: Path, toml: Path, fake: Fake) -> None:
    (etc / "securelink").mkdir()
    (etc / "securelink/securelink.conf").write_bytes(resources.read("dialplan", "securelink.conf"))
    err = _refused(fake, etc, toml, "install", "--etc", str(etc), "--yes")
    assert "securelink.conf exists and was not written by `securelink asterisk install`" in err
    (etc / "securelink/securelink.conf").unlink()
    (etc / "extensions.conf").write_text(
        (etc / "extensions.conf").read_text() + "#include securelink/securelink.conf\n"
    )
    assert "already includes securelink/securelink.conf" in _refused(
        fake, etc, toml, "install", "--etc", str(etc), "--yes"
    )


def test_refuses_an_install_line_edited_by_hand(etc: Path, toml: Path, tmp_path: Path, fake: Fake) -> None:
    install(etc, toml, tmp_path)
    text = (etc / "ari.conf").read_text()
    (etc / "ari.conf").write_text(text.replace("#tryinclude securelink/ari.conf", "#include securelink/ari.conf"))
    assert "changed by hand" in _refused(fake, etc, toml, "uninstall", "--etc", str(etc), "--yes")


def test_refuses_files_it_cannot_write(etc: Path, toml: Path) -> None:
    p = plan(etc, toml)
    with pytest.raises(Refused, match=r"cannot write .*ari.conf: permission denied"):
        applier.preflight(p, writable=lambda path: path.name != "ari.conf")


def test_refuses_without_a_terminal_or_yes(etc: Path, toml: Path, fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert "pass --yes" in _refused(fake, etc, toml, "install", "--etc", str(etc))


# -- the command, with a fake asterisk ----------------------------------------------------------------------
class Fake:
    def __init__(self, tmp_path: Path, toml: Path, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch) -> None:
        self.script = tmp_path / "fake_asterisk.py"
        self.script.write_text(FAKE_ASTERISK)
        self.toml = toml
        self.capsys = capsys
        self.monkeypatch = mp
        self.version = "22.10.1"
        self.backups = tmp_path / "backups"

    def run(self, *argv: str) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser()
        cli_asterisk.add_parser(parser.add_subparsers(dest="cmd"))
        extra = ["--asterisk", f"{sys.executable} {self.script}", "--backup-dir", str(self.backups)]
        args = parser.parse_args(["asterisk", *argv, *extra, "--unit-dir", str(self.toml.parent / "units")])
        self.monkeypatch.setenv("FAKE_ASTERISK_VERSION", self.version)
        self.monkeypatch.setattr(doctor, "run_checks", self._doctor)
        self.capsys.readouterr()
        cfg = config_mod.load(self.toml, env={})
        code = asyncio.run(args.handler(args, cfg))
        out, err = self.capsys.readouterr()
        return code, out, err

    @staticmethod
    async def _doctor(cfg: config_mod.Config) -> list[doctor.Check]:  # doctor has its own tests; no network here
        return [doctor.Check("ARI", bool(cfg.ari.password), "password set" if cfg.ari.password else "no password")]

    def reloads(self) -> list[str]:
        log = Path(str(self.script) + ".log")
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def fake(tmp_path: Path, toml: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Fake:
    return Fake(tmp_path, toml, capsys, monkeypatch)
