"""`securelink doctor`'s checks of where admitted calls go (CALLING.md, "Where an admitted call goes"): the guard's
settings, and devices whose calls would get `no_route`."""

from __future__ import annotations

from asterisk_securelink.config import Config
from asterisk_securelink.doctor.check import Check
from asterisk_securelink.lifecycle import SPENDABLE
from asterisk_securelink.store.store import Store

OPEN_PATTERNS = frozenset({"_X.", "_X!", "_.", "_!", "_N.", "_Z."})  # anything not denied
SHOWN = 5  # device ids named in a warning


def guard_check(cfg: Config) -> Check:
    r = cfg.routing
    detail = (f"allowed {' '.join(r.allowed)}; {len(r.denied)} denied patterns; emergency numbers refused; "
              f"{r.max_concurrent} at once, {r.max_per_day} a day, {r.max_call_seconds} s per call")  # fmt: skip
    wide = sorted(OPEN_PATTERNS.intersection(r.allowed))
    if wide:
        return Check("toll-fraud guard", False, f"{detail}: {', '.join(wide)} lets any number not denied through",
                     "routing.allowed: list only what employees dial (e.g. _XXXX and a national pattern)",
                     warn=True)  # fmt: skip
    return Check("toll-fraud guard", True, detail)


async def no_route_check(cfg: Config, store: Store) -> Check:
    """Devices with no context or no caller ID anywhere: no own value, no desk endpoint, no `[routing]` default."""
    r = cfg.routing
    missing = []
    for d in await store.list_devices():
        if d.status not in SPENDABLE:
            continue
        context = d.context or d.desk_endpoint or r.default_context
        callerid = d.callerid or d.desk_endpoint or r.default_callerid
        if not (context and callerid):
            missing.append(d.id)
    if not missing:
        return Check("routing identity", True, "every device has a context and caller ID (own, desk or [routing])")
    names = ", ".join(str(i) for i in missing[:SHOWN]) + (" ..." if len(missing) > SHOWN else "")
    return Check("routing identity", False, f"{len(missing)} device(s) would get no_route: {names}",
                 "securelink device set ID --desk-endpoint PJSIP/EXT (or --context and --callerid), or set "
                 "routing.default_context and routing.default_callerid", warn=True)  # fmt: skip


async def routing_checks(cfg: Config, store: Store) -> list[Check]:
    return [guard_check(cfg), await no_route_check(cfg, store)]
