"""`securelink device ...`: enroll devices and move them through their lifecycle (`lifecycle.TRANSITIONS`)."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import re
import secrets
import sys
from typing import Any

from asterisk_securelink import masterkey
from asterisk_securelink.cli import enroll, routing
from asterisk_securelink.cli.context import ACTOR, CliError, emit, find_device, open_store
from asterisk_securelink.config import Config
from asterisk_securelink.core.compare import to_e164
from asterisk_securelink.core.numbers import safe_display
from asterisk_securelink.core.provisioning import Provisioning
from asterisk_securelink.core.slk1 import SLK1Error, check_key_id, check_t0, device_secret, now_ms
from asterisk_securelink.lifecycle import TRANSITIONS, DeviceStatus, can_rotate
from asterisk_securelink.livekeys import SETTING_PERIOD, SETTING_T0
from asterisk_securelink.provision import access_params, device_params
from asterisk_securelink.store.api_store import fork_set_by
from asterisk_securelink.store.models import utcnow
from asterisk_securelink.store.store import DeviceRow, DuplicateError

_ENDPOINT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*/[A-Za-z0-9_.@:+\-]{1,100}$")


def _new_key_id(master: bytes, uid: str | None) -> str:
    """Random by default; from a device uid, an HMAC under the master key (the uid is not recoverable from it).

    Either way within SLK1's key_id charset (`slk1.check_key_id`); the store refuses one issued before.
    """
    if uid is None:
        return check_key_id("k" + secrets.token_hex(10))
    if not uid or len(uid) > 256:
        raise CliError("--key-id-from-uid: the uid must be 1..256 characters")
    mac = hmac.new(master, b"securelink-key-id\x00" + uid.encode("utf-8"), hashlib.sha256).hexdigest()
    return check_key_id("u" + mac[:20])


def _provisioning(cfg: Config, master: bytes, device: DeviceRow, slk12: bool = False) -> Provisioning:
    """The device's provisioning: the parameters every device gets (`provision.device_params`), or with `slk12` the
    SLK1 1.2 ones of the access number (`provision.access_params`), its key_id and secret."""
    params = device_params(cfg)
    if slk12:
        access = access_params(cfg)
        assert access is not None  # `_check_slk12` refused the command before anything changed
        params = access
    secret = device_secret(master, device.key_id)
    return Provisioning.of(params, key_id=device.key_id, secret=secret, device_id=device.id)


def _device_line(d: DeviceRow) -> str:
    desk = d.desk_endpoint or "-"
    return f"{d.id:>6}  {d.status:<11}  {d.mobile_number:<16}  {desk:<16}  {d.key_id:<22}  {d.display_name}"


def _number(cfg: Config, raw: str) -> str:
    try:  # stored in E.164: two-factor compares a caller with it by the SLK1 1.1 registered-number rule
        return to_e164(raw, cfg.keys.default_country_code or None)
    except ValueError as exc:
        hint = "" if cfg.keys.default_country_code else " (keys.default_country_code in the config)"
        raise CliError(f"--number {safe_display(raw)!r}: {exc}{hint}") from None


def _check_desk(desk: str | None) -> None:
    if desk is not None and not _ENDPOINT.match(desk):
        raise CliError(f"--desk-endpoint: expected TECH/resource like PJSIP/1001, got {safe_display(desk)!r}")


def _check_slk12(args: argparse.Namespace, cfg: Config) -> None:
    """Before anything changes: a 1.2 provisioning needs an access number."""
    if getattr(args, "slk12", False) and access_params(cfg) is None:
        raise CliError("--slk12 needs [calling] access_numbers: a 1.2 provisioning names the access number")


async def cmd_device_add(args: argparse.Namespace, cfg: Config) -> int:
    _check_slk12(args, cfg)
    if args.activation:
        enroll.check(cfg)  # before anything changes
    master = masterkey.load(cfg.master_key_path)
    number = _number(cfg, args.number)
    _check_desk(args.desk_endpoint)
    name = args.name.strip()
    if not name or len(name) > 128 or not name.isprintable():
        raise CliError("NAME: must be 1..128 printable characters")
    routing_set = routing.routing_values(args)
    key_id = _new_key_id(master, args.key_id_from_uid)
    async with open_store(cfg) as store:
        try:
            device = await store.add_device(name, number, args.desk_endpoint, key_id, ACTOR, routing_set)
        except DuplicateError:
            raise CliError(
                "this key_id was issued before and is never reused (is this device uid already enrolled?)"
            ) from None
        if args.activation:  # the phone gets its secret from the device API: no provisioning URI is printed
            headline = (
                f"device {device.id} added: {device.display_name} ({device.mobile_number}), key_id {device.key_id}"
            )
            return await enroll.emit_activation(args, cfg, store, device, headline)
    await _warn_desk(cfg, device)
    uri = _provisioning(cfg, master, device, getattr(args, "slk12", False)).uri()
    data = {**device.public(), "provisioning_uri": uri}
    text = (
        f"device {device.id} added: {device.display_name} ({device.mobile_number}), key_id {device.key_id}\n"
        f"status: {device.status} (limited until registered)\n"
        f"one-time provisioning URI (contains the device secret; give it only to the device, it is not shown again):\n"
        f"{uri}"
    )
    emit(args, data, text)
    return 0


async def _warn_desk(cfg: Config, device: DeviceRow) -> None:
    """A desk endpoint Asterisk does not know is accepted (it may be added later) but said on stderr."""
    if device.desk_endpoint is None:
        return
    desk, note = await routing.read_desk(cfg, device)
    if desk == (None, None):
        print(f"warning: {note}: this device's calls get no context or caller ID from it until it exists "
              "(pjsip.conf)", file=sys.stderr)  # fmt: skip


async def cmd_device_list(args: argparse.Namespace, cfg: Config) -> int:
    async with open_store(cfg) as store:
        devices = await store.list_devices()
    header = f"{'id':>6}  {'status':<11}  {'mobile':<16}  {'desk':<16}  {'key_id':<22}  name"
    emit(args, [d.public() for d in devices], "\n".join([header, *map(_device_line, devices)]))
    return 0


async def cmd_device_show(args: argparse.Namespace, cfg: Config) -> int:
    async with open_store(cfg) as store:
        device = await find_device(store, args.device)
        fork_by = await fork_set_by(store, device.id)
    desk, desk_note = await routing.read_desk(cfg, device)
    used = routing.shown(cfg, device, desk)
    data = {**device.public(), "fork_set_by": fork_by[0] if fork_by else None,
            "fork_set_at": fork_by[1].isoformat() if fork_by else None}  # fmt: skip
    lines = [f"{k}: {v}" for k, v in data.items() if k not in routing.ROUTING]
    lines += [f"{k}: {v.text()}" for k, v in used.items()] + [f"desk endpoint: {desk_note}"]
    emit(args, {**data, "routing": routing.routing_public(used, desk_note)}, "\n".join(lines))
    return 0


async def cmd_device_set(args: argparse.Namespace, cfg: Config) -> int:
    """Change a device's routing identity, home, desk endpoint or number; audited as `device.set` with what changed."""
    values: dict[str, Any] = routing.routing_values(args)
    if args.desk_endpoint is not None:
        _check_desk(args.desk_endpoint or None)
        values["desk_endpoint"] = args.desk_endpoint or None
    if args.number is not None:
        values["mobile_number"] = _number(cfg, args.number)
    if not values:
        raise CliError("device set needs at least one of --context --callerid --home --desk-endpoint --number")
    async with open_store(cfg) as store:
        device = await find_device(store, args.device)
        device = await store.update_device(device.id, "device.set", ACTOR, detail=values, **values)
    changed = ", ".join(f"{k} {v if v is not None else '(cleared)'}" for k, v in values.items())
    if "desk_endpoint" in values:
        await _warn_desk(cfg, device)
    emit(args, device.public(), f"device {device.id}: {changed}")
    return 0


