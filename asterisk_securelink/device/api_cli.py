"""`securelink-device enroll|status|fork|claim`: the phone's side of the device API on a terminal.

    securelink-device enroll URI|CODE [--server URL] [--ca FILE] [--state FILE] [--json]
    securelink-device status          [--state FILE] [--ca FILE] [--json]
    securelink-device fork on|off     [--state FILE] [--ca FILE] [--json]
    securelink-device claim NUMBER    [--state FILE] [--ca FILE] [--json] [--idempotency-key KEY]

`enroll` redeems a one-time activation code (from a `securelink://enroll?server=...&code=...` URI, or a code with
`--server`) and writes the state file (mode 0600; default `~/.config/securelink-device/state.json`) with the secret,
every provisioning parameter of the answer, the server, the CA file and the platform's clock offset (from
`server_time_ms`); the other commands read it. `status` refreshes the status, fork toggle, parameters and clock
offset; a revoked device's secret is deleted from the file. `claim` prints the per-call key of this device's live
call that presented NUMBER (`--json`: `call_id`, `call_key_id`, `call_key`).

A 401 is not retried: one clock check (the answer's `Date` against the time the request was signed by) says whether
to correct the clock or to ask for a new activation code. 403 `rotated` (the key_id was retired by a rotation) says
to ask for a new activation code; the state file is kept as it is.

Exit codes: 0 ok, 1 the API refused (its reason on stderr), 2 bad input, 3 no usable answer (unreachable, TLS, a
server error).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from asterisk_securelink.core.ascii import ascii_lower
from asterisk_securelink.core.numbers import safe_display
from asterisk_securelink.core.provisioning import params_document
from asterisk_securelink.device import enrollment as files
from asterisk_securelink.device.api_client import (
    Credentials,
    DeviceApiClient,
    DeviceApiError,
    DeviceRevoked,
    DeviceStatus,
    Enrolled,
    RateLimited,
    Refused,
    check_server,
)
from asterisk_securelink.device.cli_io import (
    DeviceCliError,
    check_writable,
    load_enrolled,
    load_file,
    read_source,
    save_file,
    shown_path,
    state_path,
    uri_in,
    warn,
)
from asterisk_securelink.device.enrollment import DeviceFile, Enrollment
from asterisk_securelink.deviceapi import codes
from asterisk_securelink.errors import ProtocolError

T = TypeVar("T")
REFUSED = 1
UNANSWERED = 3


class ApiCommandError(ProtocolError):
    """The API refused or did not answer: one line on stderr, exit 1 or 3."""

    def __init__(self, message: str, exit_code: int, *, revoked: bool = False, code: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.revoked = revoked  # 403 revoked: the caller deletes the secret
        self.code = code  # the spec's error code (empty: none, or no answer)


def _run(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(_awaited(call))
    except Refused as exc:  # 401: not retried, its message says whether the clock is the cause (one check)
        hint = ""
        if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
            hint = f" (retry after {exc.retry_after_s} s)"
        raise ApiCommandError(f"refused: {exc}{hint}", REFUSED, revoked=isinstance(exc, DeviceRevoked),
                              code=exc.code) from None  # fmt: skip
    except DeviceApiError as exc:
        raise ApiCommandError(str(exc), UNANSWERED) from None


async def _awaited(call: Callable[[], Awaitable[T]]) -> T:
    return await call()


def _ca(option: str | None, stored: str | None = None) -> Path | None:
    """`--ca` (made absolute, it is stored), else the CA stored with the enrollment."""
    chosen = option if option is not None else stored
    if chosen is None:
        return None
    path = Path(chosen).absolute()
    if not path.is_file():
        raise DeviceCliError(f"--ca: {shown_path(path)} is not a file (a PEM CA certificate)")
    return path


def _client(enrollment: Enrollment, ca_option: str | None) -> DeviceApiClient:
    prov = enrollment.provisioning
    ca = _ca(ca_option, enrollment.ca_file)
    credentials = Credentials(prov.key_id, prov.secret)
    return DeviceApiClient(enrollment.server, credentials, ca_file=ca, offset_ms=enrollment.clock_offset_ms)


def _offset_text(ms: int) -> str:
    ahead = "ahead of" if ms > 0 else "behind" if ms < 0 else "equal to"
    return f"{ms / 1000:+.3f} s (the platform's clock is {ahead} this device's)"


# -- enroll ----------------------------------------------------------------------------------------------------
def _code_and_server(source: str, server_option: str | None) -> tuple[str, str]:
    """(normalized code, server URL) from an enrollment URI (argument, file or stdin) or a code and `--server`."""
    try:
        code = codes.normalize_code(source)
        from_uri = None
    except codes.CodeError:
        if source != "-" and not ascii_lower(source).startswith(f"{codes.SCHEME}:") and not Path(source).exists():
            raise DeviceCliError("URI|CODE: not an activation code (16 characters A-Z and 2-7, dashes and "
                                 "spaces ignored), a securelink://enroll URI, a file or '-'") from None  # fmt: skip
        text, where = read_source(source, argument_warning=None)  # the code is spent right away
        text = uri_in(text, ("enrollment_uri",))
        try:
            if ascii_lower(text).startswith(f"{codes.SCHEME}:"):
                from_uri, code = codes.parse_enrollment_uri(text)
            else:
                from_uri, code = None, codes.normalize_code(text)
        except codes.CodeError as exc:
            raise DeviceCliError(f"{where}: {exc}") from None
    try:
        server = check_server(server_option) if server_option is not None else None
        uri_server = check_server(from_uri) if from_uri is not None else None
    except ValueError as exc:
        raise DeviceCliError(f"--server: {exc}") from None
    if server is not None and uri_server is not None and server != uri_server:
        raise DeviceCliError("--server differs from the server of the enrollment URI; leave one out")
    chosen = server or uri_server
    if chosen is None:
        raise DeviceCliError("an activation code needs --server URL (or give the securelink://enroll URI)")
    return code, chosen


def cmd_enroll(args: argparse.Namespace) -> int:
    code, server = _code_and_server(args.source, args.server)
    path = state_path(args.state)
    ca = _ca(args.ca)
    previous = load_file(path)  # a bad state file is an error before the code is spent, never overwritten
    check_writable(path)
    client = DeviceApiClient(server, ca_file=ca)

    async def enroll() -> tuple[Enrolled, DeviceStatus | None]:
        async with client:
            enrolled = await client.enroll(code)
            try:  # the status and fork toggle, and a first signed request: best effort
                return enrolled, await client.device()
            except DeviceApiError as exc:
                warn(f"enrolled, but the first status request failed: {exc}")
                return enrolled, None

    enrolled, status = _run(enroll)
    prov = enrolled.provisioning
    enrollment = Enrollment(server, prov, enrolled.server_time_ms, enrolled.offset_ms, ca_file=str(ca) if ca else None)
    file = files.enrolled(previous, enrollment)
    if status is not None:
        file, _ = files.with_status(file, status=status.status, fork=status.fork, params=status.params,
                                    server_time_ms=status.server_time_ms, clock_offset_ms=status.offset_ms)  # fmt: skip
    save_file(path, file, make_parent=args.state is None)
    old = previous.enrollment if previous is not None else None
    if old is not None and old.provisioning.key_id != prov.key_id:
        warn(f"replaced the enrollment of key_id {old.provisioning.key_id} in {shown_path(path)}")
    _print_status(args, file, path, "enrolled")
    return 0


# -- status, fork, claim -----------------------------------------------------------------------------------------
def _print_status(args: argparse.Namespace, file: DeviceFile, path: Path, what: str,
                  changed: list[str] | None = None) -> None:  # fmt: skip
    e = file.enrollment
    assert e is not None
    prov = e.provisioning
    if args.json:
        doc: dict[str, Any] = {"key_id": prov.key_id, "server": e.server, "status": e.status, "fork": e.fork,
                               **params_document(prov), "server_time_ms": e.server_time_ms,
                               "clock_offset_ms": e.clock_offset_ms, "state": str(path)}  # fmt: skip
        if changed is not None:
            doc["changed"] = changed
        print(json.dumps(doc))
        return
    fork = "unknown" if e.fork is None else "on" if e.fork else "off"
    print(f"{what}: key_id {prov.key_id} at {e.server}: {e.status or 'status unknown'}, fork {fork}")
    print(f"clock offset {_offset_text(e.clock_offset_ms)}")
    if changed:
        print(f"the platform changed: {', '.join(changed)}")
    print(f"state: {shown_path(path)} (mode 0600, holds the device secret)")


def _revoked(path: Path, file: DeviceFile) -> None:
    save_file(path, files.forget(file))
    warn(f"the device is revoked: its secret was deleted from {shown_path(path)}")


def ask(
    args: argparse.Namespace, request: Callable[[DeviceApiClient], Awaitable[T]]
) -> tuple[Path, DeviceFile, Enrollment, T]:
    """Ask the platform with the enrolled state's credentials (`--state`, `--ca`): the state file's path, its
    content, its enrollment and the answer. A device the platform calls revoked deletes its secret, then the error
    is raised."""
    path = state_path(args.state)
    file, enrollment = load_enrolled(path)
    client = _client(enrollment, args.ca)

    async def call() -> T:
        async with client:
            return await request(client)

    try:
        return path, file, enrollment, _run(call)
    except ApiCommandError as exc:
        if exc.revoked:
            _revoked(path, file)
        raise


def cmd_status(args: argparse.Namespace) -> int:
    path, file, enrollment, s = ask(args, DeviceApiClient.device)
    if s.key_id != enrollment.provisioning.key_id:
        raise ApiCommandError("the platform answered for another key_id", UNANSWERED)
    try:
        file, changed = files.with_status(file, status=s.status, fork=s.fork, params=s.params,
                                          server_time_ms=s.server_time_ms, clock_offset_ms=s.offset_ms)  # fmt: skip
    except ValueError as exc:
        raise ApiCommandError(f"the platform's parameters are not usable: {exc}", UNANSWERED) from None
    save_file(path, file)
    _print_status(args, file, path, "status", changed)
    if s.status == "revoked":
        _revoked(path, file)
    return 0


def cmd_fork(args: argparse.Namespace) -> int:
    path, file, enrollment, enabled = ask(args, lambda client: client.set_fork(args.state_word == "on"))
    save_file(path, files.with_fork(file, enabled))
    if args.json:
        print(json.dumps({"key_id": enrollment.provisioning.key_id, "fork": enabled}))
    else:
        print(f"fork {'on: a call to the desk also rings this phone' if enabled else 'off: the desk rings alone'}")
    return 0


def cmd_claim(args: argparse.Namespace) -> int:
    *_, voucher = ask(args, lambda client: client.claim(args.number, args.idempotency_key))
    if args.json:
        print(json.dumps({"call_id": voucher.call_id, "call_key_id": voucher.call_key_id,
                          "call_key": voucher.call_key_b64}))  # fmt: skip
    else:
        print(f"released: the key of call {voucher.call_id} ({safe_display(args.number)})")
        print(f"call_key_id {voucher.call_key_id}")
        print(f"call_key {voucher.call_key_b64}")
    return 0


# -- argument parsing ----------------------------------------------------------------------------------------
def add_commands(sub: Any) -> None:
    """Add enroll, status, fork and claim to the `securelink-device` subparsers."""
    state = "the enrolled device's state file (0600; default ~/.config/securelink-device/state.json)"
    ca = "a PEM CA certificate that verifies the server (a self-signed test server); default: the system's CAs"

    e = sub.add_parser("enroll", help="redeem a one-time activation code and keep the enrollment in the state file")
    e.add_argument("source", metavar="URI|CODE",
                   help="securelink://enroll URI, activation code (XXXX-XXXX-XXXX-XXXX), a file or '-'")  # fmt: skip
    e.add_argument("--server", metavar="URL", help="the device API, https://host[:port] (with a bare code)")
    e.add_argument("--ca", metavar="FILE", help=ca + " (kept for the other commands)")
    e.add_argument("--state", metavar="FILE", help=state)
    e.add_argument("--json", action="store_true", help="the enrollment as one JSON object (never the secret)")
    e.set_defaults(func=api_errors(cmd_enroll))

    s = sub.add_parser("status", help="the device's status, fork toggle, parameters and the platform's clock")
    f = sub.add_parser("fork", help="turn desk + mobile ringing on or off (the user's own toggle)")
    f.add_argument("state_word", metavar="on|off", choices=("on", "off"))
    c = sub.add_parser("claim", help="the per-call key of this device's live call that presented NUMBER")
    c.add_argument("number", metavar="NUMBER", help="the caller number shown (or the key this phone called with)")
    c.add_argument("--idempotency-key", metavar="KEY", help="resend an earlier claim (default: a fresh key)")
    for parser, func in ((s, cmd_status), (f, cmd_fork), (c, cmd_claim)):
        parser.add_argument("--state", metavar="FILE", help=state)
        parser.add_argument("--ca", metavar="FILE", help=ca + " (default: the one given to enroll)")
        parser.add_argument("--json", action="store_true", help="the answer as one JSON object")
        parser.set_defaults(func=api_errors(func))


def api_errors(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ApiCommandError as exc:
            print(f"securelink-device: {exc}", file=sys.stderr)
            return exc.exit_code

    return run
