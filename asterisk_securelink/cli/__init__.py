"""`securelink`: the administrator's command line.

Conventions: data goes to stdout (`--json` for machines), errors are one line on stderr with exit code 2, and a
command either completes or changes nothing. No secret is printed except the one-time provisioning URI.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import math
import re
import secrets
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy.exc import SQLAlchemyError

from asterisk_securelink import config as config_mod
from asterisk_securelink import masterkey
from asterisk_securelink.config import Config, ConfigError
from asterisk_securelink.core.formats import FormatError
from asterisk_securelink.core.numbers import normalize, safe_display
from asterisk_securelink.core.policy import WEAK_BITS
from asterisk_securelink.core.provisioning import Provisioning
from asterisk_securelink.core.slk1 import Direction, SLK1Error, derive_key, device_secret, epoch_at
from asterisk_securelink.core.verdicts import Mode
from asterisk_securelink.errors import StartupError
from asterisk_securelink.escrow import EscrowError
from asterisk_securelink.inbound.service import VerificationService, VerifyRequest
from asterisk_securelink.lifecycle import TRANSITIONS, DeviceStatus, can_rotate
from asterisk_securelink.masterkey import MasterKeyError
from asterisk_securelink.store.models import utcnow
from asterisk_securelink.store.store import DeviceRow, DuplicateError, Store, StoreError

EXIT_USAGE = 2
ACTOR = "cli"
_ENDPOINT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*/[A-Za-z0-9_.@:+\-]{1,100}$")


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"securelink: error: {message} (see `{self.prog} --help`)\n")


# -- helpers ------------------------------------------------------------------------------------------------
def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str) if args.json else text)


def _store(cfg: Config) -> Store:
    return Store.from_url(cfg.database_url)


async def _require_migrated(store: Store) -> None:
    from asterisk_securelink.store.migrations import head_revision

    rev = await store.schema_revision()
    if rev is None:
        raise CliError("the database is not initialised: run `securelink db upgrade` (or `securelink init`)")
    if rev != head_revision():
        raise CliError(f"the database schema is at {rev}, not {head_revision()}: run `securelink db upgrade`")


async def _device(store: Store, ref: str) -> DeviceRow:
    device = await store.get_device(ref)
    if device is None:
        raise CliError(f"no device {safe_display(ref)!r} (give its id or key_id; see `securelink device list`)")
    return device


def _new_key_id(master: bytes, uid: str | None) -> str:
    """Random by default; from a device uid, an HMAC under the master key (the uid is not recoverable from it)."""
    if uid is None:
        return "k" + secrets.token_hex(10)
    if not uid or len(uid) > 256:
        raise CliError("--key-id-from-uid: the uid must be 1..256 characters")
    mac = hmac.new(master, b"securelink-key-id\x00" + uid.encode("utf-8"), hashlib.sha256).hexdigest()
    return "u" + mac[:20]


def _provisioning(cfg: Config, master: bytes, device: DeviceRow) -> Provisioning:
    k = cfg.keys
    return Provisioning(
        device_id=device.id,
        key_id=device.key_id,
        secret=device_secret(master, device.key_id),
        period=k.period,
        t0=k.t0,
        inbound_format=k.inbound_format,
        outbound_format=k.outbound_format,
        look_behind=k.look_behind,
        look_ahead=k.look_ahead,
    )


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if not 1 <= n <= 10_000_000:
        raise argparse.ArgumentTypeError(f"must be 1..10000000, got {n}")
    return n


def _unix_time(value: str) -> float:
    try:
        t = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected unix seconds, got {value!r}") from None
    if not math.isfinite(t) or not 0 <= t < 2**40:
        raise argparse.ArgumentTypeError(f"expected unix seconds between 0 and 2^40, got {value!r}")
    return t


def _parse_since(value: str) -> datetime:
    m = re.fullmatch(r"(\d+)([smhd])", value)
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


# -- commands ---------------------------------------------------------------------------------------------
async def cmd_init(args: argparse.Namespace, cfg_path: Path | None) -> int:
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
    store = _store(cfg)
    try:
        await store.audit("init", "ok", ACTOR)
    finally:
        await store.close()
    for w in cfg.warnings():
        done.append(f"warning: {w}")
    _emit(args, {"config": str(path), "steps": done}, "\n".join(done))
    return 0


async def cmd_db_upgrade(args: argparse.Namespace, cfg: Config) -> int:
    from asterisk_securelink.store.migrations import head_revision, upgrade

    await upgrade(cfg.database_url)
    _emit(args, {"revision": head_revision()}, f"database at revision {head_revision()}")
    return 0


async def cmd_device_add(args: argparse.Namespace, cfg: Config) -> int:
    master = masterkey.load(cfg.master_key_path)
    number = normalize(args.number)
    if number is None:
        raise CliError(f"--number: {safe_display(args.number)!r} is not a phone number (3..20 digits, + allowed)")
    if args.desk_endpoint is not None and not _ENDPOINT.match(args.desk_endpoint):
        raise CliError(
            f"--desk-endpoint: expected TECH/resource like PJSIP/1001, got {safe_display(args.desk_endpoint)!r}"
        )
    name = args.name.strip()
    if not name or len(name) > 128 or not name.isprintable():
        raise CliError("NAME: must be 1..128 printable characters")
    key_id = _new_key_id(master, args.key_id_from_uid)
    store = _store(cfg)
    try:
        await _require_migrated(store)
        try:
            device = await store.add_device(name, number, args.desk_endpoint, key_id, ACTOR)
        except DuplicateError:
            raise CliError("a device with this key_id already exists (is this device uid already enrolled?)") from None
    finally:
        await store.close()
    uri = _provisioning(cfg, master, device).uri()
    data = {**device.public(), "provisioning_uri": uri}
    text = (
        f"device {device.id} added: {device.display_name} ({device.mobile_number}), key_id {device.key_id}\n"
        f"status: {device.status} (limited until registered)\n"
        f"one-time provisioning URI (contains the device secret; give it only to the device, it is not shown again):\n"
        f"{uri}"
    )
    _emit(args, data, text)
    return 0


def _device_line(d: DeviceRow) -> str:
    desk = d.desk_endpoint or "-"
    return f"{d.id:>6}  {d.status:<11}  {d.mobile_number:<16}  {desk:<16}  {d.key_id:<22}  {d.display_name}"


async def cmd_device_list(args: argparse.Namespace, cfg: Config) -> int:
    store = _store(cfg)
    try:
        await _require_migrated(store)
        devices = await store.list_devices()
    finally:
        await store.close()
    header = f"{'id':>6}  {'status':<11}  {'mobile':<16}  {'desk':<16}  {'key_id':<22}  name"
    _emit(args, [d.public() for d in devices], "\n".join([header, *map(_device_line, devices)]))
    return 0


async def cmd_device_show(args: argparse.Namespace, cfg: Config) -> int:
    store = _store(cfg)
    try:
        await _require_migrated(store)
        device = await _device(store, args.device)
    finally:
        await store.close()
    data = device.public()
    _emit(args, data, "\n".join(f"{k}: {v}" for k, v in data.items()))
    return 0


async def cmd_device_status(args: argparse.Namespace, cfg: Config) -> int:
    transition = TRANSITIONS[args.device_cmd]
    new_status = transition.to
    reason = getattr(args, "reason", None)
    if args.device_cmd == "revoke" and (not reason or not reason.strip() or len(reason) > 256):
        raise CliError("revoke needs --reason TEXT (1..256 characters)")
    store = _store(cfg)
    try:
        await _require_migrated(store)
        device = await _device(store, args.device)
        if device.status not in transition.allowed_from:
            raise CliError(f"device {device.id} is {device.status}; cannot {args.device_cmd} it")
        now = utcnow()
        values: dict[str, Any] = {"status": new_status.value}
        if new_status == DeviceStatus.REGISTERED and device.registered_at is None:
            values["registered_at"] = now
        if new_status == DeviceStatus.REVOKED:
            values.update(revoked_at=now, revoke_reason=reason.strip() if reason else None)
        device = await store.update_device(
            device.id,
            f"device.{args.device_cmd}",
            ACTOR,
            detail={"reason": reason} if reason else None,
            **values,
        )
    finally:
        await store.close()
    _emit(args, device.public(), f"device {device.id} is now {device.status}")
    return 0


async def cmd_device_rotate(args: argparse.Namespace, cfg: Config) -> int:
    master = masterkey.load(cfg.master_key_path)
    store = _store(cfg)
    try:
        await _require_migrated(store)
        device = await _device(store, args.device)
        if not can_rotate(device.status):
            raise CliError(f"device {device.id} is revoked; add a new device instead of rotating")
        old = device.key_id
        device = await store.update_device(
            device.id,
            "device.rotate",
            ACTOR,
            detail={"old_key_id": old},
            key_id=_new_key_id(master, None),
            rotated_at=utcnow(),
        )
    finally:
        await store.close()
    uri = _provisioning(cfg, master, device).uri()
    _emit(
        args,
        {**device.public(), "provisioning_uri": uri},
        f"device {device.id} rotated: key_id {old} -> {device.key_id}; the old keys no longer work\n"
        f"one-time provisioning URI (not shown again):\n{uri}",
    )
    return 0


async def cmd_device_fork(args: argparse.Namespace, cfg: Config) -> int:
    store = _store(cfg)
    try:
        await _require_migrated(store)
        device = await _device(store, args.device)
        device = await store.update_device(
            device.id, "device.fork", ACTOR, detail={"fork": args.state}, fork_enabled=args.state == "on"
        )
    finally:
        await store.close()
    _emit(args, device.public(), f"device {device.id}: forking to desk and mobile is {args.state}")
    return 0


async def cmd_key_current(args: argparse.Namespace, cfg: Config) -> int:
    master = masterkey.load(cfg.master_key_path)
    direction = Direction(args.direction)
    fmt = cfg.inbound_fmt if direction is Direction.INBOUND else cfg.outbound_fmt
    at = args.at if args.at is not None else utcnow().timestamp()
    epoch = epoch_at(at, cfg.keys.period, cfg.keys.t0)
    store = _store(cfg)
    try:
        await _require_migrated(store)
        device = await _device(store, args.device)
        await store.audit(
            "key.show", "ok", ACTOR, device_id=device.id, direction=direction.value, detail={"epoch": epoch}
        )
    finally:
        await store.close()
    key = derive_key(device_secret(master, device.key_id), direction, epoch, fmt)
    valid_until = cfg.keys.t0 + (epoch + 1) * cfg.keys.period
    data = {
        "device": device.id,
        "direction": direction.value,
        "epoch": epoch,
        "key": key,
        "valid_until": valid_until,
    }
    _emit(args, data, key)
    return 0


async def cmd_verify(args: argparse.Namespace, cfg: Config) -> int:
    if args.at is not None and args.at > time.time() + cfg.keys.period:
        # an admitted verdict spends the key: spending windows no device has reached yet would burn real keys
        raise CliError("--at is in the future: verify spends the key it admits, so only past or present times")
    master = masterkey.load(cfg.master_key_path)
    store = _store(cfg)
    try:
        await _require_migrated(store)
        if args.direction == Direction.OUTBOUND.value:
            data = await _verify_outbound(cfg, master, store, args)
        else:
            service = VerificationService(cfg, store, master)
            await service.start()
            outcome = await service.verify(
                VerifyRequest(
                    presented=args.number,
                    mode=Mode(args.mode),
                    caller=args.caller,
                    call_id=args.call_id,
                    source="cli",
                    at=args.at,
                )
            )
            data = {"verdict": outcome.verdict.value, "device": outcome.device_id, "epoch": outcome.epoch}
            if not await service.drain_audit():
                raise CliError("the verdict could not be written to the audit (database unreachable?)")
            if service.strength() < WEAK_BITS:
                print(
                    f"warning: one guess has about 2^-{service.strength():.1f} chance "
                    f"(below {WEAK_BITS:.0f} bits: use a larger format or two-factor mode)",
                    file=sys.stderr,
                )
    finally:
        await store.close()
    device = f" device {data['device']}" if data.get("device") is not None else ""
    _emit(args, data, f"{data['verdict']}{device}")
    return 0


async def _verify_outbound(cfg: Config, master: bytes, store: Store, args: argparse.Namespace) -> dict[str, Any]:
    """Operator debug: which device's outbound key is this (epochs e-1..e+1, as a device checks)? Spends nothing."""
    digits = normalize(args.number)
    if digits is None:
        return {"verdict": "malformed", "device": None, "epoch": None}
    at = args.at if args.at is not None else utcnow().timestamp()
    current = epoch_at(at, cfg.keys.period, cfg.keys.t0)
    fmt = cfg.outbound_fmt
    for device in await store.list_devices():
        secret = device_secret(master, device.key_id)
        for epoch in (current - 1, current, current + 1):
            key = derive_key(secret, Direction.OUTBOUND, epoch, fmt).lstrip("+")
            if hmac.compare_digest(key.encode(), digits.encode()):
                return {"verdict": "admitted", "device": device.id, "epoch": epoch}
    return {"verdict": "mismatch", "device": None, "epoch": None}


