"""`securelink doctor`'s checks of the access number (CALLING.md): the windows DTMF needs, the trunk's DTMF mode, and
which of the intent's defences are on."""

from __future__ import annotations

from asterisk_securelink.app import ari_client
from asterisk_securelink.asterisk.ari.errors import AriError
from asterisk_securelink.config import Config
from asterisk_securelink.core.keyindex import Window
from asterisk_securelink.core.policy import strength_bits
from asterisk_securelink.doctor.check import Check
from asterisk_securelink.outbound.hooks import pjsip_endpoint_name

DTMF_MODE = "auto"  # RFC 4733 when the carrier sends events, in-band on G.711 otherwise


def dtmf_window_check(cfg: Config) -> Check:
    """A DTMF key may be `dtmf_setup_s` older than the answer: look_behind must reach that far."""
    k, calling = cfg.keys, cfg.calling
    need = calling.look_behind_needed(k.period)
    if k.look_behind >= need:
        return Check("DTMF windows", True, f"look_behind {k.look_behind} covers dtmf_setup_s {calling.dtmf_setup_s} s")
    width = Window(k.period, k.t0, need, k.look_ahead).width
    cost = strength_bits(1, width, 1) - strength_bits(1, Window(k.period, k.t0, k.look_behind, k.look_ahead).width, 1)
    return Check(
        "DTMF windows",
        False,
        f"keys.look_behind = {k.look_behind} does not cover calling.dtmf_setup_s = {calling.dtmf_setup_s} s of call "
        f"setup at period {k.period} s: a phone's key is older than that window when the PBX answers",
        f"set keys.look_behind = {need} (costs key-alone modes {-cost:.2f} bits of strength), or lower dtmf_setup_s",
    )


async def access_trunk_check(cfg: Config) -> Check:
    """The trunk the access numbers arrive on (`outbound.endpoint`'s endpoint) sends DTMF in a way the app hears."""
    name = pjsip_endpoint_name(cfg.outbound.endpoint)
    if name is None:
        return Check("access trunk DTMF", True, "not a PJSIP trunk: its DTMF mode is not checked", warn=True)
    ari = ari_client(cfg)
    try:
        endpoint = await ari.get_config_object("res_pjsip", "endpoint", name)
    except (AriError, OSError) as exc:
        return Check("access trunk DTMF", False, f"cannot read endpoint {name!r} over ARI ({type(exc).__name__})")
    finally:
        await ari.close()
    mode = (endpoint or {}).get("dtmf_mode", "")
    if mode == DTMF_MODE:
        return Check("access trunk DTMF", True, f"endpoint {name!r} has dtmf_mode = {DTMF_MODE}")
    return Check(
        "access trunk DTMF",
        False,
        f"endpoint {name!r} has dtmf_mode = {mode or '(none)'}: keys sent as DTMF may not reach the app",
        f"pjsip.conf, [{name}] type=endpoint: dtmf_mode = {DTMF_MODE}; then `pjsip reload`",
    )


def intent_defences_check(cfg: Config) -> Check:
    """Which of the racing-spoofer defences (CALLING.md, "The racing spoofer") are on."""
    c = cfg.calling
    if not c.intents_on:
        return Check("intent", True, "off (calling.intent = off or no access numbers): calls use DTMF")
    on = [
        f"noise records + {c.intent_quiet} s quiet window" if c.intent_quiet else "",
        "cancel on conflict",
        "no dial tone by intent",
        "STIR/SHAKEN attestation A" if c.intent_attestation else "",
    ]
    off = "" if c.intent_attestation else "; attestation off (calling.intent_attestation = A needs Asterisk 20.7+)"
    return Check("intent", True, "on, with " + ", ".join(d for d in on if d) + off)


async def calling_checks(cfg: Config) -> list[Check]:
    if not cfg.calling.enabled:
        return []  # no access numbers: DTMF and intent are off, nothing to check
    checks = [
        Check("access numbers", True, ", ".join(cfg.calling.access_numbers)),
        dtmf_window_check(cfg),
        intent_defences_check(cfg),
    ]
    checks.append(await access_trunk_check(cfg))
    return checks
