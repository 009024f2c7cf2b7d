"""The configuration: its sections, in file order, each with its own metadata (whether and how the config skeleton
shows it), and the values derived from them.

Defaults, help and ranges are written once, on the sections' fields (`config.calls`, `config.services`,
`deviceapi.settings`): the config skeleton and the README's configuration table are generated from them
(`config.reference`). Each section checks itself (`problems()`); `Config.problems` asks them in order.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asterisk_securelink.config.calling import CallingConfig
from asterisk_securelink.config.calls import InboundConfig, KeysConfig, LockoutConfig, OutboundConfig
from asterisk_securelink.config.routing import RoutingConfig
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
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.deviceapi.settings import DeviceApiConfig


def section(skeleton: str = "", note: str = "") -> dict[str, str]:
    """A section's own metadata in `Config`: `skeleton` "" (left out of the config skeleton), "yes" or "commented"
    (shown commented out, with the fields' examples), and the comment after the section's header."""
    return {"skeleton": skeleton, "note": note}


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig, metadata=section("yes"))
    keys: KeysConfig = field(default_factory=KeysConfig, metadata=section("yes"))
    inbound: InboundConfig = field(default_factory=InboundConfig, metadata=section("yes"))
    lockout: LockoutConfig = field(default_factory=LockoutConfig, metadata=section("yes"))
    ari: AriConfig = field(default_factory=AriConfig, metadata=section("yes"))
    ami: AmiConfig = field(default_factory=AmiConfig, metadata=section("yes"))
    agi: AgiConfig = field(default_factory=AgiConfig, metadata=section("yes"))
    outbound: OutboundConfig = field(default_factory=OutboundConfig, metadata=section())
    calling: CallingConfig = field(default_factory=CallingConfig, metadata=section())
    routing: RoutingConfig = field(default_factory=RoutingConfig, metadata=section())
    escrow: EscrowConfig = field(default_factory=EscrowConfig, metadata=section())
    metrics: MetricsConfig = field(default_factory=MetricsConfig, metadata=section())
    device_api: DeviceApiConfig = field(
        default_factory=DeviceApiConfig,
        metadata=section("commented", "the phones' HTTPS API: enrollment by code, per-call keys (README)"),
    )
    log: LogConfig = field(default_factory=LogConfig, metadata=section())
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

    def problems(self) -> list[str]:
        """Every section's problems, in section order (each section checks itself)."""
        return [p for name in SECTIONS for p in getattr(self, name).problems()]


SECTIONS: dict[str, type[Any]] = {
    name: hint for name, hint in typing.get_type_hints(Config).items() if name not in ("base_dir", "source")
}
