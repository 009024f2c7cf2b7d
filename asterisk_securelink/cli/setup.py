"""`securelink init` and `securelink db upgrade`: the installation and its database schema."""

from __future__ import annotations

import argparse
from pathlib import Path

from asterisk_securelink import config as config_mod
from asterisk_securelink import keyfile, masterkey
from asterisk_securelink.cli.context import ACTOR, CliError, emit, open_store
from asterisk_securelink.config import Config
from asterisk_securelink.store import sqlite


def state_dir_for(config_path: Path, explicit: str | None) -> Path | None:
    """Where the database of a new installation goes: `--state-dir`, else /var/lib/securelink when the config is the
    system one (its directory is read-only to the service under the shipped systemd unit), else None: next to the
    config."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    if config_path.resolve().parent == config_mod.SYSTEM_CONFIG.parent:
        return config_mod.SYSTEM_STATE_DIR
    return None


def skeleton(state_dir: Path | None) -> str:
    if state_dir is None:
        return config_mod.SKELETON
    default = 'url = "sqlite:///securelink.sqlite3"'
    assert default in config_mod.SKELETON
    return config_mod.SKELETON.replace(default, f'url = "sqlite:///{state_dir / "securelink.sqlite3"}"')


def _private_dir(path: Path) -> bool:
    """Create `path` (mode 0700) if missing; True when this call created it."""
    if path.is_dir():
        return False
    path.mkdir(mode=0o700, parents=True)
    path.chmod(0o700)
    return True


async def cmd_init(args: argparse.Namespace, cfg_path: Path | None) -> int:
    """Config skeleton (if none), master key (if none), schema migrated: safe to run again."""
    from asterisk_securelink.store.migrations import upgrade

    path = cfg_path or Path(config_mod.DEFAULT_CONFIG_NAME)
    done: list[str] = []
    if not path.exists():
        if _private_dir(path.parent):
            done.append(f"created directory {path.parent} (mode 0700)")
        state = state_dir_for(path, getattr(args, "state_dir", None))
        if state is not None and _private_dir(state):
            done.append(f"created state directory {state} (mode 0700)")
        keyfile.create_private(path, skeleton(state).encode("utf-8"))  # it will hold the ARI/AMI secrets
        done.append(f"wrote config skeleton {path} (mode 0600)")
    elif getattr(args, "state_dir", None):
        raise CliError(f"{path} exists: --state-dir only applies to a new config (edit database.url instead)")
    cfg = config_mod.load(path)
    key_path = cfg.master_key_path
    if key_path.exists():
        masterkey.load(key_path)  # refuse a world-readable or malformed key now rather than later
        done.append(f"kept existing master key {key_path}")
    else:
        masterkey.create(key_path)
        done.append(f"created master key {key_path} (mode 0600) - back it up: without it no device key works")
    problem = sqlite.access_problem(cfg.database_url)
    if problem is not None:
        raise CliError(problem)
    if sqlite.create_private(cfg.database_url):
        done.append(f"created database file {sqlite.sqlite_path(cfg.database_url)} (mode 0600)")
    notes = await upgrade(cfg.database_url, default_country_code=cfg.keys.default_country_code)
    done.append("database migrated to the latest schema")
    done.extend(notes)
    async with open_store(cfg) as store:
        await store.audit("init", "ok", ACTOR)
    for w in cfg.warnings():
        done.append(f"warning: {w}")
    emit(args, {"config": str(path), "steps": done}, "\n".join(done))
    return 0


async def cmd_db_upgrade(args: argparse.Namespace, cfg: Config) -> int:
    from asterisk_securelink.store.migrations import head_revision, upgrade

    notes = await upgrade(cfg.database_url, default_country_code=cfg.keys.default_country_code)
    emit(
        args,
        {"revision": head_revision(), "notes": notes},
        "\n".join([*notes, f"database at revision {head_revision()}"]),
    )
    return 0
