"""Where an installation's files go: config lookup, the state directory, private modes, and naming the real cause
when the database or the master key cannot be used."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

from asterisk_securelink import config, masterkey
from asterisk_securelink.cli.setup import skeleton, state_dir_for
from asterisk_securelink.config import ConfigError
from asterisk_securelink.store import sqlite


def test_config_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "etc" / "securelink.toml"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no config file: looked for --config, \$SECURELINK_CONFIG"):
        config.find(None, {}, system)
    system.parent.mkdir()
    system.write_text("")
    assert config.find(None, {}, system) == system.resolve()  # the system installation, last
    (tmp_path / "securelink.toml").write_text("")
    assert config.find(None, {}, system) == (tmp_path / "securelink.toml").resolve()  # ./securelink.toml before it
    assert config.find(None, {"SECURELINK_CONFIG": "/x/env.toml"}, system) == Path("/x/env.toml")
    assert config.find("/x/arg.toml", {"SECURELINK_CONFIG": "/x/env.toml"}, system) == Path("/x/arg.toml")


def test_a_current_folder_the_user_may_not_read_is_passed_over(tmp_path: Path) -> None:
    """`runuser -u securelink -- securelink doctor` typed in /root: the service user may not look in /root, so the
    system config is used; with none, the error says why ./securelink.toml was not read."""
    with tempfile.TemporaryDirectory() as top:
        base = Path(top)
        base.chmod(0o755)
        (base / "etc").mkdir(mode=0o755)
        system = base / "etc" / "securelink.toml"
        private = base / "root"
        private.mkdir(mode=0o700)
        (private / "securelink.toml").write_text("")  # the admin's own, not the service user's
        code = "import sys; from pathlib import Path; from asterisk_securelink import config; "
        code += "print(config.find(None, {}, Path(sys.argv[1])))"
        argv = ["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", code, str(system)]
        env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": os.environ["PATH"]}
        missing = subprocess.run(argv, cwd=private, env=env, capture_output=True, text=True, timeout=30)
        assert missing.returncode != 0
        assert f"./securelink.toml (this user may not look in {private}: cd / first)" in missing.stderr
        assert "PermissionError" not in missing.stderr
        system.write_text("")
        system.chmod(0o644)
        found = subprocess.run(argv, cwd=private, env=env, capture_output=True, text=True, timeout=30)
        assert found.returncode == 0, found.stderr
        assert found.stdout.strip() == str(system)


def test_a_system_config_keeps_its_database_under_var_lib(tmp_path: Path) -> None:
    assert state_dir_for(config.SYSTEM_CONFIG, None) == Path("/var/lib/securelink")
    assert state_dir_for(tmp_path / "securelink.toml", None) is None  # next to a config elsewhere
    assert state_dir_for(config.SYSTEM_CONFIG, str(tmp_path)) == tmp_path
    text = skeleton(Path("/var/lib/securelink"))
    assert 'url = "sqlite:////var/lib/securelink/securelink.sqlite3"' in text
    built = config.build(tomllib.loads(text), {}, Path("/etc/securelink"))
    assert built.database_url == "sqlite+aiosqlite:////var/lib/securelink/securelink.sqlite3"


def test_init_writes_config_database_and_directories_private(tmp_path: Path) -> None:
    conf = tmp_path / "new" / "securelink.toml"
    state = tmp_path / "state"
    p = subprocess.run(
        [sys.executable, "-m", "asterisk_securelink.cli", "--config", str(conf), "init", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if "SECURELINK" not in k},
    )
    assert p.returncode == 0, p.stderr
    mode = lambda f: stat.S_IMODE(f.stat().st_mode)  # noqa: E731
    assert mode(conf) == 0o600 and mode(conf.parent) == 0o700 and mode(state) == 0o700
    assert mode(state / "securelink.sqlite3") == 0o600 and mode(conf.parent / "master.key") == 0o600
    assert not (conf.parent / "securelink.sqlite3").exists()
    again = subprocess.run(
        [sys.executable, "-m", "asterisk_securelink.cli", "--config", str(conf), "init", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "--state-dir only applies to a new config" in again.stderr


def test_database_access_problems_name_the_cause(tmp_path: Path) -> None:
    assert sqlite.access_problem("postgresql+asyncpg://u@h/db") is None
    assert sqlite.access_problem("sqlite+aiosqlite:///:memory:") is None
    assert sqlite.access_problem(f"sqlite+aiosqlite:///{tmp_path}/ok.sqlite3") is None
    missing = sqlite.access_problem(f"sqlite+aiosqlite:///{tmp_path}/nowhere/x.sqlite3")
    assert missing is not None and "does not exist" in missing


def test_master_key_errors_say_how_to_fix_them(tmp_path: Path) -> None:
    key = tmp_path / "master.key"
    with pytest.raises(masterkey.MasterKeyError) as missing:
        masterkey.load(key)
    assert "securelink init" in missing.value.fix
    masterkey.create(key)
    key.chmod(0o640)
    with pytest.raises(masterkey.MasterKeyError) as shared:
        masterkey.load(key)
    assert shared.value.fix == f"chmod 600 {key}"
    key.chmod(0o600)
    os.chown(key, 65534, -1)  # owned by another user (we run the tests as root)
    with pytest.raises(masterkey.MasterKeyError) as foreign:
        masterkey.load(key)
    assert "not owned by the user running securelink" in str(foreign.value)
    assert "run securelink as the user that owns" in foreign.value.fix and "chmod" not in foreign.value.fix
