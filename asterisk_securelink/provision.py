"""The provisioning parameters every device gets, from the config (the same values `securelink device add` puts in
its URI and the device API's enroll answer carries)."""

from __future__ import annotations

from asterisk_securelink.config import Config
from asterisk_securelink.deviceapi.ports import DeviceParams


def provision_mode(cfg: Config) -> str:
    """The provisioning's `mode`: how the phone presents its key. `inbound.mode = either` accepts both; the phone is
    told `dnis` when a DNIS access prefix (`inbound.dial_prefix`) is configured, else `ani`."""
    mode = cfg.inbound.mode
    if mode == "either":
        return "dnis" if cfg.inbound.dial_prefix else "ani"
    return mode


def device_params(cfg: Config) -> DeviceParams:
    k = cfg.keys
    return DeviceParams(
        period=k.period,
        t0=k.t0,
        inbound_format=k.inbound_format,
        outbound_format=k.outbound_format,
        look_behind=k.look_behind,
        look_ahead=k.look_ahead,
        trunk=k.trunk_prefixes,
        mode=provision_mode(cfg),
        dial=cfg.inbound.dial_prefix,
    )
