"""`securelink-device`: the device side on a terminal, to cross-check a phone implementation or enroll a phone.

    securelink-device key   URI_OR_FILE [--at UNIX_TIME] [--state FILE] [--json] [--watch [--count N]]
    securelink-device check URI_OR_FILE NUMBER [--at UNIX_TIME] [--state FILE] [--json]
    securelink-device qr    URI_OR_FILE [--png FILE]

URI_OR_FILE is the one-time provisioning URI printed by `securelink device add`, a file holding it, or `-` for stdin.
The URI carries the device secret: prefer a file (mode 0600) or stdin, since an argument lands in shell history.
Nothing here prints the secret, except inside the QR code of `qr`. `--at` takes unix seconds with a fraction
(`1790000000.5`), converted to milliseconds exactly.

`--state FILE` (mode 0600, created when missing) is what a phone keeps across calls (SLK1.md 1.1): the last inbound
epoch presented and the outbound high-water mark. With it, `key` presents the next key of the burst and records it,
or says how long to wait; `check` refuses a key at or below the high-water mark and records the one it accepts.
Without it, each run is a device that has presented and accepted nothing yet.

Exit codes: 0 ok (`check`: genuine), 1 `check`: not genuine, `key --state`: no keyed call now (wait), 2 bad input
(one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NoReturn

import segno

from asterisk_securelink import keyfile
from asterisk_securelink.core.numbers import safe_display
from asterisk_securelink.core.provisioning import Provisioning, ProvisioningError
from asterisk_securelink.core.slk1 import SLK1Error, now_ms, seconds_to_ms
from asterisk_securelink.device import reference as device

MAX_URI_BYTES = 4096  # a provisioning URI is a few hundred bytes
MAX_STATE_BYTES = 4096  # a state file is about 150 bytes
URI_PREFIX = "securelink:"


class DeviceCliError(Exception):
    """Bad input: printed as one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own usage errors: exit 2 as well, one short message
        self.exit(2, f"{self.prog}: error: {message}\n")


# -- reading the provisioning URI ----------------------------------------------------------------------------
def read_provisioning(source: str) -> Provisioning:
    """The provisioning in `source`: a URI, `-` (stdin) or a file path. Errors never contain the URI."""
    if source == "-":
        text = sys.stdin.read(MAX_URI_BYTES + 1)
        where = "stdin"
    elif source[: len(URI_PREFIX)].lower() == URI_PREFIX:
        warn(
            "the provisioning URI on the command line contains the device secret and is now in your shell "
            "history; pass a file (mode 0600) or '-' (stdin) instead"
        )
        text = source
        where = "the argument"
    else:
        text = _read_file(Path(source))
        where = f"file {safe_display(source)}"
    if len(text.encode("utf-8", "replace")) > MAX_URI_BYTES:
        raise DeviceCliError(f"{where} holds more than {MAX_URI_BYTES} bytes: not a provisioning URI")
    try:
        return device.load(_uri_in(text))
    except ProvisioningError as exc:
        raise DeviceCliError(f"{where}: {exc}") from None


def _uri_in(text: str) -> str:
    """The URI itself, or the `provisioning_uri` of `securelink device add --json` output saved to a file."""
    if not text.lstrip().startswith("{"):
        return text
    try:
        data = json.loads(text)
    except ValueError:
        raise DeviceCliError("the input looks like JSON but does not parse") from None
    uri = data.get("provisioning_uri") if isinstance(data, dict) else None
    if not isinstance(uri, str):
        raise DeviceCliError('the JSON input has no "provisioning_uri" string')
    return uri


def _read_file(path: Path) -> str:
    shown = safe_display(str(path))
    try:
        found = keyfile.read_private(path, MAX_URI_BYTES + 1, follow_symlinks=True)
    except FileNotFoundError:
        raise DeviceCliError(
            f"{shown}: no such file (give a securelink:// URI, a file holding it, or '-' for stdin)"
        ) from None
    except keyfile.NotRegularFileError:
        raise DeviceCliError(f"{shown} is not a regular file") from None
    except OSError as exc:
        raise DeviceCliError(f"{shown}: cannot be opened: {exc.strerror or exc}") from None
    if found.shared:
        warn(f"{shown} holds the device secret but has mode {found.mode:04o}; fix: chmod 600 {shown}")
    try:
        return found.data.decode("utf-8")
    except UnicodeDecodeError:
        raise DeviceCliError(f"{shown} is not a text file holding a provisioning URI") from None


def warn(message: str) -> None:
    print(f"securelink-device: warning: {message}", file=sys.stderr)


def _time(value: int | None) -> int:
    """`--at` (already milliseconds) or the wall clock, as integer unix milliseconds."""
    return now_ms() if value is None else value


