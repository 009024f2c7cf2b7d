"""`securelink asterisk install|uninstall`: put securelink into an existing Asterisk configuration, and take it out.

Refusals are one line on stderr, exit code 2, nothing changed. Exit code 1: the files were written but a reload
or systemctl step failed (the output says which, and what to run).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import grp
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from asterisk_securelink import config as config_mod
from asterisk_securelink.app import audit_spool_path
from asterisk_securelink.config import Config
from asterisk_securelink.installer import apply as applier
from asterisk_securelink.installer import systemd
from asterisk_securelink.installer.asterisk_cli import AsteriskCli, rungroup
from asterisk_securelink.installer.plan import (
    FileChange,
    Plan,
    Refused,
    Secrets,
    Settings,
    Snapshot,
    plan_install,
    plan_uninstall,
)
from asterisk_securelink.store import sqlite

EXIT_REFUSED = 2
PASSWORD_BYTES = 48  # 64 URL-safe characters: safe in Asterisk config and TOML without quoting


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add `asterisk install|uninstall` to the `securelink` subcommands (`sub`: its add_subparsers() object);
    each sets `handler` to its command function."""
    ast = sub.add_parser("asterisk", help="install into / remove from an existing Asterisk configuration")
    cmds = ast.add_subparsers(dest="asterisk_cmd", required=True)
    inst = cmds.add_parser("install", help="add securelink's ARI/AMI users and dialplan to Asterisk, reload it")
    uninst = cmds.add_parser("uninstall", help="remove exactly what `securelink asterisk install` added")
    for p in (inst, uninst):
        p.add_argument("--etc", default="/etc/asterisk", help="Asterisk's config directory (default: %(default)s)")
        p.add_argument("--dry-run", action="store_true", help="print the diff of every file; change nothing")
        p.add_argument("--yes", action="store_true", help="do not ask before changing files")
        p.add_argument(
            "--asterisk",
            default="asterisk",
            metavar="CMD",
            help="the asterisk command, for -V and -rx (default: %(default)s; e.g. 'chroot /srv/pbx asterisk')",
        )
        p.add_argument("--backup-dir", default=str(applier.DEFAULT_BACKUP_DIR), help="default: %(default)s")
        p.add_argument("--unit-dir", default=str(systemd.UNIT_DIR), help=argparse.SUPPRESS)
    inst.add_argument("--systemd", action="store_true", help="also install and enable the systemd unit")
    inst.set_defaults(handler=cmd_asterisk_install)
    uninst.set_defaults(handler=cmd_asterisk_uninstall)


