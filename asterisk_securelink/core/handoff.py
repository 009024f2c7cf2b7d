"""The verdict handed to the dialplan in one ARI request (issue 24): the extension of a `continue` into
`[securelink-verdict]`, which sets the public variables itself (dialplan/securelink.conf). Pure.

A hand-off is twelve fields joined by `~` (never in any field: each is checked or percent-encoded here):

| # | field | example | dialplan variable |
|---|---|---|---|
| 1 | kind: `a` admitted, `r` refused, `c` continue unverified, `u` unregistered | `a` | |
| 2 | verdict | `admitted` | SECURELINK_RESULT |
| 3 | device id, or empty | `12` | SECURELINK_DEVICE |
| 4 | mode / method | `ani` | SECURELINK_MODE (and SECURELINK_METHOD when admitted) |
| 5 | destination digits, or empty | `2001` | SECURELINK_DESTINATION |
| 6 | home extension, or empty | `answer` | SECURELINK_HOME |
| 7 | call time limit, seconds | `3600` | TIMEOUT(absolute) |
| 8 | the device's context | `from-desk` | SECURELINK_CONTEXT |
| 9 | its caller ID, percent-encoded (URIDECODE) | `%22Alice%22%20%3C1001%3E` | SECURELINK_CALLERID |
| 10 | per-call key id, or empty | `7` | SECURELINK_CALL_KEY_ID |
| 11 | the context to go on in, or empty for the shipped one | `my-admitted` | |
| 12 | flags: `e` the dialplan emits `SecureLinkVerdict`, `h` it reports the end (`SecureLinkCallEnd`) | `eh` | |

Asterisk keeps at most 79 characters of an extension (AST_MAX_EXTENSION); a longer hand-off goes in the channel
variable SECURELINK_HANDOFF instead, with the extension `v` (one more request).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from asterisk_securelink.dialplan import (
    CALL_KEY_VAR,
    CALLERID_VAR,
    CDR_DEVICE,
    CDR_METHOD,
    CONTEXT_VAR,
    DESTINATION_VAR,
    DEVICE_VAR,
    HOME_VAR,
    METHOD_VAR,
    MODE_VAR,
    RESULT_VAR,
    TIMEOUT_VAR,
)

SEP: Final = "~"
MAX_EXTENSION: Final = 79  # Asterisk truncates a longer extension silently
IN_VARIABLE: Final = "v"  # the extension that says "the hand-off is in SECURELINK_HANDOFF"
KINDS: Final = frozenset("acru")
_PLAIN: Final = re.compile(r"[A-Za-z0-9_.+*#-]*")  # what may go in a field as it is
DIALLED: Final = re.compile(r"[+0-9*#]{1,79}")  # the number a verdict goes on with (SECURELINK_EXTEN): nothing else
_UNRESERVED: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


@dataclass(frozen=True)
class Handoff:
    kind: str
    verdict: str
    device: int | None = None
    mode: str = ""
    destination: str = ""
    home: str = ""
    timeout: int | None = None
    context: str = ""
    callerid: str = ""
    call_key_id: str = ""
    next_context: str = ""
    emit_verdict: bool = False
    report_end: bool = False

    def encode(self) -> str:
        """The twelve fields; ValueError when a field holds what the dialplan could misread."""
        if self.kind not in KINDS:
            raise ValueError(f"hand-off kind {self.kind!r}")
        plain = [self.verdict, self.mode, self.destination, self.home, self.context, self.call_key_id,
                 self.next_context]  # fmt: skip
        for value in plain:
            if not _PLAIN.fullmatch(value):
                raise ValueError(f"hand-off field {value[:40]!r}: only A-Z a-z 0-9 _ . + * # -")
        flags = ("e" if self.emit_verdict else "") + ("h" if self.report_end else "")
        return SEP.join([
            self.kind, self.verdict, "" if self.device is None else str(int(self.device)), self.mode,
            self.destination, self.home, "" if self.timeout is None else str(int(self.timeout)), self.context,
            percent_encode(self.callerid), self.call_key_id, self.next_context, flags,
        ])  # fmt: skip

    def variables(self) -> dict[str, str]:
        """What `[securelink-verdict]` sets from this hand-off: the dialplan contract's variables (FastAGI sets the
        same ones itself, `calling.contract.agi_variables`)."""
        out = {
            RESULT_VAR: self.verdict,
            DEVICE_VAR: "" if self.device is None else str(self.device),
            MODE_VAR: self.mode,
        }
        if self.kind == "a":
            out |= {
                METHOD_VAR: self.mode, DESTINATION_VAR: self.destination, CONTEXT_VAR: self.context,
                CALLERID_VAR: self.callerid, HOME_VAR: self.home,
                TIMEOUT_VAR: "" if self.timeout is None else str(self.timeout), CALL_KEY_VAR: self.call_key_id,
                CDR_DEVICE: out[DEVICE_VAR], CDR_METHOD: self.mode,
            }  # fmt: skip
        return out


def percent_encode(text: str) -> str:
    """Every byte but ASCII letters and digits as %XX (what Asterisk's URIDECODE reverses)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


def percent_decode(text: str) -> str:
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%":
            out.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            out.extend(text[i].encode())
            i += 1
    return out.decode()


def decode(payload: str) -> Handoff:
    """The inverse of `Handoff.encode` (what the dialplan reads; for tests and tools)."""
    f = payload.split(SEP)
    if len(f) != 12 or f[0] not in KINDS:
        raise ValueError("not a hand-off")
    return Handoff(
        f[0], f[1], int(f[2]) if f[2] else None, f[3], f[4], f[5], int(f[6]) if f[6] else None, f[7],
        percent_decode(f[8]), f[9], f[10], "e" in f[11], "h" in f[11],
    )  # fmt: skip


def check_dialled(exten: str | None) -> str:
    """The dialled number the dialplan goes on with after the verdict (`Goto(...,${SECURELINK_EXTEN},1)`): digits,
    `+ * #` only; ValueError otherwise. The entry patterns (`_[+0-9*#].`) let anything follow the first character, and
    a `(` or `,` there would choose the priority, or `:` the context, of that Goto."""
    if exten is None or not DIALLED.fullmatch(exten):
        raise ValueError("the dialled number is not digits, + * #: not handed on")
    return exten


def fits(payload: str) -> bool:
    """True when `payload` can be the extension of the `continue` itself."""
    return len(payload) <= MAX_EXTENSION