async def cmd_audit_list(args: argparse.Namespace, cfg: Config) -> int:
    since = _parse_since(args.since) if args.since else None
    store = _store(cfg)
    try:
        await _require_migrated(store)
        events = await store.list_audit(since=since, limit=args.limit, action=args.action)
    finally:
        await store.close()
    rows = [
        {
            "id": e.id,
            "at": e.created_at.isoformat(),
            "action": e.action,
            "result": e.result,
            "device": e.device_id,
            "direction": e.direction,
            "mode": e.mode,
            "call_id": e.call_id,
            "channel": e.channel,
            "subject": e.subject,
            "source": e.source,
            "actor": e.actor,
            "detail": json.loads(e.detail) if e.detail else None,
        }
        for e in events
    ]
    text = "\n".join(
        f"{r['at']}  {r['action']:<16} {r['result'] or '-':<12} device={r['device'] or '-'} "
        f"{r['mode'] or ''} {r['call_id'] or ''}".rstrip()
        for r in rows
    )
    _emit(args, rows, text)
    return 0


async def cmd_escrow(args: argparse.Namespace, cfg: Config) -> int:
    from asterisk_securelink import escrow
    from asterisk_securelink.outbound.callkeys import open_row

    if args.escrow_cmd == "keygen":
        private, public = Path(args.private_key), Path(args.public_key)
        version = escrow.generate(private, public)
        _emit(
            args,
            {"key_version": version, "private_key": str(private), "public_key": str(public)},
            f"escrow key {version}: private key {private} (0600: give it to the compliance officer and remove it "
            f"from this host), public key {public} (set escrow.public_key_file to it)",
        )
        return 0
    store = _store(cfg)
    try:
        await _require_migrated(store)
        if args.escrow_cmd == "list":
            rows = await store.list_call_keys()
            data = [
                {
                    "key_id": r.id,
                    "call_id": r.call_id,
                    "device": r.device_id,
                    "direction": r.direction,
                    "key_version": r.key_version,
                    "created_at": r.created_at.isoformat(),
                    "expires_at": r.expires_at.isoformat(),
                }
                for r in rows
            ]
            text = "\n".join(
                f"{d['created_at']}  {d['key_id']}  call={d['call_id']}  device={d['device']}  needs {d['key_version']}"
                for d in data
            )
            _emit(args, data, text)
        elif args.escrow_cmd == "purge":
            count = await store.purge_call_keys(utcnow(), ACTOR)
            _emit(args, {"deleted": count}, f"{count} escrowed call key(s) past retention deleted")
        else:  # decrypt
            reason = (args.reason or "").strip()
            if not reason or len(reason) > 256:
                raise CliError("escrow decrypt needs --reason TEXT (1..256 characters): it is audited")
            rows = await store.get_call_keys(args.call_id)
            if not rows:
                raise CliError(f"no escrowed key for call {safe_display(args.call_id)!r}")
            opened = []
            for row in rows:
                try:
                    key = open_row(row, Path(args.private_key))
                except escrow.EscrowError as exc:
                    await store.audit("escrow.decrypt", "failed", ACTOR, call_id=row.call_id, detail={"reason": reason})
                    raise CliError(str(exc)) from None
                await store.audit(
                    "escrow.decrypt", "ok", ACTOR, device_id=row.device_id, call_id=row.call_id,
                    detail={"key_id": row.id, "reason": reason},
                )  # fmt: skip
                opened.append({"key_id": row.id, "call_id": row.call_id, "key": key.hex()})
            _emit(args, opened, "\n".join(f"{o['key_id']} {o['key']}" for o in opened))
    finally:
        await store.close()
    return 0


