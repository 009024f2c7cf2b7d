from __future__ import annotations

from pathlib import Path

import pytest

from asterisk_securelink import config
from asterisk_securelink.config import ConfigError


def test_defaults(tmp_path: Path) -> None:
    cfg = config.build({}, {}, tmp_path)
    assert cfg.keys.period == 30 and cfg.keys.look_behind == 1 and cfg.keys.look_ahead == 1  # SLK1 1.1: burst
    assert cfg.keys.trunk_prefixes == () and cfg.keys.default_country_code == "" and cfg.ari.node == ""
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
        ({"keys": {"trunk_prefixes": [0, 11]}}, {}, "keys.trunk_prefixes"),
        ({"keys": {"trunk_prefixes": ["0", "+1"]}}, {}, "keys.trunk_prefixes"),
        ({"keys": {"trunk_prefixes": ["\u0660"]}}, {}, "keys.trunk_prefixes"),  # ASCII digits only (not U+0660)
        ({}, {"SECURELINK_KEYS_TRUNK_PREFIXES": "0,abc"}, "keys.trunk_prefixes"),
        ({"keys": {"default_country_code": "+1"}}, {}, "keys.default_country_code"),
        ({"keys": {"default_country_code": "28"}}, {}, "keys.default_country_code"),  # not assigned
        ({"keys": {"default_country_code": 44}}, {}, "keys.default_country_code"),
        ({"inbound": {"dial_prefix": "9x"}}, {}, "inbound.dial_prefix"),
        ({"ari": {"node": "a b"}}, {}, "ari.node"),
        ({"keys": {"look_ahead": 3}}, {}, "keys.look_ahead"),
        ({"inbound": {"max_in_flight": 0}}, {}, "inbound.max_in_flight"),
        ({"inbound": {"overload_hangup": "busy"}}, {}, "inbound.overload_hangup"),
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


def test_trunk_prefixes_from_the_file_and_as_a_comma_list_from_the_environment(tmp_path: Path) -> None:
    cfg = config.build({"keys": {"trunk_prefixes": ["0", "011", "0"]}}, {}, tmp_path)
    assert cfg.keys.trunk_prefixes == ("0", "011")  # each once, in order
    env = {"SECURELINK_KEYS_TRUNK_PREFIXES": " 00, 011 ,,1"}
    assert config.build({"keys": {"trunk_prefixes": ["0"]}}, env, tmp_path).keys.trunk_prefixes == ("00", "011", "1")
    assert config.build({}, {"SECURELINK_KEYS_TRUNK_PREFIXES": ""}, tmp_path).keys.trunk_prefixes == ()


def test_number_settings(tmp_path: Path) -> None:
    cfg = config.build(
        {"keys": {"default_country_code": "44"}, "inbound": {"dial_prefix": "8"}, "ari": {"node": "pbx-1"}},
        {},
        tmp_path,
    )
    assert (cfg.keys.default_country_code, cfg.inbound.dial_prefix, cfg.ari.node) == ("44", "8", "pbx-1")
    assert config.build({}, {"SECURELINK_KEYS_DEFAULT_COUNTRY_CODE": "1"}, tmp_path).keys.default_country_code == "1"


ANY = "0.0.0.0"  # noqa: S104 - the address the test must see refused


def test_agi_allow_from_and_allow_remote(tmp_path: Path) -> None:
    c = config.build({"agi": {"allow_from": ["10.0.0.5", "192.0.2.0/24"]}}, {}, tmp_path)
    assert c.agi.allow_from == ("10.0.0.5", "192.0.2.0/24")
    assert config.build({}, {"SECURELINK_AGI_ALLOW_FROM": "127.0.0.1,::1"}, tmp_path).agi.allow_from == (
        "127.0.0.1",
        "::1",
    )
    assert config.build({}, {}, tmp_path).agi.allow_from == (
        "127.0.0.1",
        "::1",
    )  # the loopback address only, by default
    with pytest.raises(ConfigError, match=r"agi\.allow_from"):
        config.build({"agi": {"allow_from": ["not-an-address"]}}, {}, tmp_path)
    with pytest.raises(ConfigError, match=r"agi\.host"):
        config.build({"agi": {"host": ANY}}, {}, tmp_path)  # the FastAGI port open to the network
    assert config.build({"agi": {"host": ANY, "allow_remote": True}}, {}, tmp_path).agi.host == ANY


@pytest.mark.parametrize(
    "url",
    [
        "http://securelink:s3cr3t-pw@127.0.0.1:8088",
        "https://s3cr3t-pw@pbx.example.com:8089",
        "http://securelink:s3cr3t-pw@[::1]:8088/",
        "ftp://securelink:s3cr3t-pw@127.0.0.1",
        "securelink:s3cr3t-pw@127.0.0.1:8088",
        "http://securelink:s3cr3t/pw@127.0.0.1:8088",
        "http://127.0.0.1:8088/?api_key=securelink:s3cr3t-pw",
        "http://127.0.0.1:8088/#s3cr3t-pw",
    ],
)
def test_ari_url_with_credentials_is_refused_without_echoing_them(tmp_path: Path, url: str) -> None:
    for data, env in (({"ari": {"url": url}}, {}), ({}, {"SECURELINK_ARI_URL": url})):
        with pytest.raises(ConfigError, match=r"ari\.url") as e:
            config.build(data, env, tmp_path)
        assert "s3cr3t" not in str(e.value) and "securelink:" not in str(e.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8088", "https://pbx.example.com:8089/asterisk/", "http://[::1]:8088"]
)
def test_plain_ari_urls_are_accepted(tmp_path: Path, url: str) -> None:
    assert config.build({"ari": {"url": url}}, {}, tmp_path).ari.url == url


@pytest.mark.parametrize("url", ["ws://127.0.0.1:8088", "http://127.0.0.1:99999", "http://[::1:8088", "http://:8088"])
def test_bad_ari_urls_name_the_key(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match=r"ari\.url"):
        config.build({"ari": {"url": url}}, {}, tmp_path)


def test_the_contexts_a_verdict_goes_on_in_are_checked(tmp_path: Path) -> None:
    """They travel in the one-request hand-off (core/handoff.py), so a name Asterisk or the hand-off could misread is
    refused when the config is read, not per call."""
    for name in ("admitted_context", "registration_context"):
        with pytest.raises(config.ConfigError, match=f"inbound.{name}: context 'my ctx'"):
            config.build({"inbound": {name: "my ctx"}}, {}, tmp_path)
        assert getattr(config.build({"inbound": {name: "my-ctx_2.x"}}, {}, tmp_path).inbound, name) == "my-ctx_2.x"
