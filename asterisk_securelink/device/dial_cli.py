"""`securelink-device dial [DEST]` and `securelink-device intent [DEST]`: what an enrolled phone provisioned for the
access number (SLK1 1.2, mode `dtmf` or `intent`) dials (CALLING.md, "DTMF", "Intent"; `device/dial.py`).

    securelink-device dial   [DEST] [--state FILE] [--json]
    securelink-device intent [DEST] [--state FILE] [--ca FILE] [--json] [--idempotency-key KEY]

`dial` presents the next inbound key of the burst (recorded in the state file before it is shown, as `key --state`)
and prints the dial string an app uses, `ACCESS,,KEY[,DEST]`, and its `tel:` URI. The key in it is spent by the call.
`intent` asks the device API for an intent and prints the number to dial (`dial`, exactly the access number) when at
least 15 s of it remain; on 409 `use_dtmf`, a 5xx (503 `unavailable`), no answer, or an intent with less than 15 s
left it falls back to the DTMF dial string, saying why on stderr. On 429 it says how long to wait (exit 1); any other
refusal is told (exit 1). `--json`: one object with `method` (`intent` | `dtmf`), `dial`, `tel` and, for an intent,
`intent_id`, `call_id`, `remaining_ms`; for DTMF, `epoch`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from asterisk_securelink.core.slk1 import now_ms
from asterisk_securelink.device import reference as device
from asterisk_securelink.device.api_cli import UNANSWERED, ApiCommandError, ask
from asterisk_securelink.device.api_client import DeviceApiClient
from asterisk_securelink.device.cli_io import DeviceCliError, load_enrolled, state_path, warn, write_state
from asterisk_securelink.device.dial import (
    DialError,
    access_number,
    check_destination,
    dtmf_dial_string,
    intent_usable,
    tel_uri,
)

FALLBACK_CODES = frozenset({"use_dtmf"})  # and every unanswered request (no answer, 5xx)


def _destination(args: argparse.Namespace) -> str | None:
    try:
        return check_destination(args.destination)
    except DialError as exc:
        raise DeviceCliError(str(exc)) from None


def _dtmf(args: argparse.Namespace) -> int:
    """Present the next key (recorded first) and print the DTMF dial string; exit 1 when the burst is used up."""
    destination = _destination(args)
    path = state_path(args.state)
    file, enrollment = load_enrolled(path)
    prov = enrollment.provisioning
    at = enrollment.platform_ms(now_ms())
    try:
        access_number(prov)  # provisioned for it? (before a key is spent)
        k, after = device.present_inbound(prov, file.state, at)
    except DialError as exc:
        raise DeviceCliError(str(exc)) from None
    except device.BurstUsedUp as wait:
        if wait.state is not None:  # the clock correction is kept though no key follows (SLK1.md revision 2)
            write_state(path, wait.state, enrollment)
        print(json.dumps({"method": "dtmf", "dial": None, "wait_ms": wait.wait_ms}) if args.json
              else f"no keyed call now: {wait}")  # fmt: skip
        return 1
    write_state(path, after, enrollment)
    dial = dtmf_dial_string(prov, k.key, destination)
    _print(args, {"method": "dtmf", "dial": dial, "tel": tel_uri(dial), "epoch": k.epoch})
    return 0


def _print(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(doc))
        return
    print(doc["dial"])
    print(doc["tel"])
    if doc["method"] == "dtmf":
        print("the key in this string is spent by the call: dial it once", flush=True)


def cmd_dial(args: argparse.Namespace) -> int:
    return _dtmf(args)


def cmd_intent(args: argparse.Namespace) -> int:
    destination = _destination(args)
    _, enrollment = load_enrolled(state_path(args.state))
    try:
        access_number(enrollment.provisioning)
    except DialError as exc:
        raise DeviceCliError(str(exc)) from None

    async def request(client: DeviceApiClient) -> Any:
        return await client.intent(destination, args.idempotency_key)

    try:
        *_, intent = ask(args, request)
    except ApiCommandError as exc:
        if exc.exit_code != UNANSWERED and exc.code not in FALLBACK_CODES:
            raise
        warn(f"no intent ({exc}); calling by DTMF")
        return _dtmf(args)
    remaining = intent.remaining_ms(now_ms())
    if not intent_usable(remaining):
        warn(f"the intent has {max(0, remaining) / 1000:.1f} s left (under 15 s); calling by DTMF")
        return _dtmf(args)
    _print(args, {"method": "intent", "dial": intent.dial, "tel": tel_uri(intent.dial), "intent_id": intent.intent_id,
                  "call_id": intent.call_id, "remaining_ms": remaining})  # fmt: skip
    return 0


def add_commands(sub: Any, wrap: Any) -> None:
    """Add dial and intent to the `securelink-device` subparsers; `wrap` turns API errors into exit codes."""
    state = "the enrolled device's state file (0600; default ~/.config/securelink-device/state.json)"
    d = sub.add_parser("dial", help="the dial string for the access number: ACCESS,,KEY[,DEST] and its tel: URI")
    i = sub.add_parser("intent", help="ask for an intent and print the number to dial (DTMF when there is none)")
    i.add_argument("--ca", metavar="FILE", help="a PEM CA certificate (default: the one given to enroll)")
    i.add_argument("--idempotency-key", metavar="KEY", help="ask again for an earlier intent (default: a fresh key)")
    for parser, func in ((d, cmd_dial), (i, cmd_intent)):
        parser.add_argument("destination", metavar="DEST", nargs="?", help="the number to reach, 1-20 digits")
        parser.add_argument("--state", metavar="FILE", help=state)
        parser.add_argument("--json", action="store_true", help="one JSON object")
        parser.set_defaults(func=wrap(func))
