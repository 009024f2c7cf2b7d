"""`securelink doctor`: check an installation end to end; every failure says how to fix it."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from asterisk_securelink import masterkey
from asterisk_securelink.app import ari_client
from asterisk_securelink.asterisk.ami import AmiPublisher
from asterisk_securelink.asterisk.ari.errors import AriError
from asterisk_securelink.config import Config
from asterisk_securelink.core.keyindex import Window
from asterisk_securelink.core.lockout import guess_budget, two_factor_guesses_per_day
from asterisk_securelink.core.policy import WEAK_BITS, strength_bits
from asterisk_securelink.livekeys import key_settings_problem, strength_report
from asterisk_securelink.masterkey import MasterKeyError
from asterisk_securelink.store import sqlite
from asterisk_securelink.store.migrations import head_revision
from asterisk_securelink.store.store import Store

CONTEXTS = ("securelink-inbound", "securelink-after-stasis")


_CONTEXT_REF = re.compile(r"(?<![A-Za-z0-9_-])(securelink-inbound(?:-agi)?(?:-dnis)?)(?![A-Za-z0-9_-])")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warn: bool = False  # not ok, but nothing is broken yet: reported, does not fail `doctor`

    @property
    def passed(self) -> bool:
        return self.ok or self.warn

    def line(self) -> str:
        mark = "ok  " if self.ok else "warn" if self.warn else "FAIL"
        fix = f"\n        fix: {self.fix}" if not self.ok and self.fix else ""
        return f"[{mark}] {self.name}: {self.detail}{fix}"


def transports_in(config: Mapping[str, Any]) -> list[str]:
    """The PJSIP transports of an AMI `GetConfig pjsip.conf` answer (categories with `type=transport`)."""
    names: dict[str, str] = {}
    found: list[str] = []
    for key, value in config.items():
        if key.startswith("Category-"):
            names[key.split("-", 1)[1]] = str(value)
    for key, value in config.items():
        if key.startswith("Line-") and str(value).replace(" ", "").lower() == "type=transport":
            category = names.get(key.split("-")[1])
            if category is not None and category not in found:
                found.append(category)
    return found


def entry_routes(dialplan: Iterable[Mapping[str, Any]]) -> list[str]:
    """Which of the admin's own contexts send calls to an entry context (`Goto(securelink-inbound,...)`, an
    include, a Local channel), from AMI `ShowDialPlan` events."""
    routes: list[str] = []
    for event in dialplan:
        context = str(event.get("Context", ""))
        if not context or context.startswith("securelink-"):
            continue
        text = f"{event.get('AppData', '')} {event.get('IncludeContext', '')}"
        if _CONTEXT_REF.search(text) and context not in routes:
            routes.append(context)
    return routes


async def run_checks(cfg: Config) -> list[Check]:
    """Every check, in order. One that raises unexpectedly is a FAIL line naming the exception's type (never a
    traceback, never the exception's text, which may carry a secret), and the checks after it still run."""
    steps: tuple[tuple[str, _Step], ...] = (
        ("master key", _master_key_step),
        ("database", _check_database),
        ("keys", key_checks),
        ("guess budget", budget_checks),
        ("ARI", _check_ari),
        ("AMI", _check_ami),
        ("device API", _device_api_step),
    )
    checks: list[Check] = []
    for name, step in steps:
        try:
            found = await step(cfg)
        except Exception as exc:  # noqa: BLE001 - a doctor reports, it does not crash
            found = Check(name, False, f"check failed ({type(exc).__name__})", _UNEXPECTED_FIX)
        checks.extend(found if isinstance(found, list) else [found])
    return checks


_Step = Callable[[Config], Awaitable[Check | list[Check]]]
_UNEXPECTED_FIX = "not a known misconfiguration: run `securelink doctor` again; if it stays, report this line"


async def _device_api_step(cfg: Config) -> list[Check]:
    from asterisk_securelink.deviceapi.checkup import device_api_checks  # it imports Check from here

    return await device_api_checks(cfg)


