"""The provisioning parameters this platform gives every device, from its config: one builder for both ways a device
gets them, the URI of `securelink device add|rotate` and the device API's enrollment and status answers.

What a phone is offered (`offer`, CALLING.md "Provisioning: SLK1 1.2"): every phone can be given `[inbound] mode`
(ani or dnis: the shipped dialplan keeps those entries, so the platform always offers one); a phone that speaks SLK1
1.2 is given `intent` when `[calling]` offers intents (access numbers and `intent = on`), `dtmf` when it has access
numbers with intents off, with `access` the first of `[calling] access_numbers` (the number the phone dials for DTMF;
an intent names a number of the whole pool, chosen at random)."""

from __future__ import annotations

from dataclasses import replace

from asterisk_securelink.config import Config
from asterisk_securelink.core.provisioning import DeviceParams, Offer
from asterisk_securelink.deviceapi.ports import IntentSettings


def provision_mode(cfg: Config) -> str:
    """The provisioning's `mode`: how the phone presents its key. `inbound.mode = either` accepts both; the phone is
    told `dnis` when a DNIS access prefix (`inbound.dial_prefix`) is configured, else `ani`."""
    mode = cfg.inbound.mode
    if mode == "either":
        return "dnis" if cfg.inbound.dial_prefix else "ani"
    return mode


def device_params(cfg: Config) -> DeviceParams:
    """Every SLK1 1.1 provisioning parameter but key_id and secret: `trunk` is `keys.trunk_prefixes` (the phone
    compares the platform's outbound keys with it), `dial` is `inbound.dial_prefix` for mode `dnis` and empty for
    `ani` (SLK1.md: `dial` is for `dnis`; a phone told `ani` is given none)."""
    k = cfg.keys
    mode = provision_mode(cfg)
    return DeviceParams(
        period=k.period,
        t0=k.t0,
        inbound_format=k.inbound_format,
        outbound_format=k.outbound_format,
        look_behind=k.look_behind,
        look_ahead=k.look_ahead,
        trunk=k.trunk_prefixes,
        mode=mode,
        dial=cfg.inbound.dial_prefix if mode == "dnis" else "",
    )


def access_params(cfg: Config) -> DeviceParams | None:
    """The SLK1 1.2 parameters for a phone that speaks 1.2: mode `intent` (intents on) or `dtmf`, `access` the first
    access number; None when `[calling]` has no access numbers."""
    calling = cfg.calling
    if not calling.access_numbers:
        return None
    mode = "intent" if calling.intents_on else "dtmf"
    return replace(device_params(cfg), mode=mode, dial="", access=calling.access_numbers[0])


def offer(cfg: Config) -> Offer:
    """What this platform provisions, by the phone's version (the device API's enrollment and status answers)."""
    return Offer(device_params(cfg), access_params(cfg))


def intent_settings(cfg: Config) -> IntentSettings:
    """`[calling]` as the device API's intent route needs it."""
    c = cfg.calling
    return IntentSettings(c.access_numbers, c.intents_on, c.intent_ttl, c.intent_quiet, policy=cfg.routing,
                          home=cfg.routing.home)  # fmt: skip