async def cmd_device_status(args: argparse.Namespace, cfg: Config) -> int:
    """register, suspend, resume, revoke: one lifecycle transition, audited (`resume` goes back to what it was)."""
    transition = TRANSITIONS[args.device_cmd]
    reason = getattr(args, "reason", None)
    if args.device_cmd == "revoke" and (not reason or not reason.strip() or len(reason) > 256):
        raise CliError("revoke needs --reason TEXT (1..256 characters)")
    async with open_store(cfg) as store:
        device = await find_device(store, args.device)
        if device.status not in transition.allowed_from:
            raise CliError(f"device {device.id} is {device.status}; cannot {args.device_cmd} it")
        new_status = transition.target(device.registered_at)
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
    emit(args, device.public(), f"device {device.id} is now {device.status}")
    return 0


async def cmd_device_rotate(args: argparse.Namespace, cfg: Config) -> int:
    if args.all == (args.device is not None):
        raise CliError("rotate needs either DEVICE or --all")
    if args.all:
        if args.activation:
            raise CliError("--activation re-enrolls one device: rotate DEVICE --activation")
        return await _rotate_all(args, cfg)
    _check_slk12(args, cfg)
    if args.activation:
        enroll.check(cfg)
    master = masterkey.load(cfg.master_key_path)
    async with open_store(cfg) as store:
        device = await find_device(store, args.device)
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
        if args.activation:  # re-enrollment: a new code; the device's unused codes expire
            headline = f"device {device.id} rotated: key_id {old} -> {device.key_id}; the old keys no longer work"
            return await enroll.emit_activation(args, cfg, store, device, headline)
    uri = _provisioning(cfg, master, device, getattr(args, "slk12", False)).uri()
    emit(
        args,
        {**device.public(), "provisioning_uri": uri},
        f"device {device.id} rotated: key_id {old} -> {device.key_id}; the old keys no longer work\n"
        f"one-time provisioning URI (not shown again):\n{uri}",
    )
    return 0