async def cmd_calls_list(args: argparse.Namespace, cfg: Config) -> int:
    from asterisk_securelink.outbound.callkeys import record_public

    since = _parse_since(args.since) if args.since else None
    store = _store(cfg)
    try:
        await _require_migrated(store)
        rows = [record_public(r) for r in await store.list_call_records(since=since, limit=args.limit)]
    finally:
        await store.close()
    text = "\n".join(
        f"{r['started_at']}  {r['call_id']}  device={r['device']}  {r['verdict'] or '-'}  "
        f"answered_by={r['answered_by'] or '-'}  cause={r['hangup_cause'] or '-'}"
        for r in rows
    )
    _emit(args, rows, text)
    return 0


async def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    from asterisk_securelink.runner import run_stasis

    await run_stasis(cfg)
    return 0


async def cmd_agi(args: argparse.Namespace, cfg: Config) -> int:
    from asterisk_securelink.runner import run_agi

    await run_agi(cfg)
    return 0


async def cmd_doctor(args: argparse.Namespace, cfg: Config) -> int:
    from asterisk_securelink.doctor import run_checks

    checks = await run_checks(cfg)
    _emit(
        args,
        [{"check": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix} for c in checks],
        "\n".join(c.line() for c in checks),
    )
    return 0 if all(c.ok for c in checks) else 1