async def _master_key_step(cfg: Config) -> Check:
    return _check_master_key(cfg)


def _check_master_key(cfg: Config) -> Check:
    try:
        masterkey.load(cfg.master_key_path)
    except MasterKeyError as exc:
        return Check("master key", False, str(exc), exc.fix)
    return Check("master key", True, f"{cfg.master_key_path} (mode 0600, 32 bytes)")


async def _check_database(cfg: Config) -> Check:
    problem = sqlite.access_problem(cfg.database_url)
    if problem is not None:
        return Check("database", False, problem, "the service must be able to write its database")
    store = Store.from_url(cfg.database_url)
    try:
        rev = await store.schema_revision()
    finally:
        await store.close()
    if rev is None:
        return Check(
            "database", False, "not reachable or not initialised", "check database.url; run `securelink db upgrade`"
        )
    if rev != head_revision():
        return Check("database", False, f"schema at {rev}, latest is {head_revision()}", "run `securelink db upgrade`")
    return Check("database", True, f"schema at the latest revision {rev}")


async def _check_ari(cfg: Config) -> list[Check]:
    ari = ari_client(cfg)
    try:
        try:
            info = await ari.asterisk_info()
        except AriError as exc:
            return [Check("ARI", False, str(exc), _ARI_FIX)]
        except OSError as exc:
            return [Check("ARI", False, f"cannot reach {cfg.ari.url} ({type(exc).__name__})", _ARI_FIX)]
        version = (info.get("system") or {}).get("version", "?") if isinstance(info, dict) else "?"
        checks = [Check("ARI", True, f"{cfg.ari.url} answers (Asterisk {version})")]
        if await ari.get_application(cfg.ari.app) is not None:
            checks.append(Check("Stasis app", True, f"{cfg.ari.app!r} is registered"))
        else:
            checks.append(
                Check(
                    "Stasis app",
                    False,
                    f"{cfg.ari.app!r} is not registered: calls are rejected by the dialplan fallback",
                    "start `securelink run` (systemd: `systemctl start securelink`)",
                )
            )
        return checks
    finally:
        await ari.close()


_ARI_FIX = (
    "`securelink asterisk install` sets up HTTP, the ARI user and its password; by hand: http.conf `enabled=yes`, "
    "`bindaddr=127.0.0.1`, an ari.conf user with the password in ari.password, `module reload http` and "
    "`module reload res_ari.so` (docs/install-manual.md)"
)


async def _check_ami(cfg: Config) -> list[Check]:
    if not cfg.ami.enabled:
        return [Check("AMI", True, "disabled (ami.enabled = false): dialplan contexts not checked")]
    pub = AmiPublisher.from_config(cfg.ami, login_timeout=5)
    try:
        ok, detail = await pub.check(5)
        if not ok:
            return [
                Check(
                    "AMI",
                    False,
                    detail,
                    "`securelink asterisk install` adds the AMI user; by hand: manager.conf enabled=yes, "
                    "bindaddr=127.0.0.1 and a user matching ami.username/ami.secret (docs/install-manual.md)",
                )
            ]
        checks = [Check("AMI", True, detail)]
        await pub.start()
        await pub.wait_logged_in(5)
        for context in CONTEXTS:
            resp = await pub.send_action({"Action": "ShowDialPlan", "Context": context}, 5)
            found = bool(getattr(resp, "success", False)) if not isinstance(resp, list) else bool(resp)
            if isinstance(resp, list):
                found = any(getattr(r, "success", False) or r.get("Event") == "ListDialplan" for r in resp)
            checks.append(
                Check(
                    f"dialplan {context}",
                    found,
                    "loaded" if found else "not loaded",
                    "`securelink asterisk install` (or `#include securelink/securelink.conf` in extensions.conf), "
                    "then `dialplan reload`",
                )
            )
        checks.append(await _check_sip_transport(pub))
        checks.append(await _check_entry_routes(pub))
        return checks
    except Exception as exc:  # noqa: BLE001 - a doctor reports, it does not crash
        return [Check("AMI", False, f"check failed ({type(exc).__name__})", "see the Asterisk log")]
    finally:
        await pub.close()


