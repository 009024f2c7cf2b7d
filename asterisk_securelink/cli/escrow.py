"""`securelink escrow ...`: the escrowed per-call keys (the call records: `cli.calls`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from asterisk_securelink.callkeys import escrow
from asterisk_securelink.cli.context import ACTOR, CliError, emit, open_store
from asterisk_securelink.config import Config
from asterisk_securelink.core.numbers import safe_display
from asterisk_securelink.store.models import utcnow


async def cmd_escrow_keygen(args: argparse.Namespace, cfg: Config) -> int:
    private, public = Path(args.private_key), Path(args.public_key)
    version = escrow.generate(private, public)
    emit(
        args,
        {"key_version": version, "private_key": str(private), "public_key": str(public)},
        f"escrow key {version}: private key {private} (0600: give it to the compliance officer and remove it "
        f"from this host), public key {public} (set escrow.public_key_file to it)",
    )
    return 0


async def cmd_escrow_list(args: argparse.Namespace, cfg: Config) -> int:
    async with open_store(cfg) as store:
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
    emit(args, data, text)
    return 0


async def cmd_escrow_purge(args: argparse.Namespace, cfg: Config) -> int:
    async with open_store(cfg) as store:
        count = await store.purge_call_keys(utcnow(), ACTOR)
    emit(args, {"deleted": count}, f"{count} escrowed call key(s) past retention deleted")
    return 0


async def cmd_escrow_decrypt(args: argparse.Namespace, cfg: Config) -> int:
    """Open the escrowed key(s) of a call; every attempt, opened or not, is audited with its reason."""
    from asterisk_securelink.callkeys.book import open_row

    reason = (args.reason or "").strip()
    if not reason or len(reason) > 256:
        raise CliError("escrow decrypt needs --reason TEXT (1..256 characters): it is audited")
    async with open_store(cfg) as store:
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
    emit(args, opened, "\n".join(f"{o['key_id']} {o['key']}" for o in opened))
    return 0