# -- the state file ------------------------------------------------------------------------------------------
def read_state(path: Path | None, prov: Provisioning) -> device.DeviceState:
    """The state kept in `path` for this enrollment: a fresh one when there is no file, or for a new key_id."""
    if path is None:
        return device.state_for(prov, None)
    shown = safe_display(str(path), 200)
    try:
        found = keyfile.read_private(path, MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return device.state_for(prov, None)
    except keyfile.NotRegularFileError:
        raise DeviceCliError(f"--state: {shown} is not a regular file") from None
    except OSError as exc:
        raise DeviceCliError(f"--state: {shown} cannot be opened: {exc.strerror or exc}") from None
    if found.shared:
        warn(f"{shown} can be changed by others (mode {found.mode:04o}), who could undo its spent epochs; "
             f"fix: chmod 600 {shown}")  # fmt: skip
    try:
        if len(found.data) > MAX_STATE_BYTES:
            raise device.StateError("too large for a device state")
        state = device.state_from_json(found.data.decode("utf-8"))
        fresh = device.state_for(prov, state)
    except (device.StateError, UnicodeDecodeError) as exc:
        raise DeviceCliError(f"--state: {shown}: {exc}") from None
    if fresh is not state:
        warn(f"{shown} was kept for another key_id; starting afresh for this enrollment (a rotation)")
    return fresh


def write_state(path: Path | None, state: device.DeviceState) -> None:
    """Record `state` (mode 0600, replaced whole) before anything is printed: a key is never shown unrecorded."""
    if path is None:
        return
    data = (device.state_to_json(state) + "\n").encode("utf-8")

    def write(f: BinaryIO) -> None:
        f.write(data)

    try:
        keyfile.replace_private(path, write, prefix=".securelink-state-")
    except OSError as exc:
        raise DeviceCliError(f"--state: cannot write {safe_display(str(path), 200)}: {exc.strerror or exc}") from None


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
        k = device.inbound_key(prov, at)
    except SLK1Error as exc:
        raise DeviceCliError(f"--at: {exc}") from None
    print(json.dumps(_key_record(prov, k)) if args.json else _key_line(prov, k), flush=True)
    return k


def _present(args: argparse.Namespace, prov: Provisioning, at: int) -> int:
    """`key --state`: the next key of the burst, recorded before it is shown, or how long to wait (exit 1)."""
    path = Path(args.state)
    state = read_state(path, prov)
    try:
        k, after = device.present_inbound(prov, state, at)
    except SLK1Error as exc:
        raise DeviceCliError(f"--at: {exc}") from None
    except device.BurstUsedUp as wait:
        if args.json:
            record = {"device": prov.device_id, "key_id": prov.key_id, "direction": "inbound",
                      "format": prov.inbound_format, "key": None, "at_ms": at, "wait_ms": wait.wait_ms,
                      "seconds_to_wait": round(wait.wait_ms / 1000, 3), "burst_size": wait.burst_size,
                      "last_inbound_epoch": wait.last}  # fmt: skip
            print(json.dumps(record))
        else:
            print(f"no keyed call now: {wait}")
        return 1
    write_state(path, after)
    print(json.dumps(_key_record(prov, k)) if args.json else _key_line(prov, k), flush=True)
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    prov = read_provisioning(args.uri)
    if args.count is not None and args.count < 1:
        raise DeviceCliError("--count: must be at least 1")
    simulated = args.at is not None
    at = _time(args.at)
    if args.state is not None:
        if args.watch or args.count is not None:
            raise DeviceCliError("--state presents one key per run: it cannot be combined with --watch or --count")
        return _present(args, prov, at)
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
    prov = read_provisioning(args.uri)
    at = _time(args.at)
    path = None if args.state is None else Path(args.state)
    state = read_state(path, prov)
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
        write_state(path, device.accept(state, result))  # spent before the call is shown as genuine
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


def cmd_qr(args: argparse.Namespace) -> int:
    prov = read_provisioning(args.uri)
    qr = segno.make(prov.uri(), error="m", micro=False)
    if args.png is None:
        warn("this QR code holds the device secret: show it only to the device being enrolled, then clear the screen")
        qr.terminal(out=sys.stdout, compact=True)
        return 0
    path = Path(args.png)
    _write_private(path, lambda f: qr.save(f, kind="png", scale=8, border=4))
    print(f"wrote {safe_display(str(path), 200)} (mode 0600; it holds the device secret: delete it after enrolling)")
    return 0


def _write_private(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` readable by its owner only (`keyfile.replace_private`), with this tool's error messages."""
    try:
        keyfile.replace_private(path, write, prefix=".securelink-qr-")
    except keyfile.UnwritableDirectoryError as exc:
        shown = safe_display(str(path.parent), 200)
        raise DeviceCliError(f"--png: cannot write in {shown}: {exc.strerror}") from None
    except OSError as exc:
        raise DeviceCliError(f"--png: cannot write {safe_display(str(path), 200)}: {exc.strerror or exc}") from None


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
    src = "provisioning URI, a file holding it, or '-' for stdin (an argument lands in shell history)"
    at = "unix time in seconds, a fraction allowed, to compute at (default: now)"
    state = "the device's state file (0600): last inbound epoch presented, outbound high-water mark"

    k = sub.add_parser("key", help="the inbound key to present (device -> PBX) and which call of the burst it is")
    k.add_argument("uri", metavar="URI_OR_FILE", help=src)
    k.add_argument("--at", type=_unix_ms, metavar="UNIX_TIME", help=at)
    k.add_argument("--state", metavar="FILE", help=state + "; presents the next key and records it")
    k.add_argument("--json", action="store_true", help="one JSON object per key")
    k.add_argument("--watch", action="store_true", help="print the key again at every new window until Ctrl-C")
    k.add_argument("--count", type=int, metavar="N", help="watch, and stop after N keys")
    k.set_defaults(func=cmd_key)

    c = sub.add_parser("check", help="is NUMBER the PBX's outbound key (a genuine call from the PBX)?")
    c.add_argument("uri", metavar="URI_OR_FILE", help=src)
    c.add_argument("number", metavar="NUMBER", help="the caller number the phone received")
    c.add_argument("--at", type=_unix_ms, metavar="UNIX_TIME", help=at)
    c.add_argument("--state", metavar="FILE", help=state + "; records an accepted key")
    c.add_argument("--json", action="store_true", help="the result as one JSON object")
    c.set_defaults(func=cmd_check)

    q = sub.add_parser("qr", help="the provisioning URI as a QR code for the phone to scan (it holds the secret)")
    q.add_argument("uri", metavar="URI_OR_FILE", help=src)
    q.add_argument("--png", metavar="FILE", help="write a PNG (mode 0600) instead of printing to the terminal")
    q.set_defaults(func=cmd_qr)
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
