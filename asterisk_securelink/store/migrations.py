"""Running the Alembic migrations (the scripts live in the top-level `alembic/` folder) from the application."""

from __future__ import annotations

import asyncio
from functools import cache
from pathlib import Path

from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory

from alembic import command

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(url: str | None = None) -> AlembicConfig:
    ini = ROOT / "alembic.ini"
    if not ini.is_file():
        raise FileNotFoundError(f"alembic.ini not found next to the package ({ROOT}); install from the source tree")
    cfg = AlembicConfig(str(ini))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.attributes["configure_logging"] = False
    if url is not None:
        cfg.attributes["url"] = url
    return cfg


@cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def upgrade(url: str, revision: str = "head") -> None:
    """`alembic upgrade head` against `url`, in a worker thread (env.py runs its own event loop)."""
    await asyncio.to_thread(command.upgrade, alembic_config(url), revision)
