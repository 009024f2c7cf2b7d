"""`securelink-device`: the device side on a terminal, to cross-check a phone implementation or enroll a phone.

    securelink-device key   [URI_OR_FILE] [--at UNIX_TIME] [--state FILE] [--json] [--watch [--count N]]
    securelink-device check [URI_OR_FILE] NUMBER [--at UNIX_TIME] [--state FILE] [--json]
    securelink-device qr    URI_OR_FILE [--png FILE]
    securelink-device enroll URI|CODE [--server URL] [--ca FILE] [--state FILE] [--json]
    securelink-device status | fork on|off | claim NUMBER   [--state FILE] [--ca FILE] [--json]
    securelink-device dial [DEST] | intent [DEST]           [--state FILE] [--json]   (`device/dial_cli.py`)
    securelink-device callback DEST                         [--state FILE] [--json]   (`device/callback_cli.py`)

URI_OR_FILE is the one-time provisioning URI printed by `securelink device add`, a file holding it, or `-` for stdin.
The URI carries the device secret: prefer a file (mode 0600) or stdin, since an argument lands in shell history.
Nothing here prints the secret, except inside the QR code of `qr`. `--at` takes unix seconds with a fraction
(`1790000000.5`), converted to milliseconds exactly.

`--state FILE` (mode 0600, created when missing) is what a phone keeps across calls (SLK1.md 1.1): the last inbound
epoch presented and the outbound high-water mark. With it, `key` presents the next key of the burst and records it,
or says how long to wait; `check` refuses a key at or below the high-water mark and records the one it accepts.
Without it, each run is a device that has presented and accepted nothing yet.

A device enrolled through the device API (`enroll`, `status`, `fork`, `claim`: `device/api_cli.py`) keeps its
secret, parameters and the platform's clock offset in the same state file (default
`~/.config/securelink-device/state.json`). `key` and `check` without URI_OR_FILE use that enrollment and compute by
the platform's clock (SLK1 1.1, "Inbound presentation"), unless `--at` gives the time.

Exit codes: 0 ok (`check`: genuine), 1 `check`: not genuine, `key --state`: no keyed call now (wait), the device API
refused (`enroll`, `status`, `fork`, `claim`), 2 bad input (one line on stderr), 3 no usable answer from the device
API.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import segno

from asterisk_securelink.core.ascii import ascii_lower
from asterisk_securelink.core.numbers import safe_display
from asterisk_securelink.core.provisioning import Provisioning, ProvisioningError
from asterisk_securelink.core.slk1 import SLK1Error, now_ms, seconds_to_ms
from asterisk_securelink.device import api_cli, callback_cli, dial_cli
from asterisk_securelink.device import reference as device
from asterisk_securelink.device.cli_io import (
    DeviceCliError,
    load_enrolled,
    read_provisioning,
    read_source,
    read_state,
    shown_path,
    state_path,
    uri_in,
    warn,
    write_private,
    write_state,
)
from asterisk_securelink.device.enrollment import Enrollment
from asterisk_securelink.deviceapi import codes


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own usage errors: exit 2 as well, one short message
        self.exit(2, f"{self.prog}: error: {message}\n")


def _time(value: int | None, enrollment: Enrollment | None = None) -> int:
    """`--at` (already milliseconds), or the wall clock as integer unix milliseconds, by the platform's clock when
    the device learned it."""
    if value is not None:
        return value
    return now_ms() if enrollment is None else enrollment.platform_ms(now_ms())


def _device(args: argparse.Namespace) -> tuple[Provisioning, Path | None, device.DeviceState, Enrollment | None]:
    """The provisioning, the state file (None: stateless), its state and the enrollment: from URI_OR_FILE and
    `--state`, or, without URI_OR_FILE, from the enrollment in the state file (the default one without `--state`)."""
    if args.uri is None:
        enrolled_path = state_path(args.state)
        file, enrolled = load_enrolled(enrolled_path)
        if enrolled.status in ("suspended", "revoked"):
            warn(f"the platform said this device is {enrolled.status} (securelink-device status): its keys are "
                 "refused")  # fmt: skip
        return enrolled.provisioning, enrolled_path, file.state, enrolled
    prov = read_provisioning(args.uri)
    path = None if args.state is None else Path(args.state)
    state, enrollment = read_state(path, prov)
    return prov, path, state, enrollment


# -- commands ------------------------------------------------------------------------------------------------
def _key_record(prov: Provisioning, k: device.InboundKey) -> dict[str, object]:
    return {
        "device": prov.device_id,
        "key_id": prov.key_id,
        "direction": "inbound",
        "format": prov.inbound_format,
        "key": k.key,
        "digits": k.digits,
        "epoch": k.epoch,
        "valid_from": k.valid_from,
        "valid_until": k.valid_until,
        "seconds_left": round(k.seconds_left, 3),
        "at_ms": k.at_ms,
        "valid_from_ms": k.valid_from_ms,
        "valid_until_ms": k.valid_until_ms,
        "burst": k.burst,
        "burst_size": k.burst_size,
        "mode": prov.mode,
        "present": k.present,
    }


def _key_line(prov: Provisioning, k: device.InboundKey) -> str:
    line = f"{k.key}  epoch {k.epoch}, {k.seconds_left:.1f} s left, call {k.burst} of {k.burst_size} in this period"
    return line + (f"; dial {k.present}" if prov.mode == "dnis" else "")


def _print_key(args: argparse.Namespace, prov: Provisioning, at: int) -> device.InboundKey:
    try:
        try:
            k = device.inbound_key(prov, at)
        except device.BurstUsedUp as wait:  # look_ahead 0, a period begun < 2 s ago: the key presentable after it
            k = device.inbound_key(prov, at + wait.wait_ms)
    except SLK1Error as exc:
        raise DeviceCliError(f"--at: {exc}") from None
    print(json.dumps(_key_record(prov, k)) if args.json else _key_line(prov, k), flush=True)
    return k


def _present(args: argparse.Namespace, prov: Provisioning, path: Path, state: device.DeviceState,
             enrollment: Enrollment | None, at: int) -> int:  # fmt: skip
    """`key --state`: the next key of the burst, recorded before it is shown, or how long to wait (exit 1)."""
    try:
        k, after = device.present_inbound(prov, state, at)
    except SLK1Error as exc:
        raise DeviceCliError(f"--at: {exc}") from None
    except device.BurstUsedUp as wait:
        if wait.state is not None:  # the clock correction is kept though no key follows (SLK1.md revision 2)
            write_state(path, wait.state, enrollment)
        if args.json:
            record = {"device": prov.device_id, "key_id": prov.key_id, "direction": "inbound",
                      "format": prov.inbound_format, "key": None, "at_ms": at, "wait_ms": wait.wait_ms,
                      "seconds_to_wait": round(wait.wait_ms / 1000, 3), "burst_size": wait.burst_size,
                      "last_inbound_epoch": wait.last}  # fmt: skip
            print(json.dumps(record))
        else:
            print(f"no keyed call now: {wait}")
        return 1
    write_state(path, after, enrollment)
    print(json.dumps(_key_record(prov, k)) if args.json else _key_line(prov, k), flush=True)
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise DeviceCliError("--count: must be at least 1")
    stateful = args.state is not None or args.uri is None
    if stateful and (args.watch or args.count is not None):
        raise DeviceCliError("--state (or an enrolled device) presents one key per run: it cannot be combined with "
                             "--watch or --count")  # fmt: skip
    prov, path, state, enrollment = _device(args)
    simulated = args.at is not None
    at = _time(args.at, enrollment)
    if path is not None:
        return _present(args, prov, path, state, enrollment, at)
    if not (args.watch or args.count is not None):
        _print_key(args, prov, at)
        return 0
    printed = 0
    try:
        while args.count is None or printed < args.count:
            k = _print_key(args, prov, at)
            printed += 1
            if args.count is not None and printed >= args.count:
                break
            if simulated:  # --at: the following windows one after the other, without waiting
                at = k.valid_until_ms
            else:
                time.sleep(max(0, k.valid_until_ms - now_ms() + 10) / 1000)
                at = now_ms()
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    prov, path, state, enrollment = _device(args)
    at = _time(args.at, enrollment)
    high = state.outbound_high_water
    try:
        result = device.check(prov, args.number, at, high)
        accepted = [e for e in sorted(device.outbound_epochs(prov, at)) if high is None or e > high]
    except SLK1Error as exc:
        raise DeviceCliError(f"--at: {exc}") from None
    shown = safe_display(args.number)
    if result.status is device.CheckStatus.MALFORMED:
        raise DeviceCliError(f"NUMBER: {shown!r} is not a phone number (3..20 digits; '+', spaces, '-', '.' allowed)")
    if result.genuine:
        write_state(path, device.accept(state, result), enrollment)  # spent before the call is shown as genuine
    if args.json:
        record = {"device": prov.device_id, "number": shown, "status": result.status.value,
                  "genuine": result.genuine, "window": result.window, "epoch": result.epoch,
                  "accepted_epochs": accepted, "outbound_high_water": high}  # fmt: skip
        print(json.dumps(record))
    elif result.genuine:
        print(f"genuine: {shown} is the PBX's outbound key of the {result.window} window (epoch {result.epoch})")
    elif result.status is device.CheckStatus.ANONYMOUS:
        print("not genuine: the caller number is withheld or anonymous; the PBX's keyed calls always carry a key")
    elif result.status is device.CheckStatus.REPLAYED:
        print(f"not genuine: {shown} is the PBX's outbound key of epoch {result.epoch}, already spent (a replay)")
    else:
        epochs = ", ".join(str(e) for e in accepted) or "none"
        print(f"not genuine: {shown} is not the PBX's outbound key of any accepted window (epochs {epochs})")
    return 0 if result.genuine else 1


def _qr_payload(source: str) -> tuple[str, str]:
    """(URI to draw, what its QR code holds): a provisioning URI (the device secret) or an enrollment URI
    (`securelink://enroll`: a one-time activation code), each checked and written in its canonical form."""
    text, where = read_source(source, argument_warning=(
        "the URI on the command line holds a secret (the device secret or a one-time activation code) and is now "
        "in your shell history; pass a file (mode 0600) or '-' (stdin) instead"))  # fmt: skip
    uri = uri_in(text, ("provisioning_uri", "enrollment_uri"))
    if ascii_lower(uri).startswith(f"{codes.SCHEME}://{codes.URI_HOST}"):
        try:
            server, code = codes.parse_enrollment_uri(uri)
        except codes.CodeError as exc:
            raise DeviceCliError(f"{where}: {exc}") from None
        return codes.enrollment_uri(server, code), "a one-time activation code (valid until the phone redeems it)"
    try:
        return device.load(uri).uri(), "the device secret"
    except ProvisioningError as exc:
        raise DeviceCliError(f"{where}: {exc}") from None


def cmd_qr(args: argparse.Namespace) -> int:
    uri, holds = _qr_payload(args.uri)
    qr = segno.make(uri, error="m", micro=False)
    if args.png is None:
        warn(f"this QR code holds {holds}: show it only to the device being enrolled, then clear the screen")
        qr.terminal(out=sys.stdout, compact=True)
        return 0
    path = Path(args.png)
    write_private(path, lambda f: qr.save(f, kind="png", scale=8, border=4), "--png", ".securelink-qr-")
    print(f"wrote {shown_path(path)} (mode 0600; it holds {holds}: delete it after enrolling)")
    return 0


# -- argument parsing ----------------------------------------------------------------------------------------
def _unix_ms(value: str) -> int:
    """`--at`: unix seconds with an optional fraction, as exact integer milliseconds."""
    try:
        return seconds_to_ms(value)
    except SLK1Error:
        raise argparse.ArgumentTypeError(f"not a unix time in seconds: {safe_display(value)!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="securelink-device",
        description="Device side of SLK1: the keys an enrolled phone computes (reference and cross-check tool).",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    src = ("provisioning URI, a file holding it, or '-' for stdin (an argument lands in shell history); "
           "leave out to use the device enrolled in the state file")  # fmt: skip
    at = "unix time in seconds, a fraction allowed, to compute at (default: now, by the platform's clock if known)"
    state = "the device's state file (0600): last inbound epoch presented, outbound high-water mark"

    k = sub.add_parser("key", help="the inbound key to present (device -> PBX) and which call of the burst it is")
    k.add_argument("uri", metavar="URI_OR_FILE", nargs="?", help=src)
    k.add_argument("--at", type=_unix_ms, metavar="UNIX_TIME", help=at)
    k.add_argument("--state", metavar="FILE", help=state + "; presents the next key and records it")
    k.add_argument("--json", action="store_true", help="one JSON object per key")
    k.add_argument("--watch", action="store_true", help="print the key again at every new window until Ctrl-C")
    k.add_argument("--count", type=int, metavar="N", help="watch, and stop after N keys")
    k.set_defaults(func=cmd_key)

    c = sub.add_parser("check", help="is NUMBER the PBX's outbound key (a genuine call from the PBX)?")
    c.add_argument("uri", metavar="URI_OR_FILE", nargs="?", help=src)
    c.add_argument("number", metavar="NUMBER", help="the caller number the phone received")
    c.add_argument("--at", type=_unix_ms, metavar="UNIX_TIME", help=at)
    c.add_argument("--state", metavar="FILE", help=state + "; records an accepted key")
    c.add_argument("--json", action="store_true", help="the result as one JSON object")
    c.set_defaults(func=cmd_check)

    q = sub.add_parser("qr", help="a provisioning or enrollment URI as a QR code for the phone to scan")
    q.add_argument(
        "uri",
        metavar="URI_OR_FILE",
        help="securelink://provision or securelink://enroll URI, a file holding it, or '-' for stdin",
    )
    q.add_argument("--png", metavar="FILE", help="write a PNG (mode 0600) instead of printing to the terminal")
    q.set_defaults(func=cmd_qr)
    api_cli.add_commands(sub)
    dial_cli.add_commands(sub, api_cli.api_errors)
    callback_cli.add_commands(sub, api_cli.api_errors)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except DeviceCliError as exc:
        print(f"securelink-device: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
