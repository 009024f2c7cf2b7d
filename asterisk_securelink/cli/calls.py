"""`securelink calls list`: the call records of both directions (CALLING.md, "Call records"), filtered by device,
time and direction, as text, JSON or CSV. A withheld caller number shows as `withheld`; a caller number that was the
key itself was never recorded (`-`)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from typing import Any

from asterisk_securelink.callkeys.book import record_public
from asterisk_securelink.cli.context import CliError, find_device, open_store, parse_since
from asterisk_securelink.config import Config
from asterisk_securelink.core.numbers import safe_display

COLUMNS = ("started", "device", "direction", "method", "caller", "destination", "answered", "ended", "cause", "legs")
_NUMBER = re.compile(r"[+-]?[0-9]+")


def row_of(r: dict[str, Any]) -> dict[str, str]:
    """One record as the table's columns (strings; "" for none)."""
    legs = " ".join(f"{g.get('endpoint', '?')}={g.get('outcome', '?')}" for g in r["legs"] if isinstance(g, dict))
    values = (r["started_at"], r["device"], r["direction"], r["method"], r["caller"], r["destination"],
              r["answered_at"], r["ended_at"], r["hangup_cause"], legs)  # fmt: skip
    return {c: "" if v is None else str(v) for c, v in zip(COLUMNS, values, strict=True)}


def _cell(value: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula (a caller number is whatever the network delivered)."""
    if value[:1] in ("=", "@", "\t", "\r") or (value[:1] in ("+", "-") and not _NUMBER.fullmatch(value)):
        return "'" + value
    return value


def to_csv(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows([_cell(r[c]) for c in COLUMNS] for r in rows)
    return out.getvalue().rstrip("\n")


def to_text(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "no call records"
    return "\n".join(
        f"{r['started']}  device={r['device'] or '-'}  {r['direction']:<8}  {r['method'] or '-':<8}  "
        f"caller={safe_display(r['caller'] or '-')}  dest={safe_display(r['destination'] or '-')}  "
        f"answered={r['answered'] or '-'}  ended={r['ended'] or '-'}  cause={r['cause'] or '-'}  "
        f"legs={safe_display(r['legs'] or '-', 200)}"
        for r in rows
    )


async def cmd_calls_list(args: argparse.Namespace, cfg: Config) -> int:
    if args.json and args.csv:
        raise CliError("calls list: --json or --csv, not both")
    since = parse_since(args.since) if args.since else None
    async with open_store(cfg) as store:
        device_id = None
        if args.device is not None:  # a deleted device's records keep its id: a number is taken as it is
            device_id = int(args.device) if args.device.isdigit() else (await find_device(store, args.device)).id
        records = await store.list_call_records(
            since=since, limit=args.limit, device_id=device_id, direction=args.direction
        )
    data = [record_public(r) for r in records]
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        rows = [row_of(r) for r in data]
        print(to_csv(rows) if args.csv else to_text(rows))
    return 0
