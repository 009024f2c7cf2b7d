"""Config as data: the skeleton and the README table are generated from the sections' fields, and each section
checks itself (`problems()`), its ranges read from the field metadata."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from asterisk_securelink import config
from asterisk_securelink.cli.setup import skeleton as init_skeleton
from asterisk_securelink.config import reference
from asterisk_securelink.core import fields as meta

README = Path(__file__).resolve().parent.parent / "README.md"
FIX = "run `python3 -m asterisk_securelink.config README.md`"


def test_the_readme_table_is_the_generated_one() -> None:
    text = README.read_text(encoding="utf-8")
    assert reference.README_BEGIN in text and reference.README_END in text
    assert reference.rewrite_readme(text) == text, f"README.md's configuration table drifted: {FIX}"


def test_the_readme_table_lists_every_key_with_its_default() -> None:
    table = reference.readme_table()
    for name, cls in config.SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f"| `{name}.{f.name}` |" in table
    assert "| `keys.period` | `30` | key refresh period, 5..60 s |" in table
    assert "| `lockout.max_guess_probability` | `1e-6` |" in table
    assert '| `agi.allow_from` | `["127.0.0.1", "::1"]` |' in table
    assert "| `device_api.public_host` | the listen address |" in table and "| `ari.password` | - |" in table


def test_rewrite_readme_needs_the_markers() -> None:
    with pytest.raises(ValueError, match="markers"):
        reference.rewrite_readme("# no table here\n")
    rewritten = reference.rewrite_readme(f"a\n{reference.README_BEGIN}\nOLD ROW\n{reference.README_END}\nb\n")
    assert "OLD ROW" not in rewritten and rewritten.endswith(f"{reference.README_END}\nb\n")


def test_the_skeleton_is_generated_and_holds_the_dataclass_defaults(tmp_path: Path) -> None:
    """The defaults, except where a new installation is given the safer choice: two-factor (issue 22, H2)."""
    assert reference.skeleton() == config.SKELETON
    data = tomllib.loads(config.SKELETON)
    defaults = config.Config(base_dir=tmp_path)
    defaults = dataclasses.replace(
        defaults, inbound=dataclasses.replace(defaults.inbound, require_registered_number=True)
    )
    for section, values in data.items():
        for key, value in values.items():
            default = getattr(getattr(defaults, section), key)
            assert (tuple(value) if isinstance(value, list) else value) == default, f"{section}.{key}"
    assert set(data) == {"database", "keys", "inbound", "lockout", "ari", "ami", "agi"}
    assert "period = 30                              # key refresh period, 5..60 s\n" in config.SKELETON
    assert config.build(data, {}, tmp_path) == dataclasses.replace(defaults, base_dir=tmp_path)


def test_the_commented_device_api_section_shows_examples_that_load(tmp_path: Path) -> None:
    lines = config.SKELETON.split("# [device_api]", 1)[1].splitlines()[1:]
    assert lines and all(line.startswith("# ") for line in lines)
    data = tomllib.loads("[device_api]\n" + "\n".join(line[2:] for line in lines))
    assert data["device_api"]["listen"] == "0.0.0.0:8443"
    assert set(data["device_api"]) == {"listen", "public_host", "tls_cert", "tls_key"}
    assert config.build(data, {}, tmp_path).device_api.public_host == "pbx.example.com:8443"


def test_init_writes_the_state_dir_into_the_generated_skeleton(tmp_path: Path) -> None:
    text = init_skeleton(tmp_path)
    assert f'url = "sqlite:///{tmp_path / "securelink.sqlite3"}"' in text
    assert init_skeleton(None) == config.SKELETON


def test_every_field_has_help_and_a_default_inside_its_range() -> None:
    for name, cls in config.SECTIONS.items():
        assert cls.NAME == name
        for f in dataclasses.fields(cls):
            assert meta.help_text(f).strip(), f"{name}.{f.name} has no help"
            assert "{range}" not in meta.help_text(f)
        assert meta.range_problems(name, cls()) == [] and cls().problems() == []


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        (config.KeysConfig(period=4), "keys.period: must be 5..60 seconds, got 4"),
        (config.KeysConfig(t0=-1), "keys.t0: must be >= 0, got -1"),
        (config.KeysConfig(look_behind=6), "keys.look_behind: must be 0..5, got 6"),
        (config.KeysConfig(default_country_code="+1"), "keys.default_country_code: must be an E.164 country code"),
        (config.InboundConfig(max_in_flight=0), "inbound.max_in_flight: must be 1..10000, got 0"),
        (config.InboundConfig(max_in_flight=10_001), "inbound.max_in_flight: must be 1..10000, got 10001"),
        (config.InboundConfig(dial_prefix="123456789"), "inbound.dial_prefix: must be 1..8 digits or empty"),
        (config.LockoutConfig(max_total_guess_probability=2.0), "lockout.max_total_guess_probability: must be > 0"),
        (config.AmiConfig(port=0), "ami.port: must be a TCP port 1..65535, got 0"),
        (config.AgiConfig(port=65536), "agi.port: must be a TCP port 1..65535, got 65536"),
        (config.AgiConfig(allow_from=("nope",)), "agi.allow_from: 'nope' is not an IP address"),
        (config.AgiConfig(host="192.0.2.1"), "agi.host: 192.0.2.1 is not a loopback address"),
        (config.OutboundConfig(ring_timeout=4), "outbound.ring_timeout: must be 5..300 seconds, got 4"),
        (config.OutboundConfig(present="number"), "outbound.present_number: "),
        (config.EscrowConfig(retention_days=0), "escrow.retention_days: must be >= 1, got 0"),
        (config.MetricsConfig(listen="192.0.2.1:9466"), "metrics.listen: 192.0.2.1 is not a loopback address"),
        (config.LogConfig(level="LOUD"), "log.level: must be DEBUG, INFO, WARNING or ERROR, got 'LOUD'"),
        (config.DatabaseConfig(url="mysql://x"), "database.url: must be a sqlite:// or postgresql:// URL"),
    ],
)
def test_each_section_checks_itself(section: object, problem: str, tmp_path: Path) -> None:
    found = section.problems()  # type: ignore[attr-defined]
    assert found and found[0].startswith(problem), found
    with pytest.raises(config.ConfigError) as raised:
        _build_with(section, tmp_path)  # the loader raises the same line
    assert str(raised.value).startswith(problem)


def _build_with(section: object, tmp_path: Path) -> None:
    """Build a config holding `section` (the loader's path: `Config.problems` stops at the first problem)."""
    values = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}  # type: ignore[arg-type]
    data = {type(section).NAME: {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}}  # type: ignore[attr-defined]
    config.build(data, {}, tmp_path)


def test_a_range_refuses_what_is_not_a_number() -> None:
    section = config.KeysConfig(period="30")  # type: ignore[arg-type]  # built in code, not coerced by the loader
    assert meta.range_problems("keys", section) == ["keys.period: must be 5..60 seconds, got '30'"]
    assert meta.range_problems("keys", config.KeysConfig(period=True)) == [
        "keys.period: must be 5..60 seconds, got True"
    ]
