"""`securelink device ...`: enroll devices and move them through their lifecycle (`lifecycle.TRANSITIONS`)."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import re
import secrets
from typing import Any

from asterisk_securelink import masterkey
from asterisk_securelink.cli.context import ACTOR, CliError, emit, find_device, open_store
from asterisk_securelink.config import Config
from asterisk_securelink.core.numbers import normalize, safe_display
from asterisk_securelink.core.provisioning import Provisioning
from asterisk_securelink.core.slk1 import device_secret
from asterisk_securelink.lifecycle import TRANSITIONS, DeviceStatus, can_rotate
from asterisk_securelink.store.models import utcnow
from asterisk_securelink.store.store import DeviceRow, DuplicateError

_ENDPOINT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*/[A-Za-z0-9_.@:+\-]{1,100}$")


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


def _device_line(d: DeviceRow) -> str:
    desk = d.desk_endpoint or "-"
    return f"{d.id:>6}  {d.status:<11}  {d.mobile_number:<16}  {desk:<16}  {d.key_id:<22}  {d.display_name}"


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
    async with open_store(cfg) as store:
        try:
            device = await store.add_device(name, number, args.desk_endpoint, key_id, ACTOR)
        except DuplicateError:
            raise CliError("a device with this key_id already exists (is this device uid already enrolled?)") from None
    uri = _provisioning(cfg, master, device).uri()
    data = {**device.public(), "provisioning_uri": uri}
    text = (
        f"device {device.id} added: {device.display_name} ({device.mobile_number}), key_id {device.key_id}\n"
        f"status: {device.status} (limited until registered)\n"
        f"one-time provisioning URI (contains the device secret; give it only to the device, it is not shown again):\n"
        f"{uri}"
    )
    emit(args, data, text)
    return 0


async def cmd_device_list(args: argparse.Namespace, cfg: Config) -> int:
    async with open_store(cfg) as store:
        devices = await store.list_devices()
    header = f"{'id':>6}  {'status':<11}  {'mobile':<16}  {'desk':<16}  {'key_id':<22}  name"
    emit(args, [d.public() for d in devices], "\n".join([header, *map(_device_line, devices)]))
    return 0


async def cmd_device_show(args: argparse.Namespace, cfg: Config) -> int:
    async with open_store(cfg) as store:
        device = await find_device(store, args.device)
    data = device.public()
    emit(args, data, "\n".join(f"{k}: {v}" for k, v in data.items()))
    return 0


async def cmd_device_status(args: argparse.Namespace, cfg: Config) -> int:
    """register, suspend, resume, revoke: one lifecycle transition, audited."""
    transition = TRANSITIONS[args.device_cmd]
    new_status = transition.to
    reason = getattr(args, "reason", None)
    if args.device_cmd == "revoke" and (not reason or not reason.strip() or len(reason) > 256):
        raise CliError("revoke needs --reason TEXT (1..256 characters)")
    async with open_store(cfg) as store:
        device = await find_device(store, args.device)
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
    emit(args, device.public(), f"device {device.id} is now {device.status}")
    return 0


async def cmd_device_rotate(args: argparse.Namespace, cfg: Config) -> int:
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
    uri = _provisioning(cfg, master, device).uri()
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
