from __future__ import annotations

from pathlib import Path

import pytest

from asterisk_securelink import config
from asterisk_securelink.config import ConfigError


def test_defaults(tmp_path: Path) -> None:
    cfg = config.build({}, {}, tmp_path)
    assert cfg.keys.period == 30 and cfg.keys.look_behind == 1 and cfg.keys.look_ahead == 0
    assert cfg.database_url == f"sqlite+aiosqlite:///{tmp_path / 'securelink.sqlite3'}"
    assert cfg.master_key_path == tmp_path / "master.key"


def test_file_and_env_override(tmp_path: Path) -> None:
    f = tmp_path / "sl.toml"
    f.write_text('[keys]\nperiod = 10\ninbound_format = "+1NXXNXXXXXX"\n[ari]\npassword = "x"\n')
    cfg = config.load(f, env={"SECURELINK_KEYS_PERIOD": "5", "SECURELINK_LOCKOUT_ENABLED": "false"})
    assert cfg.keys.period == 5
    assert cfg.keys.inbound_format == "+1NXXNXXXXXX"
    assert cfg.lockout.enabled is False
    assert cfg.source == f.resolve()


def test_env_postgres_url_gets_async_driver(tmp_path: Path) -> None:
    cfg = config.build({}, {"SECURELINK_DATABASE_URL": "postgresql://u@127.0.0.1/db"}, tmp_path)
    assert cfg.database_url == "postgresql+asyncpg://u@127.0.0.1/db"


@pytest.mark.parametrize(
    ("data", "env", "named"),
    [
        ({"keys": {"period": 61}}, {}, "keys.period"),
        ({"keys": {"period": "abc"}}, {}, "keys.period"),
        ({}, {"SECURELINK_KEYS_PERIOD": "4"}, "keys.period"),
        ({"keys": {"inbound_format": "XXXX"}}, {}, "keys.inbound_format"),
        ({"keys": {"colour": 1}}, {}, "keys.colour"),
        ({"nope": {}}, {}, "nope"),
        ({"inbound": {"mode": "carrier-pigeon"}}, {}, "inbound.mode"),
        ({"lockout": {"max_failures": 0}}, {}, "lockout.max_failures"),
        ({"ari": {"url": "ws://x"}}, {}, "ari.url"),
        ({"outbound": {"endpoint": "PJSIP/carrier"}}, {}, "outbound.endpoint"),
        ({}, {"SECURELINK_LOCKOUT_ENABLED": "maybe"}, "lockout.enabled"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, data: dict[str, object], env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        config.build(data, env, tmp_path)  # type: ignore[arg-type]


def test_secret_values_are_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        config.build({"ami": {"secret": 123456789}}, {}, tmp_path)
    assert "123456789" not in str(e.value)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[keys\nperiod=")
    with pytest.raises(ConfigError, match="invalid TOML"):
        config.load(bad, env={})
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "missing.toml", env={})


def test_skeleton_is_valid(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text(config.SKELETON)
    assert config.load(f, env={}).keys.period == 30
