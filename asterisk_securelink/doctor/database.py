"""`securelink doctor`'s database check: the service can write it, and its schema is at the latest revision."""

from __future__ import annotations

from asterisk_securelink.config import Config
from asterisk_securelink.doctor.check import Check
from asterisk_securelink.store import sqlite
from asterisk_securelink.store.migrations import head_revision
from asterisk_securelink.store.store import Store


async def database_check(cfg: Config, store: Store) -> Check:
    problem = sqlite.access_problem(cfg.database_url)
    if problem is not None:
        return Check("database", False, problem, "the service must be able to write its database")
    rev = await store.schema_revision()
    if rev is None:
        return Check(
            "database", False, "not reachable or not initialised", "check database.url; run `securelink db upgrade`"
        )
    if rev != head_revision():
        return Check("database", False, f"schema at {rev}, latest is {head_revision()}", "run `securelink db upgrade`")
    return Check("database", True, f"schema at the latest revision {rev}")