def setup_logging(cfg: Config) -> None:
    from asterisk_securelink.logs import configure

    configure(cfg.log.level, cfg.log.json)


# -- parser -----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p = _Parser(prog="securelink", description="Caller-ID anti-spoofing for Asterisk (SLK1 synchronized keys).")
    p.add_argument("--config", help="config file (default: $SECURELINK_CONFIG or ./securelink.toml)")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    sub.add_parser("init", parents=[common], help="create config skeleton, master key and database schema")
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_cmd", required=True)
    db.add_parser("upgrade", parents=[common], help="migrate the database to the latest schema")

    dev = sub.add_parser("device", help="enrolled devices").add_subparsers(dest="device_cmd", required=True)
    add = dev.add_parser("add", parents=[common], help="enroll a device; prints its one-time provisioning URI")
    add.add_argument("name")
    add.add_argument("--number", required=True, help="the device's mobile number (MSISDN)")
    add.add_argument("--desk-endpoint", help="the user's desk phone, e.g. PJSIP/1001")
    add.add_argument("--key-id-from-uid", metavar="UID", help="derive the key_id from the device uid")
    dev.add_parser("list", parents=[common], help="list devices")
    for name, helptext in (
        ("show", "show one device"),
        ("register", "mark a device registered (full ability)"),
        ("suspend", "suspend a device (its keys are refused)"),
        ("resume", "resume a suspended device"),
        ("rotate", "give a device a new key_id; its old keys stop working"),
    ):
        dev.add_parser(name, parents=[common], help=helptext).add_argument("device", help="device id or key_id")
    revoke = dev.add_parser("revoke", parents=[common], help="revoke a device for good")
    revoke.add_argument("device", help="device id or key_id")
    revoke.add_argument("--reason", required=True)
    fork = dev.add_parser("fork", parents=[common], help="ring desk and mobile together for this device")
    fork.add_argument("device", help="device id or key_id")
    fork.add_argument("state", choices=["on", "off"])

    key = sub.add_parser("key", help="keys (operator debug)").add_subparsers(dest="key_cmd", required=True)
    cur = key.add_parser("current", parents=[common], help="print a device's current key (audited)")
    cur.add_argument("device", help="device id or key_id")
    cur.add_argument("--direction", choices=[d.value for d in Direction], default="inbound")
    cur.add_argument("--at", type=_unix_time, metavar="UNIX_TIME")

    ver = sub.add_parser("verify", parents=[common], help="run the verifier on a number, as a call would")
    ver.add_argument("number")
    ver.add_argument("--direction", choices=[d.value for d in Direction], default="inbound")
    ver.add_argument("--mode", choices=["ani", "dnis"], default="ani")
    ver.add_argument("--caller", help="the caller number (DNIS mode: narrows collisions / two-factor)")
    ver.add_argument("--call-id", help="call id (the same call re-presented is not a replay)")
    ver.add_argument("--at", type=_unix_time, metavar="UNIX_TIME")

    esc = sub.add_parser("escrow", help="escrowed per-call keys").add_subparsers(dest="escrow_cmd", required=True)
    kg = esc.add_parser("keygen", parents=[common], help="write a new escrow key pair (private key 0600)")
    kg.add_argument("--private-key", required=True, metavar="FILE")
    kg.add_argument("--public-key", required=True, metavar="FILE")
    dec = esc.add_parser("decrypt", parents=[common], help="open the escrowed key(s) of a call (audited)")
    dec.add_argument("call_id", help="call id or key id")
    dec.add_argument("--private-key", required=True, metavar="FILE")
    dec.add_argument("--reason", required=True)
    esc.add_parser("list", parents=[common], help="escrowed keys and the escrow key version each needs")
    esc.add_parser("purge", parents=[common], help="delete escrowed keys past escrow.retention_days")
    calls = sub.add_parser("calls", help="call records").add_subparsers(dest="calls_cmd", required=True)
    cl = calls.add_parser("list", parents=[common], help="call records, oldest first")
    cl.add_argument("--since", help="ISO time or duration (15m, 2h, 7d)")
    cl.add_argument("--limit", type=_positive_int, default=1000)

    sub.add_parser("run", help="run the Stasis app (connects to ARI and AMI; runs until stopped)")
    sub.add_parser("agi", help="run the FastAGI server for AGI(agi://HOST:4573/verify,ani|dnis)")
    sub.add_parser("doctor", parents=[common], help="check the installation; each failure says how to fix it")

    audit = sub.add_parser("audit", help="audit events").add_subparsers(dest="audit_cmd", required=True)
    al = audit.add_parser("list", parents=[common], help="list audit events, oldest first")
    al.add_argument("--since", help="ISO time or duration (15m, 2h, 7d)")
    al.add_argument("--action", help="only this action, e.g. verify, device.revoke")
    al.add_argument("--limit", type=_positive_int, default=1000)
    return p


