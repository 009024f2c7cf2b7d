"""`securelink doctor`'s Asterisk checks: ARI answers and the Stasis app is registered; through AMI, the dialplan
contexts are loaded, pjsip.conf has a transport and some context of the admin's routes calls to securelink. The
readings of AMI answers (`transports_in`, `entry_routes`) are pure."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from asterisk_securelink.app import ari_client
from asterisk_securelink.asterisk.ami import AmiPublisher
from asterisk_securelink.asterisk.ari.errors import AriError
from asterisk_securelink.config import Config
from asterisk_securelink.doctor.check import Check

CONTEXTS = ("securelink-inbound", "securelink-after-stasis")


_CONTEXT_REF = re.compile(r"(?<![A-Za-z0-9_-])(securelink-inbound(?:-agi)?(?:-dnis)?)(?![A-Za-z0-9_-])")


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


async def ari_checks(cfg: Config) -> list[Check]:
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


async def ami_checks(cfg: Config) -> list[Check]:
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
