"""The provisioning parameters this platform gives every device, from its config: one builder for both ways a device
gets them, the URI of `securelink device add|rotate` and the device API's enrollment and status answers."""

from __future__ import annotations

from asterisk_securelink.config import Config
from asterisk_securelink.core.provisioning import DeviceParams


def provision_mode(cfg: Config) -> str:
    """The provisioning's `mode`: how the phone presents its key. `inbound.mode = either` accepts both; the phone is
    told `dnis` when a DNIS access prefix (`inbound.dial_prefix`) is configured, else `ani`."""
    mode = cfg.inbound.mode
    if mode == "either":
        return "dnis" if cfg.inbound.dial_prefix else "ani"
    return mode


def device_params(cfg: Config) -> DeviceParams:
    """Every SLK1 1.1 provisioning parameter but key_id and secret: `trunk` is `keys.trunk_prefixes` (the phone
    compares the platform's outbound keys with it), `dial` is `inbound.dial_prefix`."""
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
