"""`securelink audit list`: the audit events, oldest first."""

from __future__ import annotations

import argparse
import json

from asterisk_securelink.cli.context import emit, open_store, parse_since
from asterisk_securelink.config import Config


async def cmd_audit_list(args: argparse.Namespace, cfg: Config) -> int:
    since = parse_since(args.since) if args.since else None
    async with open_store(cfg) as store:
        events = await store.list_audit(since=since, limit=args.limit, action=args.action)
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
    emit(args, rows, text)
    return 0
