"""The `securelink` argument parser: every command, its options, and the handler it runs (`args.handler`)."""

from __future__ import annotations

import argparse
from typing import NoReturn, TypeAlias

from asterisk_securelink.cli import asterisk as asterisk_cmds
from asterisk_securelink.cli import audit, calls, devices, escrow, keys, routing, service, setup
from asterisk_securelink.core.slk1 import Direction, SLK1Error, seconds_to_ms

EXIT_USAGE = 2  # bad input, from argparse or from a command


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"securelink: error: {message} (see `{self.prog} --help`)\n")


_Commands: TypeAlias = "argparse._SubParsersAction[_Parser]"  # what add_subparsers() returns


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if not 1 <= n <= 10_000_000:
        raise argparse.ArgumentTypeError(f"must be 1..10000000, got {n}")
    return n


def _unix_ms(value: str) -> int:
    """`--at`: unix seconds, with a fraction if wanted ("1790000000.5"), as integer milliseconds (no float)."""
    try:
        t_ms = seconds_to_ms(value)
    except SLK1Error:
        raise argparse.ArgumentTypeError(f"expected unix seconds (e.g. 1790000000.5), got {value!r}") from None
    if not 0 <= t_ms < 2**40 * 1000:
        raise argparse.ArgumentTypeError(f"expected unix seconds between 0 and 2^40, got {value!r}")
    return t_ms


def build_parser() -> argparse.ArgumentParser:
    """The parser; `init` runs `setup.cmd_init` before any config exists, every other command sets `handler`."""
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p = _Parser(prog="securelink", description="Caller-ID anti-spoofing for Asterisk (SLK1 synchronized keys).")
    p.add_argument(
        "--config",
        help="config file (default: $SECURELINK_CONFIG, else ./securelink.toml, else /etc/securelink/securelink.toml)",
    )
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    init = sub.add_parser("init", parents=[common], help="create config skeleton, master key and database schema")
    init.add_argument(
        "--state-dir",
        help="where the database goes (default: /var/lib/securelink for a config under /etc/securelink, "
        "else next to the config)",
    )
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_cmd", required=True)
    up = db.add_parser("upgrade", parents=[common], help="migrate the database to the latest schema")
    up.set_defaults(handler=setup.cmd_db_upgrade)

    _add_device_commands(sub, common)
    _add_key_commands(sub, common)
    _add_escrow_commands(sub, common)

    run = sub.add_parser("run", help="run the Stasis app (connects to ARI and AMI; runs until stopped)")
    run.set_defaults(handler=service.cmd_run)
    agi = sub.add_parser("agi", help="run the FastAGI server for AGI(agi://HOST:4573/verify,ani|dnis)")
    agi.set_defaults(handler=service.cmd_agi)
    doctor = sub.add_parser("doctor", parents=[common], help="check the installation; each failure says how to fix it")
    doctor.set_defaults(handler=service.cmd_doctor)

    au = sub.add_parser("audit", help="audit events").add_subparsers(dest="audit_cmd", required=True)
    al = au.add_parser("list", parents=[common], help="list audit events, oldest first")
    al.add_argument("--since", help="ISO time or duration (15m, 2h, 7d)")
    al.add_argument("--action", help="only this action, e.g. verify, device.revoke")
    al.add_argument("--limit", type=_positive_int, default=1000)
    al.set_defaults(handler=audit.cmd_audit_list)
    asterisk_cmds.add_parser(sub)
    return p


_ACTIVATION = "enroll by a one-time activation code over the device API instead of a provisioning URI"
_SLK12 = (
    "issue an SLK1 1.2 URI (mode dtmf or intent, the access number) for a phone that speaks 1.2 (needs [calling] "
    "access_numbers); a 1.1 phone refuses it"
)


