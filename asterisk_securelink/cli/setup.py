"""`securelink init` and `securelink db upgrade`: the installation and its database schema."""

from __future__ import annotations

import argparse
from pathlib import Path

from asterisk_securelink import config as config_mod
from asterisk_securelink import masterkey
from asterisk_securelink.cli.context import ACTOR, emit, open_store
from asterisk_securelink.config import Config


async def cmd_init(args: argparse.Namespace, cfg_path: Path | None) -> int:
    """Config skeleton (if none), master key (if none), schema migrated: safe to run again."""
    from asterisk_securelink.store.migrations import upgrade

    path = cfg_path or Path(config_mod.DEFAULT_CONFIG_NAME)
    done: list[str] = []
    if not path.exists():
        path.write_text(config_mod.SKELETON, encoding="utf-8")
        done.append(f"wrote config skeleton {path}")
    cfg = config_mod.load(path)
    key_path = cfg.master_key_path
    if key_path.exists():
        masterkey.load(key_path)  # refuse a world-readable or malformed key now rather than later
        done.append(f"kept existing master key {key_path}")
    else:
        masterkey.create(key_path)
        done.append(f"created master key {key_path} (mode 0600) - back it up: without it no device key works")
    await upgrade(cfg.database_url)
    done.append("database migrated to the latest schema")
    async with open_store(cfg) as store:
        await store.audit("init", "ok", ACTOR)
    for w in cfg.warnings():
        done.append(f"warning: {w}")
    emit(args, {"config": str(path), "steps": done}, "\n".join(done))
    return 0


async def cmd_db_upgrade(args: argparse.Namespace, cfg: Config) -> int:
    from asterisk_securelink.store.migrations import head_revision, upgrade

    await upgrade(cfg.database_url)
    emit(args, {"revision": head_revision()}, f"database at revision {head_revision()}")
    return 0
