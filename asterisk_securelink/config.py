"""Configuration: one TOML file, environment overrides `SECURELINK_<SECTION>_<KEY>`, validated at load.

Every error names the bad key (`keys.period: ...`). Relative paths are resolved against the config file's folder
(the working directory when there is no file). Secrets (the ARI/AMI passwords) are never echoed in errors.
"""

from __future__ import annotations

import math
import os
import tomllib
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from asterisk_securelink.asterisk.agi_access import DEFAULT_ALLOW_FROM, check_listen, parse_allow_from
from asterisk_securelink.core.compare import COUNTRY_CODES, check_trunk_prefixes, to_e164
from asterisk_securelink.core.formats import FormatError, NumberFormat
from asterisk_securelink.core.slk1 import MAX_PERIOD, MIN_PERIOD
from asterisk_securelink.deviceapi.settings import DeviceApiConfig
from asterisk_securelink.deviceapi.settings import problems as device_api_problems
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
    "lockout.window": "removed: a source's guesses count for 24 hours; a registered number backs off progressively "
    "(lockout.backoff, lockout.cooldown)",
}
MAX_DIAL_PREFIX_DIGITS = 8


class ConfigError(InputError, ValueError):
    """A configuration problem; the message names the key and says what is expected."""


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite+aiosqlite:///securelink.sqlite3"


@dataclass(frozen=True)
class KeysConfig:
    master_key_file: str = "master.key"
    period: int = 30
    t0: int = 0
    look_behind: int = 1
    look_ahead: int = 1  # SLK1 1.1: a device may place a second keyed call within one period
    inbound_format: str = "XXXXXXXXXX"
    outbound_format: str = "XXXXXXXXXX"
    trunk_prefixes: tuple[str, ...] = ()  # digits a carrier may put in front of a number (SLK1.md, comparing)
    default_country_code: str = ""  # for `device add --number` in national form; empty: national input refused


@dataclass(frozen=True)
class InboundConfig:
    mode: Literal["ani", "dnis", "either"] = "ani"
    admitted_context: str = "securelink-admitted"
    registration_context: str = "securelink-register"
    on_failure: Literal["reject", "continue"] = "reject"
    anonymous: Literal["reject", "continue"] = "reject"
    require_registered_number: bool = False
    dial_prefix: str = ""  # DNIS: an access prefix the phone dials before the key's significant part
    max_in_flight: int = 16  # admissions decided at once; past it a call is turned away at once (`error`, overload)
    overload_hangup: Literal["congestion", "rejected"] = "congestion"  # SIP 503 (try elsewhere) or 403


MAX_IN_FLIGHT = 10_000


@dataclass(frozen=True)
class LockoutConfig:
    """docs/decisions.md, "A guess budget per source, a backoff per registered number" (`core.lockout`)."""

    enabled: bool = True
    max_guess_probability: float = 1e-6  # key alone: a source's guesses admit anyone with at most this, per 24 h
    max_failures: int = 5  # two-factor: failures in a row with one registered number before it backs off
    backoff: int = 30  # seconds of the first backoff; doubles with each further failure
    cooldown: int = 900  # seconds: the longest backoff


@dataclass(frozen=True)
class AriConfig:
    url: str = "http://127.0.0.1:8088"
    username: str = "securelink"
    password: str = ""
    app: str = "securelink"
    node: str = ""  # this node's identity in "the same call" (node + uniqueid); empty: Asterisk's entity id


@dataclass(frozen=True)
class AmiConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "securelink"
    secret: str = ""


@dataclass(frozen=True)
class AgiConfig:
    host: str = "127.0.0.1"
    port: int = 4573
    allow_from: tuple[str, ...] = DEFAULT_ALLOW_FROM  # peers (addresses, networks) FastAGI accepts connections from
    allow_remote: bool = False  # a non-loopback agi.host must be asked for explicitly


@dataclass(frozen=True)
class OutboundConfig:
    endpoint: str = "PJSIP/{number}@carrier"
    ring_timeout: int = 30
    present: Literal["key", "number"] = "key"  # the mobile leg's caller ID: a fresh key, or present_number
    present_number: str = ""  # number mode: the enterprise's own E.164 number; the phone verifies by claiming