Handler = Callable[[argparse.Namespace, Config], Coroutine[Any, Any, int]]


def _handler(args: argparse.Namespace) -> Handler:
    if args.cmd == "db":
        return cmd_db_upgrade
    if args.cmd == "device":
        return {
            "add": cmd_device_add,
            "list": cmd_device_list,
            "show": cmd_device_show,
            "rotate": cmd_device_rotate,
            "fork": cmd_device_fork,
        }.get(args.device_cmd, cmd_device_status)
    if args.cmd == "key":
        return cmd_key_current
    if args.cmd == "verify":
        return cmd_verify
    if args.cmd == "audit":
        return cmd_audit_list
    if args.cmd in ("run", "agi"):
        return cmd_run if args.cmd == "run" else cmd_agi
    if args.cmd == "doctor":
        return cmd_doctor
    if args.cmd == "escrow":
        return cmd_escrow
    if args.cmd == "calls":
        return cmd_calls_list
    raise CliError(f"unknown command {args.cmd}")  # pragma: no cover - argparse rejects it first


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "init":
            return asyncio.run(cmd_init(args, Path(args.config) if args.config else None))
        cfg = config_mod.load(args.config)
        if args.cmd in ("run", "agi"):
            setup_logging(cfg)
        return asyncio.run(_handler(args)(args, cfg))
    except (
        CliError,
        ConfigError,
        MasterKeyError,
        FormatError,
        SLK1Error,
        StoreError,
        LookupError,
        StartupError,
        EscrowError,
    ) as exc:
        print(f"securelink: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SQLAlchemyError as exc:
        print(
            f"securelink: error: database error ({type(exc).__name__}): check database.url and that the "
            "database server is running",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except UnicodeError:
        print("securelink: error: an argument or file is not valid UTF-8 text", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"securelink: error: {exc.strerror or type(exc).__name__}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
