"""Configuration: one TOML file, environment overrides `SECURELINK_<SECTION>_<KEY>`, validated at load.

`calls`, `services` (and `deviceapi.settings`) hold the sections, each field with its default, help and range,
each section checking itself; `sections` puts them together as `Config`; `load` reads and validates a file;
`reference` generates the config skeleton and the README's table from the fields.
Everything callers use is importable from here.
"""

from __future__ import annotations

from asterisk_securelink.config.calling import CallingConfig
from asterisk_securelink.config.calls import (
    MAX_DIAL_PREFIX_DIGITS,
    MAX_IN_FLIGHT,
    InboundConfig,
    KeysConfig,
    LockoutConfig,
    OutboundConfig,
)
from asterisk_securelink.config.load import (
    CONFIG_ENV,
    DEFAULT_CONFIG_NAME,
    ENV_PREFIX,
    SYSTEM_CONFIG,
    SYSTEM_STATE_DIR,
    ConfigError,
    build,
    find,
    load,
)
from asterisk_securelink.config.reference import SKELETON
from asterisk_securelink.config.routing import RoutingConfig
from asterisk_securelink.config.sections import SECTIONS, Config
from asterisk_securelink.config.services import (
    AgiConfig,
    AmiConfig,
    AriConfig,
    DatabaseConfig,
    EscrowConfig,
    LogConfig,
    MetricsConfig,
    async_database_url,
)
from asterisk_securelink.deviceapi.settings import DeviceApiConfig

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_NAME",
    "ENV_PREFIX",
    "MAX_DIAL_PREFIX_DIGITS",
    "MAX_IN_FLIGHT",
    "SECTIONS",
    "SKELETON",
    "SYSTEM_CONFIG",
    "SYSTEM_STATE_DIR",
    "AgiConfig",
    "AmiConfig",
    "AriConfig",
    "CallingConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "DeviceApiConfig",
    "EscrowConfig",
    "InboundConfig",
    "KeysConfig",
    "LockoutConfig",
    "LogConfig",
    "MetricsConfig",
    "OutboundConfig",
    "RoutingConfig",
    "async_database_url",
    "build",
    "find",
    "load",
]