@dataclass(frozen=True)
class EscrowConfig:
    public_key_file: str = ""
    retention_days: int = 90


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = ""  # host:port of /metrics and /health; empty = off
    allow_remote: bool = False  # a non-loopback listen address must be asked for explicitly


@dataclass(frozen=True)
class LogConfig:
    level: str = "INFO"
    json: bool = False


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    inbound: InboundConfig = field(default_factory=InboundConfig)
    lockout: LockoutConfig = field(default_factory=LockoutConfig)
    ari: AriConfig = field(default_factory=AriConfig)
    ami: AmiConfig = field(default_factory=AmiConfig)
    agi: AgiConfig = field(default_factory=AgiConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    escrow: EscrowConfig = field(default_factory=EscrowConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    device_api: DeviceApiConfig = field(default_factory=DeviceApiConfig)
    log: LogConfig = field(default_factory=LogConfig)
    base_dir: Path = field(default_factory=Path.cwd)  # where relative paths are resolved from
    source: Path | None = None  # the file it was read from

    # -- derived values -------------------------------------------------------------------------------
    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def master_key_path(self) -> Path:
        return self.path(self.keys.master_key_file)

    @property
    def inbound_fmt(self) -> NumberFormat:
        return NumberFormat(self.keys.inbound_format)

    @property
    def outbound_fmt(self) -> NumberFormat:
        return NumberFormat(self.keys.outbound_format)

    @property
    def database_url(self) -> str:
        return async_database_url(self.database.url, self.base_dir)

    def warnings(self) -> list[str]:
        return [w for w in (self.inbound_fmt.warning, self.outbound_fmt.warning) if w]


SECTIONS: dict[str, type[Any]] = {
    name: hint for name, hint in typing.get_type_hints(Config).items() if name not in ("base_dir", "source")
}


def async_database_url(url: str, base_dir: Path) -> str:
    """Pick the asyncio driver for a plain URL and resolve a relative SQLite path against `base_dir`."""
    for plain, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            url = driver + url[len(plain) :]
    if url.startswith("sqlite+aiosqlite:///") and not url.startswith("sqlite+aiosqlite:////"):
        rest = url[len("sqlite+aiosqlite:///") :]
        if rest and not rest.startswith(":memory:") and not rest.startswith("file:"):
            url = "sqlite+aiosqlite:///" + str(base_dir / rest)
    return url


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


def _validate(cfg: Config) -> None:
    k = cfg.keys
    if not MIN_PERIOD <= k.period <= MAX_PERIOD:
        raise ConfigError(f"keys.period: must be {MIN_PERIOD}..{MAX_PERIOD} seconds, got {k.period}")
    if k.t0 < 0:
        raise ConfigError(f"keys.t0: must be >= 0, got {k.t0}")
    if not 0 <= k.look_behind <= 5:
        raise ConfigError(f"keys.look_behind: must be 0..5, got {k.look_behind}")
    if not 0 <= k.look_ahead <= 2:
        raise ConfigError(f"keys.look_ahead: must be 0..2, got {k.look_ahead}")
    for name in ("inbound_format", "outbound_format"):
        try:
            NumberFormat(getattr(k, name))
        except FormatError as exc:
            raise ConfigError(f"keys.{name}: {exc}") from None
    _validate_numbers(cfg)
    _validate_lockout(cfg.lockout)
    for section, key, value in (("ami", "port", cfg.ami.port), ("agi", "port", cfg.agi.port)):
        if not 1 <= value <= 65535:
            raise ConfigError(f"{section}.{key}: must be a TCP port 1..65535, got {value}")
    _validate_ari(cfg.ari)
    if "{number}" not in cfg.outbound.endpoint:
        raise ConfigError("outbound.endpoint: must contain {number}, e.g. PJSIP/{number}@carrier")
    if not 5 <= cfg.outbound.ring_timeout <= 300:
        raise ConfigError(f"outbound.ring_timeout: must be 5..300 seconds, got {cfg.outbound.ring_timeout}")
    _validate_device_api(cfg)
    if cfg.escrow.retention_days < 1:
        raise ConfigError(f"escrow.retention_days: must be >= 1, got {cfg.escrow.retention_days}")
    if cfg.metrics.listen:
        from asterisk_securelink.metrics import parse_listen

        try:
            parse_listen(cfg.metrics.listen, cfg.metrics.allow_remote)
        except ValueError as exc:
            raise ConfigError(f"metrics.listen: {exc}") from None
    if cfg.log.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log.level: must be DEBUG, INFO, WARNING or ERROR, got {cfg.log.level!r}")
    if not cfg.database.url.startswith(("sqlite", "postgresql", "postgres")):
        raise ConfigError("database.url: must be a sqlite:// or postgresql:// URL")


def _validate_lockout(lo: LockoutConfig) -> None:
    if not 0 < lo.max_guess_probability <= 1:
        raise ConfigError(
            f"lockout.max_guess_probability: must be > 0 and <= 1 (e.g. 1e-6), got {lo.max_guess_probability}"
        )
    for name in ("max_failures", "backoff"):
        if getattr(lo, name) < 1:
            raise ConfigError(f"lockout.{name}: must be >= 1, got {getattr(lo, name)}")
    if lo.cooldown < lo.backoff:
        raise ConfigError(f"lockout.cooldown: must be >= lockout.backoff ({lo.backoff}), got {lo.cooldown}")


def _validate_device_api(cfg: Config) -> None:
    """`[device_api]` (`deviceapi.settings.problems`) and `outbound.present`: number mode presents an E.164 number
    the phone can claim with (SLK1 1.1 compares it like a registered number)."""
    found = device_api_problems(cfg.device_api)
    if found:
        raise ConfigError(found[0])
    out = cfg.outbound
    if out.present == "number":
        try:
            number = to_e164(out.present_number, None)
        except ValueError as exc:
            raise ConfigError(f"outbound.present_number: {exc} (outbound.present = number needs it)") from None
        if number != out.present_number.strip():
            raise ConfigError(f"outbound.present_number: write it in E.164 form, {number}")


def _validate_numbers(cfg: Config) -> None:
    """The number-form settings of SLK1 1.1: trunk prefixes, the default country code, the DNIS access prefix."""
    k = cfg.keys
    try:
        check_trunk_prefixes(k.trunk_prefixes)
    except ValueError as exc:
        raise ConfigError(f'keys.trunk_prefixes: {exc} (e.g. ["0", "00", "011"])') from None
    if k.default_country_code and k.default_country_code not in COUNTRY_CODES:
        raise ConfigError(
            "keys.default_country_code: must be an E.164 country code without '+' (e.g. 1, 44, 49), "
            f"got {k.default_country_code!r}"
        )
    if not 1 <= cfg.inbound.max_in_flight <= MAX_IN_FLIGHT:
        raise ConfigError(f"inbound.max_in_flight: must be 1..{MAX_IN_FLIGHT}, got {cfg.inbound.max_in_flight}")
    prefix = cfg.inbound.dial_prefix
    if prefix and not (len(prefix) <= MAX_DIAL_PREFIX_DIGITS and prefix.isascii() and prefix.isdigit()):
        raise ConfigError(f"inbound.dial_prefix: must be 1..{MAX_DIAL_PREFIX_DIGITS} digits or empty, got {prefix!r}")
    try:
        parse_allow_from(cfg.agi.allow_from)
    except ValueError as exc:
        raise ConfigError(f'agi.allow_from: {exc} (e.g. ["127.0.0.1", "10.0.0.0/24"])') from None
    problem = check_listen(cfg.agi.host, cfg.agi.allow_remote)
    if problem is not None:
        raise ConfigError(f"agi.host: {problem}")


def _validate_ari(ari: AriConfig) -> None:
    """`ari.url` is http(s)://host[:port][/path]. The URL is never echoed: one carrying credentials (user:password@,
    ?api_key=) is refused, since the password is a secret and a URL ends up in logs; they go in ari.username and
    ari.password."""
    example = "(e.g. http://127.0.0.1:8088)"
    if "@" in ari.url or "?" in ari.url or "#" in ari.url:
        raise ConfigError(
            "ari.url: must not carry credentials, a query or a fragment (user:password@, ?api_key=): "
            "put the user in ari.username and the password in ari.password"
        )
    try:
        url = urllib.parse.urlsplit(ari.url)
        port = url.port  # raises on a port that is not 0..65535
    except ValueError:
        raise ConfigError(f"ari.url: not a valid URL {example}") from None
    if url.scheme not in ("http", "https"):
        raise ConfigError(f"ari.url: must start with http:// or https:// {example}")
    if not url.hostname or port == 0:
        raise ConfigError(f"ari.url: must name a host and, optionally, a port 1..65535 {example}")
    node = ari.node
    if node and (len(node) > 64 or not node.isascii() or not node.isprintable() or " " in node):
        raise ConfigError(f"ari.node: must be 1..64 printable ASCII characters without spaces, got {node!r}")


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
        hints = typing.get_type_hints(cls)
        values = sections.get(section, {})
        unknown = sorted(set(values) - set(hints))
        for name in (f"{section}.{key}" for key in unknown):
            if name in _REMOVED:
                raise ConfigError(f"{name}: {_REMOVED[name]}")
        if unknown:
            raise ConfigError(f"{section}.{unknown[0]}: unknown key (known: {', '.join(hints)})")
        built[section] = cls(**{k: _coerce(section, k, v, hints[k]) for k, v in values.items()})
    cfg = Config(**built, base_dir=base_dir, source=source)
    _validate(cfg)
    return cfg


def find(path: str | os.PathLike[str] | None, env: dict[str, str], system: Path = SYSTEM_CONFIG) -> Path:
    """Which config file to use: `path` (--config), else $SECURELINK_CONFIG, else ./securelink.toml, else the system
    installation's /etc/securelink/securelink.toml. None of them: an error naming where it looked (never a silent
    default, which would start a second, separate installation in the current directory)."""
    chosen = path or env.get(CONFIG_ENV)
    if chosen:
        return Path(chosen).expanduser().resolve()
    for candidate in (Path(DEFAULT_CONFIG_NAME), system):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(
        f"no config file: looked for --config, ${CONFIG_ENV}, ./{DEFAULT_CONFIG_NAME} and {system}; "
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


SKELETON = """\
# asterisk-securelink configuration. Every key, its default and meaning: README.md, "Configuration reference".
# Environment variables SECURELINK_<SECTION>_<KEY> override these values (e.g. SECURELINK_KEYS_PERIOD=10).

[database]
url = "sqlite:///securelink.sqlite3"      # or postgresql://user@host/dbname

[keys]
master_key_file = "master.key"           # base64 of 32 random bytes, mode 0600; created by `securelink init`
period = 30                              # key refresh period, 5..60 s
look_behind = 1                          # previous windows accepted
look_ahead = 1                           # next windows accepted: a redial within one period (burst), clock skew
inbound_format = "XXXXXXXXXX"            # device -> PBX key format (X=0-9, N=2-9, Z=1-9, digits, leading +)
outbound_format = "XXXXXXXXXX"           # PBX -> device caller-ID format
trunk_prefixes = []                      # digits your carrier may put in front of numbers, e.g. ["0", "00", "011"]
default_country_code = ""                # e.g. "1" or "44": lets `device add --number` take national numbers

[inbound]
mode = "ani"                             # ani | dnis | either
admitted_context = "securelink-admitted"
registration_context = "securelink-register"
on_failure = "reject"                    # reject | continue (continue with SECURELINK_RESULT set)
anonymous = "reject"                     # reject | continue (unverified)
require_registered_number = false        # two-factor: the caller's registered number picks the device (DNIS)
max_in_flight = 16                       # admissions decided at once; more calls are turned away (overload)
overload_hangup = "congestion"           # congestion (SIP 503) | rejected (SIP 403)

[lockout]
max_guess_probability = 1e-6             # key alone: chance per 24 h that a trunk's guesses admit anyone
max_failures = 5                         # two-factor: failures in a row with one registered number, then it backs off
backoff = 30                             # seconds of the first backoff, doubling with each further failure
cooldown = 900                           # seconds: the longest backoff

[ari]
url = "http://127.0.0.1:8088"
username = "securelink"
password = ""
app = "securelink"

[ami]
host = "127.0.0.1"
port = 5038
username = "securelink"
secret = ""

[agi]
host = "127.0.0.1"
port = 4573
allow_from = ["127.0.0.0/8", "::1"]      # Asterisk hosts FastAGI accepts connections from
allow_remote = false                     # a non-loopback host must be asked for explicitly

# [device_api]                           # the phones' HTTPS API: enrollment by code, per-call keys (README)
# listen = "0.0.0.0:8443"
# public_host = "pbx.example.com:8443"   # the name phones reach; every request signature covers it
# tls_cert = "/etc/securelink/tls/cert.pem"
# tls_key = "/etc/securelink/tls/key.pem"
"""
