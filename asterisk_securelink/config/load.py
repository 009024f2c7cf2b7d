"""Loading: one TOML file, environment overrides `SECURELINK_<SECTION>_<KEY>`, each value coerced to its field's
type, then every section checks itself (`Config.problems`).

Every error names the bad key (`keys.period: ...`). Relative paths are resolved against the config file's folder
(the working directory when there is no file). Secrets (the ARI/AMI passwords) are never echoed in errors.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal

from asterisk_securelink.config.sections import SECTIONS, Config
from asterisk_securelink.errors import InputError

ENV_PREFIX = "SECURELINK_"
CONFIG_ENV = "SECURELINK_CONFIG"
DEFAULT_CONFIG_NAME = "securelink.toml"
SYSTEM_CONFIG = Path("/etc/securelink/securelink.toml")  # the system installation (`securelink init` as root)
SYSTEM_STATE_DIR = Path("/var/lib/securelink")  # where a system installation keeps what it writes at run time
_SECRET_KEYS = frozenset({"password", "secret"})
_REMOVED = {  # keys of earlier versions: what replaces them
    "lockout.source_max_failures": "removed: a source's budget is derived from lockout.max_guess_probability and the "
    "key strength (README, Configuration reference; `securelink doctor` prints it)",
    "lockout.window": "removed: a source's guesses count for 24 hours, a registered number's too",
    **dict.fromkeys(
        ("lockout.max_failures", "lockout.backoff", "lockout.cooldown"),
        "removed: a registered number's allowance is derived from lockout.max_guess_probability and the key strength "
        "(floor(P·S / W) failed guesses in any 24 hours; `securelink doctor` prints it)",
    ),
}


class ConfigError(InputError, ValueError):
    """A configuration problem; the message names the key and says what is expected."""


def _coerce(section: str, key: str, value: Any, hint: Any) -> Any:
    name = f"{section}.{key}"
    shown = "(hidden)" if key in _SECRET_KEYS else repr(value)
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{name}: must be one of {', '.join(map(str, choices))}, got {shown}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{name}: must be true or false, got {shown}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{name}: must be a whole number, got {shown}")
    if hint is float:
        number = value.strip() if isinstance(value, str) else value
        try:
            if isinstance(number, str | int | float) and not isinstance(number, bool):
                result = float(number)
                if math.isfinite(result):
                    return result
        except ValueError:
            pass
        raise ConfigError(f"{name}: must be a number (e.g. 1e-6), got {shown}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name}: must be a string, got {shown}")
    if origin is tuple:  # a list of strings; from the environment a comma list ("0,00,011")
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, list) and all(isinstance(v, str) for v in items):
            return tuple(dict.fromkeys(v.strip() for v in items if v.strip()))  # trimmed, each once, in order
        raise ConfigError(f"{name}: must be a list of strings, got {shown}")
    raise ConfigError(f"{name}: unsupported type")  # pragma: no cover - every field has one of the types above


def build(data: dict[str, Any], env: dict[str, str], base_dir: Path, source: Path | None = None) -> Config:
    """Validate `data` (parsed TOML) plus environment overrides into a Config."""
    sections: dict[str, dict[str, Any]] = {}
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{section}: unknown section (known: {', '.join(SECTIONS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: must be a table ([{section}])")
        sections[section] = dict(values)
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        section = next((name for name in SECTIONS if rest.startswith(name + "_")), "")  # device_api has a '_'
        key = rest[len(section) + 1 :] if section else ""
        if section in SECTIONS and key:
            sections.setdefault(section, {})[key] = value
    built: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        types = typing.get_type_hints(cls)
        hints = {f.name: types[f.name] for f in dataclasses.fields(cls)}
        values = sections.get(section, {})
        unknown = sorted(set(values) - set(hints))
        for name in (f"{section}.{key}" for key in unknown):
            if name in _REMOVED:
                raise ConfigError(f"{name}: {_REMOVED[name]}")
        if unknown:
            raise ConfigError(f"{section}.{unknown[0]}: unknown key (known: {', '.join(hints)})")
        built[section] = cls(**{k: _coerce(section, k, v, hints[k]) for k, v in values.items()})
    cfg = Config(**built, base_dir=base_dir, source=source)
    problems = cfg.problems()
    if problems:
        raise ConfigError(problems[0])
    return cfg


def find(path: str | os.PathLike[str] | None, env: dict[str, str], system: Path = SYSTEM_CONFIG) -> Path:
    """Which config file to use: `path` (--config), else $SECURELINK_CONFIG, else ./securelink.toml, else the system
    installation's /etc/securelink/securelink.toml. A current folder this user may not read (the service user in
    /root) is passed over. None of them: an error naming where it looked (never a silent default, which would start
    a second, separate installation in the current directory)."""
    chosen = path or env.get(CONFIG_ENV)
    if chosen:
        return Path(chosen).expanduser().resolve()
    unreadable = ""
    for candidate in (Path(DEFAULT_CONFIG_NAME), system):
        try:
            if candidate.is_file():
                return candidate.resolve()
        except PermissionError:  # e.g. `runuser -u securelink` in /root: the folder is not the service user's
            unreadable = f" (this user may not look in {Path(candidate).absolute().parent}: cd / first)"
    raise ConfigError(
        f"no config file: looked for --config, ${CONFIG_ENV}, ./{DEFAULT_CONFIG_NAME}{unreadable} and {system}; "
        f"pass --config FILE (or run `securelink init` to create an installation)"
    )


def load(
    path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None, system: Path = SYSTEM_CONFIG
) -> Config:
    """Load the config file that `find` picks."""
    env = dict(os.environ) if env is None else env
    file = find(path, env, system)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {file} not found (run `securelink init` to create one)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {file}: cannot be read: {exc.strerror}") from None
    return build(data, env, file.parent, file)