async def cmd_device_fork(args: argparse.Namespace, cfg: Config) -> int:
    async with open_store(cfg) as store:
        device = await find_device(store, args.device)
        device = await store.update_device(
            device.id, "device.fork", ACTOR, detail={"fork": args.state}, fork_enabled=args.state == "on"
        )
    emit(args, device.public(), f"device {device.id}: forking to desk and mobile is {args.state}")
    return 0


async def _rotate_all(args: argparse.Namespace, cfg: Config) -> int:
    """Every device that is not revoked gets a new key_id, made with the configured `period` and `t0`, which are
    recorded: after a change of either, `run` and `agi` start again (SLK1.md: such a change is a rotation)."""
    master = masterkey.load(cfg.master_key_path)
    k = cfg.keys
    try:
        check_t0(k.t0, now_ms())
    except SLK1Error as exc:
        raise CliError(f"keys.t0: {exc}") from None
    async with open_store(cfg) as store:
        rotated = await store.rotate_all(
            lambda: _new_key_id(master, None), {SETTING_PERIOD: str(k.period), SETTING_T0: str(k.t0)}, ACTOR
        )
    data = [
        {**d.public(), "old_key_id": old, "provisioning_uri": _provisioning(cfg, master, d).uri()} for old, d in rotated
    ]
    lines = [f"{len(rotated)} device(s) rotated for period {k.period}, t0 {k.t0}; their old keys no longer work."]
    if rotated:
        lines.append("one-time provisioning URIs (not shown again; give each only to its device):")
        lines += [f"device {d['id']} ({d['name']}): {d['provisioning_uri']}" for d in data]
    emit(args, data, "\n".join(lines))
    return 0
