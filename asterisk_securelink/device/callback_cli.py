"""`securelink-device callback DEST`: the PBX calls this phone back and connects it to DEST (CALLING.md, "Callback").

    securelink-device callback DEST [--state FILE] [--ca FILE] [--json]

It asks `POST /v1/calls/callback`, prints the call's `call_id`, then confirms the call as a phone does: it claims
`{"call_id"}` every 0.5 s for up to 30 s (404 until the PBX has placed the call and rings the phone; the voucher only
exists then), and prints the outcome: `confirmed` with the call's `call_key_id` (exit 0), or `not confirmed` (exit 1;
the platform hangs up with verdict `unconfirmed` unless the person presses 1). Refusals (`busy`, `denied`,
`no_route`, `rate_limited`, 503 `unavailable`, ...) are told as for `intent` (exit 1, or 3 without an answer).
`--json`: one object per line, `{"call_id"}` then `{"call_id", "confirmed", "call_key_id"}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any, Final

from asterisk_securelink.device.api_cli import ask
from asterisk_securelink.device.api_client import CallKey, DeviceApiClient, NotFound
from asterisk_securelink.device.cli_io import DeviceCliError
from asterisk_securelink.device.dial import DialError, check_destination

POLL_S: Final = 0.5
CONFIRM_WINDOW_S: Final = 30.0


async def confirm(client: DeviceApiClient, call_id: str, *, poll_s: float = POLL_S,
                  window_s: float = CONFIRM_WINDOW_S) -> CallKey | None:  # fmt: skip
    """Claim `{"call_id"}` until it is released (the key), or None when the window passes. One Idempotency-Key for
    every try, so a release whose answer was lost is answered again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + window_s
    idempotency_key = f"cb-{call_id}"[:128]
    while True:
        try:
            return await client.claim_call(call_id, idempotency_key)
        except NotFound:
            pass  # not placed yet, or not ringing yet
        if loop.time() + poll_s > deadline:
            return None
        await asyncio.sleep(poll_s)


def cmd_callback(args: argparse.Namespace) -> int:
    try:
        destination = check_destination(args.destination)
    except DialError as exc:
        raise DeviceCliError(str(exc)) from None
    assert destination is not None  # required by the parser

    async def request(client: DeviceApiClient) -> tuple[str, CallKey | None]:
        call_id = await client.callback(destination)
        print(json.dumps({"call_id": call_id}) if args.json else f"call_id {call_id}: the PBX is calling back",
              flush=True)  # fmt: skip
        return call_id, await confirm(client, call_id)

    *_, (call_id, key) = ask(args, request)
    doc: dict[str, Any] = {"call_id": call_id, "confirmed": key is not None,
                           "call_key_id": key.call_key_id if key is not None else None}  # fmt: skip
    if args.json:
        print(json.dumps(doc))
    elif key is not None:
        print(f"confirmed: call {call_id} (call_key_id {key.call_key_id}); answer the phone")
    else:
        print(f"not confirmed: call {call_id} did not ring this phone within {CONFIRM_WINDOW_S:.0f} s")
    return 0 if key is not None else 1


def add_commands(sub: Any, wrap: Any) -> None:
    """Add callback to the `securelink-device` subparsers; `wrap` turns API errors into exit codes."""
    c = sub.add_parser("callback", help="the PBX calls this phone back and connects it to DEST; confirms by claiming")
    c.add_argument("destination", metavar="DEST", help="the number to reach, 1-20 digits")
    c.add_argument("--state", metavar="FILE", help="the enrolled device's state file (default: as for enroll)")
    c.add_argument("--ca", metavar="FILE", help="a PEM CA certificate (default: the one given to enroll)")
    c.add_argument("--json", action="store_true", help="JSON objects, one per line")
    c.set_defaults(func=wrap(cmd_callback))
