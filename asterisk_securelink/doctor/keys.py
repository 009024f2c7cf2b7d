"""`securelink doctor`'s checks of the keys: the master key file, the key-alone strength (SLK1.md, "How strong is a
key, really"), the period/t0 the devices' keys were made with, and the guess budget the live strength gives."""

from __future__ import annotations

import math

from asterisk_securelink import masterkey
from asterisk_securelink.config import Config
from asterisk_securelink.core.keyindex import Window
from asterisk_securelink.core.lockout import guess_budget, number_allowance, total_budget
from asterisk_securelink.core.policy import WEAK_BITS, strength_bits
from asterisk_securelink.doctor.check import Check
from asterisk_securelink.livekeys import key_settings_problem, strength_report
from asterisk_securelink.masterkey import MasterKeyError
from asterisk_securelink.store.store import Store


def master_key_check(cfg: Config) -> Check:
    try:
        masterkey.load(cfg.master_key_path)
    except MasterKeyError as exc:
        return Check("master key", False, str(exc), exc.fix)
    return Check("master key", True, f"{cfg.master_key_path} (mode 0600, 32 bytes)")


# -- keys: strength (SLK1.md, "How strong is a key, really") and the period/t0 the devices' keys were made with ------
async def key_checks(cfg: Config, store: Store) -> list[Check]:
    """Nothing when the database cannot be read: the database check already says why. Reads, never records."""
    try:
        devices = await store.count_lookup_devices()  # D: suspended and revoked devices are out of the lookup
        problem = await key_settings_problem(store, cfg.keys, record=False)
    except Exception:  # noqa: BLE001 - a doctor reports, it does not crash
        return []
    settings = Check(
        "key settings",
        problem is None,
        problem or f"the devices' keys are made with keys.period {cfg.keys.period}, keys.t0 {cfg.keys.t0}",
        "restore the old keys.period / keys.t0, or `securelink device rotate --all` and re-provision every device",
    )
    return [strength_check(cfg, devices), settings]


def strength_check(cfg: Config, devices: int) -> Check:
    """The key-alone strength log2(S / (W*D)), W = look_behind + look_ahead + 1, with what burst costs of it.

    Under 30 bits it is a warning, unless two-factor is on (then a guess succeeds with W / S for DNIS calls)."""
    k = cfg.keys
    window = Window(k.period, k.t0, k.look_behind, k.look_ahead)
    size = cfg.inbound_fmt.size
    detail = strength_report(size, window, devices)
    weak = strength_bits(size, window.width, devices) < WEAK_BITS
    if cfg.inbound.require_registered_number:
        detail += f"; two-factor (DNIS): ~2^-{strength_bits(size, window.width, 1):.1f}"
        weak = False
    return Check(
        "key strength",
        not weak,
        detail,
        "two-factor: DNIS mode with inbound.require_registered_number = true, or a larger keys.inbound_format",
        warn=weak,
    )


async def budget_checks(cfg: Config, store: Store) -> list[Check]:
    """The guess budget with the live device count; nothing when the database cannot be read (see its check)."""
    try:
        devices = await store.count_lookup_devices()  # D, as in the strength figure
    except Exception:  # noqa: BLE001 - a doctor reports, it does not crash
        return []
    return [budget_check(cfg, devices)]


def budget_check(cfg: Config, devices: int) -> Check:
    """The guess budget the live strength gives (docs/decisions.md, "A guess budget per source, a backoff per
    registered number"; docs/security.md): how many failed calls a day lock key alone, per source and in all, and a
    registered number's two-factor allowance."""
    lo, k = cfg.lockout, cfg.keys
    if not lo.enabled:
        return Check("guess budget", False, "lockout.enabled = false: guesses are not limited", "enable it", warn=True)
    size, width = cfg.inbound_fmt.size, k.look_behind + k.look_ahead + 1
    budget = guess_budget(lo.max_guess_probability, size, width, devices)
    total = total_budget(max(lo.max_total_guess_probability, lo.max_guess_probability), size, width, devices)
    allowance = number_allowance(lo.max_guess_probability, size, width)
    odds = f"~2^-{math.log2(size / (width * max(1, allowance))):.1f}" if allowance else "none"
    mode = "two-factor is on" if cfg.inbound.require_registered_number else "key alone is on (ANI or DNIS)"
    detail = (
        f"{mode}; key alone: {budget + 1} failed calls a day from one source (trunk), or {total + 1} from every "
        f"source together, lock key-alone calls (max_guess_probability {lo.max_guess_probability:g} / (W*D/S = "
        f"{width}*{max(1, devices)}/{size:.3g})); two-factor calls are still verified, and each registered number may "
        f"fail {allowance} of them in any 24 h ({odds} per device a day)"
    )
    two_factor = cfg.inbound.require_registered_number
    if budget > 0:
        return Check("guess budget", True, detail)
    return Check(
        "guess budget",
        False,
        detail + ": one key-alone guess is already likelier than the target, so every key-alone call is refused",
        "two-factor (DNIS with inbound.require_registered_number = true), a larger keys.inbound_format, or a higher "
        "lockout.max_guess_probability",
        warn=two_factor,
    )