def _add_device_commands(sub: _Commands, common: _Parser) -> None:
    dev = sub.add_parser("device", help="enrolled devices").add_subparsers(dest="device_cmd", required=True)
    add = dev.add_parser("add", parents=[common], help="enroll a device; prints its one-time provisioning URI")
    add.add_argument("name")
    add.add_argument("--number", required=True, help="the device's mobile number (MSISDN)")
    add.add_argument("--desk-endpoint", help="the user's desk phone, e.g. PJSIP/1001")
    add.add_argument("--key-id-from-uid", metavar="UID", help="derive the key_id from the device uid")
    add.add_argument("--activation", action="store_true", help=_ACTIVATION)
    add.add_argument("--slk12", action="store_true", help=_SLK12)
    routing.add_arguments(add)
    add.set_defaults(handler=devices.cmd_device_add)
    put = dev.add_parser("set", parents=[common], help="change a device's routing, home, desk endpoint or number")
    put.add_argument("device", help="device id or key_id")
    routing.add_arguments(put)
    put.add_argument("--desk-endpoint", help="the user's desk phone, e.g. PJSIP/1001 ('' clears)")
    put.add_argument("--number", help="the device's mobile number (MSISDN)")
    put.set_defaults(handler=devices.cmd_device_set)
    dev.add_parser("list", parents=[common], help="list devices").set_defaults(handler=devices.cmd_device_list)
    for name, helptext, handler in (
        ("show", "show one device", devices.cmd_device_show),
        ("register", "mark a device registered (full ability)", devices.cmd_device_status),
        ("suspend", "suspend a device (its keys are refused)", devices.cmd_device_status),
        ("resume", "resume a suspended device", devices.cmd_device_status),
    ):
        one = dev.add_parser(name, parents=[common], help=helptext)
        one.add_argument("device", help="device id or key_id")
        one.set_defaults(handler=handler)
    rotate = dev.add_parser("rotate", parents=[common], help="give a device a new key_id; its old keys stop working")
    rotate.add_argument("device", nargs="?", help="device id or key_id")
    rotate.add_argument(
        "--all",
        action="store_true",
        help="every device that is not revoked, with the configured period and t0 (after changing either)",
    )
    rotate.add_argument("--activation", action="store_true", help=_ACTIVATION)
    rotate.add_argument("--slk12", action="store_true", help=_SLK12)
    rotate.set_defaults(handler=devices.cmd_device_rotate)
    revoke = dev.add_parser("revoke", parents=[common], help="revoke a device for good")
    revoke.add_argument("device", help="device id or key_id")
    revoke.add_argument("--reason", required=True)
    revoke.set_defaults(handler=devices.cmd_device_status)
    fork = dev.add_parser("fork", parents=[common], help="ring desk and mobile together for this device")
    fork.add_argument("device", help="device id or key_id")
    fork.add_argument("state", choices=["on", "off"])
    fork.set_defaults(handler=devices.cmd_device_fork)


def _add_key_commands(sub: _Commands, common: _Parser) -> None:
    key = sub.add_parser("key", help="keys (operator debug)").add_subparsers(dest="key_cmd", required=True)
    cur = key.add_parser("current", parents=[common], help="print a device's current key (audited)")
    cur.add_argument("device", help="device id or key_id")
    cur.add_argument("--direction", choices=[d.value for d in Direction], default="inbound")
    cur.add_argument("--at", type=_unix_ms, dest="at_ms", metavar="UNIX_SECONDS")
    cur.set_defaults(handler=keys.cmd_key_current)

    ver = sub.add_parser("verify", parents=[common], help="run the verifier on a number, as a call would")
    ver.add_argument("number")
    ver.add_argument("--direction", choices=[d.value for d in Direction], default="inbound")
    ver.add_argument("--mode", choices=["ani", "dnis"], default="ani")
    ver.add_argument("--caller", help="the caller number (DNIS mode: narrows collisions / two-factor)")
    ver.add_argument("--call-id", help="call id (the same call re-presented is not a replay)")
    ver.add_argument("--at", type=_unix_ms, dest="at_ms", metavar="UNIX_SECONDS")
    ver.set_defaults(handler=keys.cmd_verify)


def _add_escrow_commands(sub: _Commands, common: _Parser) -> None:
    esc = sub.add_parser("escrow", help="escrowed per-call keys").add_subparsers(dest="escrow_cmd", required=True)
    kg = esc.add_parser("keygen", parents=[common], help="write a new escrow key pair (private key 0600)")
    kg.add_argument("--private-key", required=True, metavar="FILE")
    kg.add_argument("--public-key", required=True, metavar="FILE")
    kg.set_defaults(handler=escrow.cmd_escrow_keygen)
    dec = esc.add_parser("decrypt", parents=[common], help="open the escrowed key(s) of a call (audited)")
    dec.add_argument("call_id", help="call id or key id")
    dec.add_argument("--private-key", required=True, metavar="FILE")
    dec.add_argument("--reason", required=True)
    dec.set_defaults(handler=escrow.cmd_escrow_decrypt)
    ls = esc.add_parser("list", parents=[common], help="escrowed keys and the escrow key version each needs")
    ls.set_defaults(handler=escrow.cmd_escrow_list)
    purge = esc.add_parser("purge", parents=[common], help="delete escrowed keys past escrow.retention_days")
    purge.set_defaults(handler=escrow.cmd_escrow_purge)

    records = sub.add_parser("calls", help="call records").add_subparsers(dest="calls_cmd", required=True)
    cl = records.add_parser("list", parents=[common], help="call records of both directions, oldest first")
    cl.add_argument("--device", help="only this device (id or key_id)")
    cl.add_argument("--since", help="ISO time or duration back from now (15m, -24h, 7d)")
    cl.add_argument("--direction", choices=[d.value for d in Direction], help="only inbound or only outbound calls")
    cl.add_argument("--csv", action="store_true", help="print CSV (a header, then one row per call)")
    cl.add_argument("--limit", type=_positive_int, default=1000, help="the newest N records (default 1000)")
    cl.set_defaults(handler=calls.cmd_calls_list)
