"""What every `securelink` command runs in: the open store at the current schema, its error type and its output."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from asterisk_securelink.config import Config
from asterisk_securelink.core.numbers import safe_display
from asterisk_securelink.errors import InputError
from asterisk_securelink.store.models import utcnow
from asterisk_securelink.store.store import DeviceRow, Store

ACTOR = "cli"  # the audit rows' actor

Handler = Callable[[argparse.Namespace, Config], Coroutine[Any, Any, int]]
"""A command: parsed arguments and the loaded config in, exit code out."""


class CliError(InputError):
    """A user-facing error: printed as one line, exit code 2."""


@asynccontextmanager
async def open_store(cfg: Config) -> AsyncIterator[Store]:
    """The store at `database.url`, closed on exit. Refuses (`CliError`) a database not at the current schema."""
    store = Store.from_url(cfg.database_url)
    try:
        await _require_current_schema(store)
        yield store
    finally:
        await store.close()


async def _require_current_schema(store: Store) -> None:
    from asterisk_securelink.store.migrations import head_revision  # alembic: loaded only when a command needs it

    rev = await store.schema_revision()
    if rev is None:
        raise CliError("the database is not initialised: run `securelink db upgrade` (or `securelink init`)")
    if rev != head_revision():
        raise CliError(f"the database schema is at {rev}, not {head_revision()}: run `securelink db upgrade`")


async def find_device(store: Store, ref: str) -> DeviceRow:
    """The device `ref` names (its id or key_id), or a `CliError` that says how to find one."""
    device = await store.get_device(ref)
    if device is None:
        raise CliError(f"no device {safe_display(ref)!r} (give its id or key_id; see `securelink device list`)")
    return device


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """The command's result on stdout: `data` as JSON with `--json`, else `text`."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str) if args.json else text)


def parse_since(value: str) -> datetime:
    """`--since`: an ISO time (UTC unless it says otherwise) or a duration back from now (15m, 2h, -24h, 7d)."""
    m = re.fullmatch(r"-?(\d+)([smhd])", value)
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        try:
            return utcnow() - timedelta(**{unit: int(m.group(1))})
        except (OverflowError, ValueError):
            raise CliError(f"--since: {value!r} reaches back before year 1") from None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise CliError(f"--since: expected an ISO time or a duration like 15m, 2h, 7d, got {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
