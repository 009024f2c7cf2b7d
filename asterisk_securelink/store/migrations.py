"""Running the Alembic migrations from the application (`securelink init`, `securelink db upgrade`, start-up check).

One source: the repository's top-level `alembic/` folder. A built wheel carries it as the package data
`asterisk_securelink/store/alembic/` (setup.py maps it there), found with `importlib.resources`; an editable install
or a source checkout reads the folder where it is. `alembic upgrade head` from a checkout (with `alembic.ini`) runs
the same scripts.
"""

from __future__ import annotations

import asyncio
from functools import cache
from importlib import resources
from pathlib import Path

from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory

from alembic import command
from asterisk_securelink.errors import SecureLinkError

_CHECKOUT = Path(__file__).resolve().parents[2] / "alembic"


class MigrationsMissing(SecureLinkError, RuntimeError):
    pass


def scripts_dir() -> Path:
    """The folder holding `env.py` and `versions/`."""
    packaged = resources.files("asterisk_securelink.store") / "alembic"
    if packaged.is_dir() and (packaged / "env.py").is_file():
        return Path(str(packaged))
    if (_CHECKOUT / "env.py").is_file():
        return _CHECKOUT
    raise MigrationsMissing(
        "the database migrations are missing from this installation (asterisk_securelink/store/alembic): "
        "reinstall the package from a wheel or the source tree"
    )


def alembic_config(url: str | None = None) -> AlembicConfig:
    cfg = AlembicConfig()  # no ini file: everything it needs is set here
    cfg.set_main_option("script_location", str(scripts_dir()))
    cfg.attributes["configure_logging"] = False
    if url is not None:
        cfg.attributes["url"] = url
    return cfg


@cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def upgrade(url: str, revision: str = "head", *, default_country_code: str = "") -> list[str]:
    """`alembic upgrade head` against `url`, in a worker thread (env.py runs its own event loop).

    Returns what the migrations had to report (e.g. 0003's registered numbers it could not rewrite to E.164);
    `default_country_code` is `keys.default_country_code`, which 0003 reads national numbers with.
    """
    cfg = alembic_config(url)
    notes: list[str] = []
    cfg.attributes["notes"] = notes
    cfg.attributes["default_country_code"] = default_country_code
    await asyncio.to_thread(command.upgrade, cfg, revision)
    return notes
