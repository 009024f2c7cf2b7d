"""The installer's pieces: the TOML edit, reading Asterisk config text, the systemd units, the asterisk command."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from asterisk_securelink.installer import conf, resources, systemd
from asterisk_securelink.installer.apply import redact
from asterisk_securelink.installer.asterisk_cli import AsteriskCli, rungroup
from asterisk_securelink.installer.plan import Owner, Refused
from asterisk_securelink.installer.tomledit import TomlEditError, set_values

UPDATES = {("ari", "password"): "p" * 20, ("ami", "secret"): "s" * 20}


# -- TOML ---------------------------------------------------------------------------------------------------
def test_toml_edit_changes_only_the_values() -> None:
    text = (
        "# top\n[ari]\nurl = 'http://x:8088'  # c\npassword = \"old\"   # keep me\n\n"
        "[ami]\nsecret = ''\n\n[agi]\nport = 4573\n"
    )
    out = set_values(text, UPDATES)
    assert out == text.replace('"old"', '"' + "p" * 20 + '"').replace("secret = ''", 'secret = "' + "s" * 20 + '"')


def test_toml_edit_adds_a_missing_key_or_table() -> None:
    out = set_values("[ari]\nurl = 'http://x'\n\n[keys]\nperiod = 30\n", UPDATES)
    assert out == (
        "[ari]\nurl = 'http://x'\npassword = \"" + "p" * 20 + "\"\n\n[keys]\nperiod = 30\n\n[ami]\nsecret = \""
        + "s" * 20 + "\"\n"
    )  # fmt: skip
    assert tomllib.loads(set_values("", UPDATES)) == {"ari": {"password": "p" * 20}, "ami": {"secret": "s" * 20}}
    assert (
        set_values("[ari]\r\nurl = 'x'\r\n", {("ari", "password"): "q"}) == "[ari]\r\nurl = 'x'\r\npassword = \"q\"\r\n"
    )


@pytest.mark.parametrize(
    "text",
    [
        'ari.password = "x"\n',  # dotted key
        'ari = { password = "x" }\n',  # inline table
        '[ari]\npassword = """\nx"""\n',  # multi-line string
        "[ari\n",  # not TOML
    ],
)
def test_toml_edit_refuses_what_it_cannot_edit_safely(text: str) -> None:
    with pytest.raises(TomlEditError) as exc:
        set_values(text, {("ari", "password"): "secret-value"})
    assert "secret-value" not in str(exc.value)


def test_toml_edit_escapes_and_refuses_control_characters() -> None:
    assert tomllib.loads(set_values("", {("ari", "password"): 'a"b\\c'}))["ari"]["password"] == 'a"b\\c'
    with pytest.raises(TomlEditError):
        set_values("", {("ari", "password"): "a\nb"})


# -- Asterisk config text -----------------------------------------------------------------------------------
def test_conf_reads_comments_as_asterisk_does() -> None:
    text = (
        "[general]\nenabled = no ; off\n;-- a block\n[hidden]\nenabled = yes --;\n"
        'enabled = y\\;es\n#include "manager.d/*.conf" ; users\n#tryinclude <x.conf>\n[securelink](!)\n'
    )
    assert conf.sections(text) == ["general", "securelink"]
    assert conf.values(text, "general") == [("enabled", "no"), ("enabled", "y;es")]
    assert not conf.is_true(conf.last_value(text, "general", "enabled"))
    assert conf.includes(text) == ["manager.d/*.conf", "x.conf"]
    files = {"manager.d/a.conf": b"", "manager.d/b.txt": b"", "x.conf": b""}
    assert conf.resolve_include("manager.d/*.conf", "/etc/asterisk", files) == ["manager.d/a.conf"]
    assert conf.resolve_include("/etc/asterisk/x.conf", "/etc/asterisk", files) == ["x.conf"]
    assert conf.resolve_include("/elsewhere/x.conf", "/etc/asterisk", files) == []
    assert rungroup(b"[options]\n;rungroup = asterisk\n") is None
    assert rungroup(b"[options]\nrungroup = pbx ; ours\n") == "pbx"


def test_redact_hides_every_password_and_secret_value() -> None:
    assert redact("+password = abc\n") == "+password = (hidden)\n"
    assert redact('-secret = "abc"  # x') == "-secret = (hidden)"
    assert redact(" secret=>abc\n") == " secret=>(hidden)\n"
    assert redact("+[securelink]\n") == "+[securelink]\n"
    assert redact('-password = ""\n') == '-password = ""\n'  # empty: nothing to hide
    assert redact("-secret =\n") == "-secret =\n"


# -- the asterisk command -----------------------------------------------------------------------------------
def test_asterisk_version_and_rx(tmp_path: Path) -> None:
    script = tmp_path / "ast.py"
    script.write_text(
        "import sys\nout = {'-V': 'Asterisk certified/18.9-cert7'}.get(sys.argv[1])\n"
        "print(out or 'Unable to connect to remote asterisk (does /var/run/asterisk/asterisk.ctl exist?)')\n"
        "sys.exit(0 if out else 1)\n"
    )
    ast = AsteriskCli.parse(f"{sys.executable} {script}")
    assert ast.version() == (18, 9)
    assert (
        ast.rx("dialplan reload") == "Unable to connect to remote asterisk (does /var/run/asterisk/asterisk.ctl exist?)"
    )
    with pytest.raises(Refused, match="not found: is Asterisk installed"):
        AsteriskCli.parse(str(tmp_path / "no-such-asterisk")).version()
    with pytest.raises(Refused, match="cannot tell the Asterisk version"):
        AsteriskCli(("true",)).version()


# -- systemd ------------------------------------------------------------------------------------------------
def test_units_are_installed_marked_then_a_no_op(tmp_path: Path) -> None:
    owner = Owner(0, 0, 0o755)
    config = Path("/srv/sl/securelink.toml")
    service = systemd.Service("/opt/sl/bin/securelink", config, "pbx", "voip", Path("/srv/sl/state"))
    changes = systemd.plan_units(tmp_path, systemd.read_units(tmp_path), owner, service)
    assert [c.path.name for c in changes] == ["securelink-agi.service", "securelink.service"]
    text = (changes[1].after or b"").decode()
    assert text.startswith("# Written by `securelink asterisk install` (sha256 ")
    assert "ExecStart=/opt/sl/bin/securelink run\n" in text
    assert f"Environment=SECURELINK_CONFIG={config}\n" in text and changes[1].owner.mode == 0o644
    # the config's owner runs it, and may write the database's folder only (not /var/lib/securelink)
    assert "User=pbx\nGroup=voip\nWorkingDirectory=/srv/sl/state\n" in text
    assert "ReadWritePaths=/srv/sl/state\n" in text and "/var/lib/securelink" not in text
    assert text.endswith(resources.read("systemd", "securelink.service").decode().split("[Install]")[1])
    for c in changes:
        c.path.write_bytes(c.after or b"")
    assert systemd.plan_units(tmp_path, systemd.read_units(tmp_path), owner, service) == []
    ran: list[list[str]] = []
    assert systemd.after_install(changes, False, lambda a: ran.append(a)) == []
    assert ran == [["daemon-reload"], ["enable", "--now", "securelink.service"]]


def test_units_removal_takes_only_installs_own(tmp_path: Path) -> None:
    (tmp_path / "securelink.service").write_bytes(resources.read("systemd", "securelink.service"))  # copied by hand
    (tmp_path / "securelink-agi.service").write_bytes(
        systemd.unit_text("securelink-agi.service", systemd.Service("x", Path("/c")))
    )
    existing = systemd.read_units(tmp_path)
    assert systemd.foreign(existing) == ["securelink.service"]
    edited = (existing["securelink-agi.service"] or b"").replace(b"User=securelink", b"User=pbx")
    assert systemd.foreign({"securelink-agi.service": edited}) == ["securelink-agi.service"]
    owner = Owner(0, 0, 0o644)
    assert (
        systemd.plan_units(tmp_path, existing, owner, systemd.Service("x", Path("/c"))) == []
    )  # the admin's unit left alone
    removal = systemd.plan_removal(tmp_path, existing, owner)
    assert [c.path.name for c in removal] == ["securelink-agi.service"] and removal[0].after is None
    ran: list[list[str]] = []
    assert systemd.before_removal(removal, lambda a: ran.append(a) or "boom") == [
        "systemctl disable --now securelink-agi.service: boom"
    ]