async def _check_sip_transport(pub: AmiPublisher) -> Check:
    name = "SIP transport"
    try:
        answer = await pub.send_action({"Action": "GetConfig", "Filename": "pjsip.conf"}, 5)
    except Exception as exc:  # noqa: BLE001 - a doctor reports, it does not crash
        return Check(name, False, f"could not read pjsip.conf through AMI ({type(exc).__name__})", warn=True)
    found = transports_in(answer if isinstance(answer, Mapping) else {})
    if found:
        return Check(name, True, f"PJSIP transport(s): {', '.join(found[:5])}")
    return Check(
        name,
        False,
        "pjsip.conf defines no transport: Asterisk receives no SIP at all",
        "add a [transport-udp] section (type=transport, protocol=udp, bind=0.0.0.0:5060) to pjsip.conf and run "
        "`module reload res_pjsip.so` (see docs/install-manual.md)",
        warn=True,
    )


async def _check_entry_routes(pub: AmiPublisher) -> Check:
    name = "calls routed to securelink"
    try:
        answer = await pub.send_action({"Action": "ShowDialPlan"}, 10)
    except Exception as exc:  # noqa: BLE001
        return Check(name, False, f"could not read the dialplan through AMI ({type(exc).__name__})", warn=True)
    routes = entry_routes(answer if isinstance(answer, list) else [])
    if routes:
        return Check(name, True, f"context(s) {', '.join(routes[:5])} send calls to the entry contexts")
    return Check(
        name,
        False,
        "no context of yours sends calls to securelink-inbound / securelink-inbound-dnis yet: no call is verified",
        "route your DIDs, e.g. `exten => 4930123456,1,Goto(securelink-inbound,${EXTEN},1)` in your trunk's context "
        "(README, Install on your own Asterisk)",
        warn=True,
    )


# -- keys: strength (SLK1.md, "How strong is a key, really") and the period/t0 the devices' keys were made with ------
async def key_checks(cfg: Config) -> list[Check]:
    """Nothing when the database cannot be read: the database check already says why."""
    store = Store.from_url(cfg.database_url)
    try:
        devices = await store.count_live_devices()
        problem = await key_settings_problem(store, cfg.keys, record=False)
    except Exception:  # noqa: BLE001 - a doctor reports, it does not crash
        return []
    finally:
        await store.close()
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


async def budget_checks(cfg: Config) -> list[Check]:
    """The guess budget with the live device count; nothing when the database cannot be read (see its check)."""
    store = Store.from_url(cfg.database_url)
    try:
        devices = await store.count_live_devices()
    except Exception:  # noqa: BLE001 - a doctor reports, it does not crash
        return []
    finally:
        await store.close()
    return [budget_check(cfg, devices)]


def budget_check(cfg: Config, devices: int) -> Check:
    """The guess budget the live strength gives (docs/decisions.md, "A guess budget per source, a backoff per
    registered number"): key-alone failed guesses per source in any 24 hours, and the two-factor backoff's bound."""
    lo, k = cfg.lockout, cfg.keys
    if not lo.enabled:
        return Check("guess budget", False, "lockout.enabled = false: guesses are not limited", "enable it", warn=True)
    size, width = cfg.inbound_fmt.size, k.look_behind + k.look_ahead + 1
    budget = guess_budget(lo.max_guess_probability, size, width, devices)
    per_day = two_factor_guesses_per_day(lo.max_failures, lo.backoff, lo.cooldown)
    detail = (
        f"key alone: {budget} failed guesses per source (trunk) in any 24 h (max_guess_probability "
        f"{lo.max_guess_probability:g} / (W*D/S = {width}*{max(1, devices)}/{size:.3g})), then key-alone calls from it "
        f"are refused; two-factor: {lo.max_failures} failures in a row per registered number, then {lo.backoff} s "
        f"doubling to {lo.cooldown} s (at most {per_day} guesses a day, ~2^-{math.log2(size / (width * per_day)):.1f} "
        "per device)"
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
