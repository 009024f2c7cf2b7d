"""`securelink doctor`: check an installation end to end; every failure says how to fix it.

`run_checks` runs every group of checks in order: the keys (`keys`), the database (`database`), Asterisk through ARI
and AMI (`asterisk`) and the device API (`device_api`). Each group builds `check.Check` lines and imports nothing
from here, so the package has no import circle. One Store serves the whole run: opened when the first check asks
for it, closed at the end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asterisk_securelink.config import Config
from asterisk_securelink.doctor.asterisk import CONTEXTS, ami_checks, ari_checks, entry_routes, transports_in
from asterisk_securelink.doctor.calling import calling_checks
from asterisk_securelink.doctor.check import UNEXPECTED_FIX, Check
from asterisk_securelink.doctor.database import database_check
from asterisk_securelink.doctor.device_api import certificate_check, device_api_checks
from asterisk_securelink.doctor.keys import budget_check, budget_checks, key_checks, master_key_check, strength_check
from asterisk_securelink.doctor.routing import routing_checks
from asterisk_securelink.store.store import Store

__all__ = [
    "CONTEXTS",
    "Check",
    "ami_checks",
    "ari_checks",
    "budget_check",
    "budget_checks",
    "certificate_check",
    "database_check",
    "device_api_checks",
    "entry_routes",
    "key_checks",
    "master_key_check",
    "run_checks",
    "strength_check",
    "transports_in",
]

_Step = Callable[[], Awaitable[Check | list[Check]]]


class _RunStore:
    """The run's one Store, opened on first use: a database URL the engine refuses then fails each check that needs
    the store on its own line, as a check that opened its own Store did."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._store: Store | None = None

    def __call__(self) -> Store:
        if self._store is None:
            self._store = Store.from_url(self._url)
        return self._store

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()


async def run_checks(cfg: Config) -> list[Check]:
    """Every check, in order. One that raises unexpectedly is a FAIL line naming the exception's type (never a
    traceback, never the exception's text, which may carry a secret), and the checks after it still run.

    The checks are looked up here when they run (not bound at import), so a test can replace one on this module."""
    store = _RunStore(cfg.database_url)
    steps: tuple[tuple[str, _Step], ...] = (
        ("master key", lambda: _now(master_key_check(cfg))),
        ("database", lambda: database_check(cfg, store())),
        ("keys", lambda: key_checks(cfg, store())),
        ("guess budget", lambda: budget_checks(cfg, store())),
        ("ARI", lambda: ari_checks(cfg)),
        ("AMI", lambda: ami_checks(cfg)),
        ("device API", lambda: device_api_checks(cfg)),
        ("access numbers", lambda: calling_checks(cfg)),
        ("routing", lambda: routing_checks(cfg, store())),
    )
    checks: list[Check] = []
    try:
        for name, step in steps:
            try:
                found = await step()
            except Exception as exc:  # noqa: BLE001 - a doctor reports, it does not crash
                found = Check(name, False, f"check failed ({type(exc).__name__})", UNEXPECTED_FIX)
            checks.extend(found if isinstance(found, list) else [found])
    finally:
        await store.close()
    return checks


async def _now(check: Check) -> Check:
    return check
