"""`securelink key current` and `securelink verify`: a device's keys, and the verifier run by hand (operator debug)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from asterisk_securelink import masterkey
from asterisk_securelink.app import verifier
from asterisk_securelink.audit import AuditWriter
from asterisk_securelink.cli.context import ACTOR, CliError, emit, find_device, open_store
from asterisk_securelink.config import Config
from asterisk_securelink.core.compare import matches
from asterisk_securelink.core.numbers import normalize
from asterisk_securelink.core.policy import WEAK_BITS
from asterisk_securelink.core.slk1 import (
    Direction,
    derive_key,
    device_secret,
    epoch_at_ms,
    epoch_start_ms,
    now_ms,
    outbound_window,
)
from asterisk_securelink.core.verdicts import Mode
from asterisk_securelink.inbound.service import VerifyRequest
from asterisk_securelink.store.store import Store

CLI_NODE = "cli"  # the node of `verify --call-id`: an operator's call ids never stand for a real channel


async def cmd_key_current(args: argparse.Namespace, cfg: Config) -> int:
    master = masterkey.load(cfg.master_key_path)
    direction = Direction(args.direction)
    fmt = cfg.inbound_fmt if direction is Direction.INBOUND else cfg.outbound_fmt
    at_ms = args.at_ms if args.at_ms is not None else now_ms()
    epoch = epoch_at_ms(at_ms, cfg.keys.period, cfg.keys.t0)
    async with open_store(cfg) as store:
        device = await find_device(store, args.device)
        await store.audit(
            "key.show", "ok", ACTOR, device_id=device.id, direction=direction.value, detail={"epoch": epoch}
        )
    key = derive_key(device_secret(master, device.key_id), direction, epoch, fmt)
    valid_until = epoch_start_ms(epoch + 1, cfg.keys.period, cfg.keys.t0) // 1000
    data = {
        "device": device.id,
        "direction": direction.value,
        "epoch": epoch,
        "key": key,
        "valid_until": valid_until,
    }
    emit(args, data, key)
    return 0


async def cmd_verify(args: argparse.Namespace, cfg: Config) -> int:
    if args.at_ms is not None and args.at_ms > now_ms() + cfg.keys.period * 1000:
        # an admitted verdict spends the key: spending windows no device has reached yet would burn real keys
        raise CliError("--at is in the future: verify spends the key it admits, so only past or present times")
    master = masterkey.load(cfg.master_key_path)
    async with open_store(cfg) as store:
        if args.direction == Direction.OUTBOUND.value:
            data = await _verify_outbound(cfg, master, store, args)
        else:
            data = await _verify_inbound(cfg, master, store, args)
    device = f" device {data['device']}" if data.get("device") is not None else ""
    emit(args, data, f"{data['verdict']}{device}")
    return 0


async def _verify_inbound(cfg: Config, master: bytes, store: Store, args: argparse.Namespace) -> dict[str, Any]:
    """The verifier exactly as a call runs it: an admitted key is spent, the verdict is audited."""
    audit = AuditWriter(store.audit_many)
    service = verifier(cfg, store, master, audit, node=CLI_NODE)
    await service.start(actor=ACTOR)
    try:
        outcome = await service.verify(
            VerifyRequest(
                presented=args.number,
                mode=Mode(args.mode),
                caller=args.caller,
                call_id=args.call_id,
                source="cli",
                at_ms=args.at_ms,
            )
        )
        if not await audit.drain():
            raise CliError("the verdict could not be written to the audit (database unreachable?)")
    finally:
        await audit.close()
    strength = service.keys.strength()
    if strength < WEAK_BITS:
        print(
            f"warning: one guess has about 2^-{strength:.1f} chance "
            f"(below {WEAK_BITS:.0f} bits: use a larger format or two-factor mode)",
            file=sys.stderr,
        )
    return {"verdict": outcome.verdict.value, "device": outcome.device_id, "epoch": outcome.epoch}


async def _verify_outbound(cfg: Config, master: bytes, store: Store, args: argparse.Namespace) -> dict[str, Any]:
    """Which device's outbound key is this, in the window a device accepts (`slk1.outbound_window`)? Compared as the
    phone compares (SLK1 1.1, with the trunk prefixes it is provisioned with, `keys.trunk_prefixes`). Spends nothing."""
    digits = normalize(args.number)
    if digits is None:
        return {"verdict": "malformed", "device": None, "epoch": None}
    at_ms = args.at_ms if args.at_ms is not None else now_ms()
    window = outbound_window(epoch_at_ms(at_ms, cfg.keys.period, cfg.keys.t0))
    fmt = cfg.outbound_fmt
    for device in await store.list_devices():
        secret = device_secret(master, device.key_id)
        for epoch in window:
            key = fmt.significant(derive_key(secret, Direction.OUTBOUND, epoch, fmt))
            if matches(digits, key, fmt.literal_prefix, cfg.keys.trunk_prefixes):
                return {"verdict": "admitted", "device": device.id, "epoch": epoch}
    return {"verdict": "mismatch", "device": None, "epoch": None}
