"""`securelink-device`: the device side on a terminal, to cross-check a phone implementation or enroll a phone.

    securelink-device key   URI_OR_FILE [--at UNIX_TIME] [--json] [--watch [--count N]]
    securelink-device check URI_OR_FILE NUMBER [--at UNIX_TIME] [--json]
    securelink-device qr    URI_OR_FILE [--png FILE]

URI_OR_FILE is the one-time provisioning URI printed by `securelink device add`, a file holding it, or `-` for stdin.
The URI carries the device secret: prefer a file (mode 0600) or stdin, since an argument lands in shell history.
Nothing here prints the secret, except inside the QR code of `qr`. Exit codes: 0 ok (`check`: genuine), 1 `check`:
not genuine, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NoReturn

import segno

from asterisk_securelink import keyfile
from asterisk_securelink.core.numbers import safe_display
from asterisk_securelink.core.provisioning import Provisioning, ProvisioningError
from asterisk_securelink.core.slk1 import SLK1Error
from asterisk_securelink.device import reference as device

MAX_URI_BYTES = 4096  # a provisioning URI is a few hundred bytes
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


def _time(value: float | None) -> float:
    if value is None:
        return time.time()
    if not math.isfinite(value):
        raise DeviceCliError("--at: must be a finite unix time")
    return value


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
    }


def _print_key(args: argparse.Namespace, prov: Provisioning, at: float) -> device.InboundKey:
    try:
        k = device.inbound_key(prov, at)
    except SLK1Error as exc:
        raise DeviceCliError(f"--at: {exc}") from None
    if args.json:
        print(json.dumps(_key_record(prov, k)), flush=True)
    else:
        print(f"{k.key}  epoch {k.epoch}, {k.seconds_left:.1f} s left", flush=True)
    return k


def cmd_key(args: argparse.Namespace) -> int:
    prov = read_provisioning(args.uri)
    if args.count is not None and args.count < 1:
        raise DeviceCliError("--count: must be at least 1")
    simulated = args.at is not None
    at = _time(args.at)
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
                at = k.valid_until
            else:
                time.sleep(max(0.0, k.valid_until - time.time()) + 0.01)
                at = time.time()
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    prov = read_provisioning(args.uri)
    at = _time(args.at)
    try:
        result = device.check(prov, args.number, at)
    except SLK1Error as exc:
        raise DeviceCliError(f"--at: {exc}") from None
    shown = safe_display(args.number)
    if result.status is device.CheckStatus.MALFORMED:
        raise DeviceCliError(f"NUMBER: {shown!r} is not a phone number (3..20 digits; '+', spaces, '-', '.' allowed)")
    if args.json:
        print(
            json.dumps(
                {
                    "device": prov.device_id,
                    "number": shown,
                    "status": result.status.value,
                    "genuine": result.genuine,
                    "window": result.window,
                    "epoch": result.epoch,
                    "accepted_epochs": sorted(device.outbound_epochs(prov, at)),
                }
            )
        )
    elif result.genuine:
        print(f"genuine: {shown} is the PBX's outbound key of the {result.window} window (epoch {result.epoch})")
    elif result.status is device.CheckStatus.ANONYMOUS:
        print("not genuine: the caller number is withheld or anonymous; the PBX's keyed calls always carry a key")
    else:
        epochs = ", ".join(str(e) for e in sorted(device.outbound_epochs(prov, at)))
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
def _finite_float(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a unix time: {safe_display(value)!r}") from None
    if not math.isfinite(f):
        raise argparse.ArgumentTypeError("must be a finite unix time")
    return f


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="securelink-device",
        description="Device side of SLK1: the keys an enrolled phone computes (reference and cross-check tool).",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    src = "provisioning URI, a file holding it, or '-' for stdin (an argument lands in shell history)"
    at = "unix time to compute at (default: now)"

    k = sub.add_parser("key", help="the current inbound key (device -> PBX) and the seconds left in its window")
    k.add_argument("uri", metavar="URI_OR_FILE", help=src)
    k.add_argument("--at", type=_finite_float, metavar="UNIX_TIME", help=at)
    k.add_argument("--json", action="store_true", help="one JSON object per key")
    k.add_argument("--watch", action="store_true", help="print the key again at every new window until Ctrl-C")
    k.add_argument("--count", type=int, metavar="N", help="watch, and stop after N keys")
    k.set_defaults(func=cmd_key)

    c = sub.add_parser("check", help="is NUMBER the PBX's outbound key (a genuine call from the PBX)?")
    c.add_argument("uri", metavar="URI_OR_FILE", help=src)
    c.add_argument("number", metavar="NUMBER", help="the caller number the phone received")
    c.add_argument("--at", type=_finite_float, metavar="UNIX_TIME", help=at)
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
