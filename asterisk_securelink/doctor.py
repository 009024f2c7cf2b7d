"""`securelink doctor`: check an installation end to end; every failure says how to fix it."""

from __future__ import annotations

from dataclasses import dataclass

from asterisk_securelink import masterkey
from asterisk_securelink.asterisk.ami import AmiPublisher
from asterisk_securelink.asterisk.ari.errors import AriError
from asterisk_securelink.config import Config
from asterisk_securelink.masterkey import MasterKeyError
from asterisk_securelink.runner import ari_client
from asterisk_securelink.store import sqlite
from asterisk_securelink.store.migrations import head_revision
from asterisk_securelink.store.store import Store

CONTEXTS = ("securelink-inbound", "securelink-after-stasis")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        fix = f"\n        fix: {self.fix}" if not self.ok and self.fix else ""
        return f"[{mark}] {self.name}: {self.detail}{fix}"


async def run_checks(cfg: Config) -> list[Check]:
    checks = [_check_master_key(cfg), await _check_database(cfg)]
    checks.extend(await _check_ari(cfg))
    checks.extend(await _check_ami(cfg))
    return checks


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
    "enable ARI: http.conf `enabled=yes`, `bindaddr=127.0.0.1`; ari.conf user with the password in ari.password "
    "(see dialplan/ari.conf.sample); then `module reload res_ari.so`"
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
                    "manager.conf: enabled=yes, bindaddr=127.0.0.1 and a user matching ami.username/ami.secret "
                    "(see dialplan/manager.conf.sample)",
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
                    "add `#include securelink/securelink.conf` to extensions.conf and run `dialplan reload`",
                )
            )
        return checks
    except Exception as exc:  # noqa: BLE001 - a doctor reports, it does not crash
        return [Check("AMI", False, f"check failed ({type(exc).__name__})", "see the Asterisk log")]
    finally:
        await pub.close()
