"""`securelink run`, `agi` and `doctor`: the long-running services and the installation check."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from asterisk_securelink.cli.context import emit
from asterisk_securelink.config import Config


def _setup_logging(cfg: Config) -> Callable[[], None]:
    """The services log from a listener thread (`logs.configure`); what is returned flushes it."""
    from asterisk_securelink.logs import configure

    return configure(cfg.log.level, cfg.log.json, off_thread=True)


async def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    flush = _setup_logging(cfg)  # before the runner and its dependencies are imported
    try:
        from asterisk_securelink.runner import run_stasis

        await run_stasis(cfg)
    finally:
        flush()
    return 0


async def cmd_agi(args: argparse.Namespace, cfg: Config) -> int:
    flush = _setup_logging(cfg)  # before the runner and its dependencies are imported
    try:
        from asterisk_securelink.runner import run_agi

        await run_agi(cfg)
    finally:
        flush()
    return 0


async def cmd_doctor(args: argparse.Namespace, cfg: Config) -> int:
    from asterisk_securelink.doctor import run_checks

    checks = await run_checks(cfg)
    emit(
        args,
        [{"check": c.name, "ok": c.ok, "warn": c.warn, "detail": c.detail, "fix": c.fix} for c in checks],
        "\n".join(c.line() for c in checks),
    )
    return 0 if all(c.passed for c in checks) else 1
