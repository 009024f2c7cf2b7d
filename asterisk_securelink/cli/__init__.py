"""`securelink`: the administrator's command line.

Conventions: data goes to stdout (`--json` for machines), errors are one line on stderr with exit code 2, and a
command either completes or changes nothing. No secret is printed except the one-time provisioning URI.

The parser is `cli.parser`; the commands live in modules by what they act on (`setup`, `devices`, `keys`, `audit`,
`escrow`, `service`) and run inside `cli.context.open_store`. This module only runs the chosen command and turns
what went wrong into that one line.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import uvloop
from sqlalchemy.exc import SQLAlchemyError

from asterisk_securelink import config as config_mod
from asterisk_securelink.cli.context import Handler
from asterisk_securelink.cli.parser import EXIT_USAGE, build_parser
from asterisk_securelink.cli.safe_output import EscapingStream
from asterisk_securelink.cli.setup import cmd_init
from asterisk_securelink.core.numbers import safe_display
from asterisk_securelink.errors import InputError, KeyFileError, StartupError
from asterisk_securelink.store.store import StoreError

# errors whose message is written for the administrator: printed as they are (every kind of `SecureLinkError`
# whose text is meant for a person: bad input, a key file, a start that cannot happen, the store's refusals)
_USER_ERRORS = (InputError, KeyFileError, StartupError, StoreError, LookupError)
_NO_MESSAGE = {TimeoutError: "timed out", ConnectionError: "the connection failed"}


SERVICES = frozenset({"run", "agi"})  # the long-running services: their event loop is uvloop's


def runner_for(command: str) -> Callable[[Coroutine[Any, Any, int]], int]:
    """How a command's coroutine is run: the services on uvloop (issue 24: the profile's event-loop machinery, a
    quarter of the loop's busy time; docs/decisions.md), every other command on asyncio's own loop."""
    return uvloop.run if command in SERVICES else asyncio.run


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command with stdout and stderr escaping control characters (`safe_output`)."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = EscapingStream(out), EscapingStream(err)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = out, err


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "init":  # runs before any config exists
            chosen = args.config or os.environ.get(config_mod.CONFIG_ENV)  # as every other command finds it
            return asyncio.run(cmd_init(args, Path(chosen) if chosen else None))
        cfg = config_mod.load(args.config)
        handler: Handler = args.handler
        return runner_for(args.cmd)(handler(args, cfg))
    except KeyboardInterrupt:
        return 130
    except (*_USER_ERRORS, SQLAlchemyError, UnicodeError, OSError) as exc:
        print(f"securelink: error: {describe(exc)}", file=sys.stderr)
        return EXIT_USAGE


def describe(exc: BaseException) -> str:
    """What went wrong, on one line: the error's own message, never just its class name, never a secret."""
    if isinstance(exc, SQLAlchemyError):
        # the first line of the driver's message only: what follows it may quote the statement, its parameters
        # or row values
        cause = _first_line(getattr(exc, "orig", None) or exc) or type(exc).__name__
        return f"database error: {cause}: check database.url and that the database server is running"
    if isinstance(exc, UnicodeError):
        return "an argument or file is not valid UTF-8 text"
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        return _one_line(exc.args[0]) or "not found"  # str(KeyError) is the repr of the key
    if isinstance(exc, OSError) and exc.strerror:
        names = [safe_display(str(f), 200) for f in (exc.filename, exc.filename2) if f is not None]
        return ": ".join([exc.strerror, *names])
    message = _one_line(exc)
    if message:
        return message
    what = next((text for kind, text in _NO_MESSAGE.items() if isinstance(exc, kind)), "unexpected error")
    return f"{what} ({type(exc).__name__}, no further detail)"


def _first_line(obj: object) -> str:
    return next((line.strip() for line in str(obj).splitlines() if line.strip()), "")


def _one_line(obj: object) -> str:
    """`str(obj)` as one line: every line kept, joined, so a multi-line message cannot break the one-line rule."""
    return " ".join(line.strip() for line in str(obj).splitlines() if line.strip())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
