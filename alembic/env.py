"""Alembic environment: runs migrations over the async engine the application uses."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from sqlalchemy.engine import Connection

from alembic import context
from asterisk_securelink import config as sl_config
from asterisk_securelink.store import (
    api_models,  # noqa: F401 - registers the device API's tables on Base
    intent_models,  # noqa: F401 - registers the intents' tables on Base
    route_models,  # noqa: F401 - registers the routing guard's tables on Base
)
from asterisk_securelink.store.models import Base
from asterisk_securelink.store.store import make_engine

cfg = context.config
if cfg.config_file_name is not None and cfg.attributes.get("configure_logging", True):
    fileConfig(cfg.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = cfg.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    return str(url) if url else sl_config.load().database_url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    engine = make_engine(_url())
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_online())