async def cmd_asterisk_install(args: argparse.Namespace, cfg: Config) -> int:
    try:
        code, changed = _install(args, cfg)
    except Refused as exc:
        print(f"securelink: error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if changed and cfg.source is not None:
        await _doctor(cfg.source)
    return code


async def cmd_asterisk_uninstall(args: argparse.Namespace, cfg: Config) -> int:
    try:
        code = _uninstall(args)
    except Refused as exc:
        print(f"securelink: error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if not args.dry_run:
        _print_notes(left_behind(cfg))
    return code


def left_behind(cfg: Config) -> list[str]:
    """What uninstall does not remove: the product, its user, its config (with the ARI/AMI passwords), its keys and
    data, so that they can be removed by hand or kept for a reinstall."""
    db = sqlite.sqlite_path(cfg.database_url)
    owner = applier.user_name(applier.owner_of(cfg.source).uid) if cfg.source is not None else None
    lines = [
        f"the Python package in {sys.prefix} (remove the folder, and the securelink links in /usr/local/bin)",
        f"the service user {owner} (`userdel {owner}`)" if owner not in (None, "root") else None,
        f"the config {cfg.source} (it holds the ARI and AMI passwords)" if cfg.source is not None else None,
        f"the master key {cfg.master_key_path} (without it no enrolled device works again)",
        f"the database {db} (devices, audit, call records)" if db is not None else "the database (database.url)",
    ]
    return ["left in place, yours to keep or remove:\n  " + "\n  ".join(line for line in lines if line)]


# -- install ------------------------------------------------------------------------------------------------
def _install(args: argparse.Namespace, cfg: Config) -> tuple[int, bool]:
    """(exit code, whether files were written)."""
    if cfg.source is None:
        raise Refused("no securelink config file: run `securelink init` first, or pass --config FILE")
    asterisk = AsteriskCli.parse(args.asterisk)
    snap = _snapshot(Path(args.etc))
    version = asterisk.version()
    plan = plan_install(snap, _settings(cfg), _secrets(), version)
    notes = list(plan.notes)
    units: list[FileChange] = []
    live = args.systemd and systemd.available()
    if args.systemd and (live or Path(args.unit_dir).is_dir()):
        units, note = _plan_units(Path(args.unit_dir), cfg)
        notes += note
        if not live:
            notes.append(f"systemd is not running on this host: the units are written to {args.unit_dir}, not started")
    elif args.systemd:
        notes.append("systemd is not running on this host: --systemd skipped")
    full = dataclasses.replace(plan, changes=plan.changes + tuple(units), notes=tuple(notes))
    if full.empty:
        print(f"securelink is already installed in {snap.root} (Asterisk {version[0]}.{version[1]}): nothing to change")
        _print_notes(full.notes)
        return 0, False
    if not _confirm(args, full, "install into", snap.root, asterisk):
        return 0, False
    config_changed = any(c.path == cfg.source for c in full.changes)
    backup = _write(full, Path(args.backup_dir))
    print(f"installed into {snap.root} (Asterisk {version[0]}.{version[1]})")
    _print_changes(full, backup)
    errors = _reload(asterisk, plan.reloads)
    if live:
        errors += systemd.after_install(units, config_changed)
    elif config_changed:
        notes.append("restart securelink if it runs (`systemctl restart securelink`): it reads its passwords at start")
    _print_notes(notes)
    return (1 if errors else 0), True


def _settings(cfg: Config) -> Settings:
    assert cfg.source is not None
    url = urlsplit(cfg.ari.url)
    # https: ARI on Asterisk's TLS server, which install does not set up (it only turns plain HTTP on)
    port = None if url.scheme == "https" else url.port or 80
    return Settings(
        ari_username=cfg.ari.username,
        ami_username=cfg.ami.username,
        app=cfg.ari.app,
        http_port=port,
        config_path=cfg.source,
        config_text=cfg.source.read_bytes().decode("utf-8"),  # as is: read_text() would turn CRLF into LF
        config_owner=applier.owner_of(cfg.source),
    )


def _secrets() -> Secrets:
    return Secrets(secrets.token_urlsafe(PASSWORD_BYTES), secrets.token_urlsafe(PASSWORD_BYTES),
                   secrets.token_urlsafe(PASSWORD_BYTES))  # fmt: skip


def _snapshot(etc: Path) -> Snapshot:
    snap = applier.scan(etc)
    group = rungroup(snap.files["asterisk.conf"]) if "asterisk.conf" in snap.files else None
    try:
        gid: int | None = grp.getgrnam(group or "asterisk").gr_gid
    except KeyError:
        gid = None  # no such group here: the neighbouring files' group is used
    return dataclasses.replace(snap, asterisk_gid=gid)


def _plan_units(unit_dir: Path, cfg: Config) -> tuple[list[FileChange], list[str]]:
    """The units, run by the config's owner (the service user) with the folder it writes (`init --state-dir`)."""
    assert cfg.source is not None
    if not unit_dir.is_dir():
        raise Refused(f"{unit_dir} does not exist: is this a systemd host?")
    existing = systemd.read_units(unit_dir)
    owner = applier.owner_of(cfg.source)
    service = systemd.Service(
        exe=str(systemd.installed_command()),  # this installation's script, never a PATH lookup
        config=cfg.source,
        user=applier.user_name(owner.uid),
        group=applier.group_name(owner.gid),
        state=audit_spool_path(cfg).parent,
    )
    changes = systemd.plan_units(unit_dir, existing, applier.owner_of(unit_dir), service)
    notes = [
        f"{unit_dir / name} is not install's, or was edited since: left alone" for name in systemd.foreign(existing)
    ]
    if any(c.path.name != systemd.MAIN_UNIT and c.before is None for c in changes):
        notes.append("securelink-agi.service is installed, not enabled: enable it if you use the FastAGI contexts")
    return changes, notes


# -- uninstall ----------------------------------------------------------------------------------------------
def _uninstall(args: argparse.Namespace) -> int:
    asterisk = AsteriskCli.parse(args.asterisk)
    snap = applier.scan(Path(args.etc))
    plan = plan_uninstall(snap)
    unit_dir = Path(args.unit_dir)
    units = (
        systemd.plan_removal(unit_dir, systemd.read_units(unit_dir), applier.owner_of(unit_dir))
        if unit_dir.is_dir()
        else []
    )
    full = dataclasses.replace(plan, changes=plan.changes + tuple(units))
    if full.empty:
        print(f"securelink is not installed in {snap.root}: nothing to remove")
        _print_notes(plan.notes)
        return 0
    if not _confirm(args, full, "remove from", snap.root, asterisk):
        return 0
    live_units = bool(units) and systemd.available()
    errors = systemd.before_removal(units) if live_units else []
    backup = _write(full, Path(args.backup_dir))
    print(f"removed from {snap.root}")
    _print_changes(full, backup)
    errors += _reload(asterisk, plan.reloads)
    if live_units:
        errors += systemd.after_removal()
    _print_notes(plan.notes)
    return 1 if errors else 0


# -- shared -------------------------------------------------------------------------------------------------
def _confirm(args: argparse.Namespace, plan: Plan, action: str, root: Path, asterisk: AsteriskCli) -> bool:
    """Dry run: print the diffs, False. Otherwise list the changes and ask unless --yes."""
    if args.dry_run:
        if plan.make_dir is not None:
            print(f"mkdir   {root / 'securelink'} ({plan.make_dir.mode:04o})")
        for change in plan.changes:
            print(applier.describe(change))
            print(applier.diff(change), end="")
        for command in plan.reloads:
            print(f"reload  {asterisk.shown} -rx {command!r}")
        print(f"dry run: nothing changed ({len(plan.changes)} file(s) would change)")
        _print_notes(plan.notes)
        return False
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise Refused("not a terminal: pass --yes to apply without asking (or --dry-run to see the diff)")
    for change in plan.changes:
        print(applier.describe(change))
    answer = input(f"{action} {root}: apply these changes? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        print("nothing changed")
        return False
    return True


def _write(plan: Plan, backup_dir: Path) -> Path | None:
    applier.preflight(plan)
    return applier.apply(plan, backup_dir)


def _print_changes(plan: Plan, backup: Path | None) -> None:
    for change in plan.changes:
        print(f"  {applier.describe(change)}")
    if backup is not None:
        print(f"backups of the files changed: {backup}")


def _reload(asterisk: AsteriskCli, commands: tuple[str, ...]) -> list[str]:
    errors: list[str] = []
    for command in commands:
        error = asterisk.rx(command)
        if error is None:
            print(f"reloaded: {command}")
        else:
            errors.append(f"{command}: {error}")
            print(f"reload failed: `{asterisk.shown} -rx '{command}'`: {error}", file=sys.stderr)
    return errors


def _print_notes(notes: tuple[str, ...] | list[str]) -> None:
    for note in notes:
        print(f"note: {note}")


async def _doctor(source: Path) -> None:
    """Run `securelink doctor` on the config as install left it, and print its result: as the user who owns the
    config (the service user, who alone may read the master key) when install runs as root."""
    from asterisk_securelink.doctor import run_checks

    owner = applier.owner_of(source)
    if os.geteuid() == 0 and owner.uid != 0:
        print(f"doctor (as {applier.user_name(owner.uid)}, the owner of {source}):", flush=True)
        argv = [sys.executable, "-m", "asterisk_securelink.cli", "--config", str(source), "doctor"]
        run = functools.partial(subprocess.run, cwd="/", user=owner.uid, group=owner.gid, extra_groups=[])
        done = await asyncio.to_thread(run, argv, check=False, capture_output=True, text=True, timeout=120)
        print("  " + (done.stdout + done.stderr).strip().replace("\n", "\n  "))
        return
    print("doctor:")
    for check in await run_checks(config_mod.load(source)):
        print("  " + check.line().replace("\n", "\n  "))
