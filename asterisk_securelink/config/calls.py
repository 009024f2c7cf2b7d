"""The sections of a call's handling: `[keys]` (SLK1), `[inbound]`, `[lockout]`, `[outbound]`.

Each is a frozen dataclass whose fields carry their default, help and range (`core.fields.setting`), and whose
`problems()` checks the section itself, next to its fields (`section.key: ...` lines; the first one stops the load).
The config skeleton and the README's table are generated from these fields (`config.reference`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from asterisk_securelink.core.callerid import check_context
from asterisk_securelink.core.compare import COUNTRY_CODES, check_trunk_prefixes, to_e164
from asterisk_securelink.core.fields import range_problems, setting
from asterisk_securelink.core.formats import FormatError, NumberFormat
from asterisk_securelink.core.slk1 import MAX_PERIOD, MIN_PERIOD

MAX_DIAL_PREFIX_DIGITS = 8
MAX_IN_FLIGHT = 10_000


@dataclass(frozen=True)
class KeysConfig:
    NAME: ClassVar[str] = "keys"

    master_key_file: str = setting(
        "master.key",
        "base64 of 32 random bytes, mode 0600, owned by the service user",
        note="base64 of 32 random bytes, mode 0600; created by `securelink init`",
        skeleton=True,
    )
    period: int = setting(
        30,
        "key refresh period, {range} s",
        note="key refresh period, {range} s",
        range=(MIN_PERIOD, MAX_PERIOD),
        unit="seconds",
        skeleton=True,
    )
    t0: int = setting(
        0,
        "epoch origin (unix seconds); a `t0` in the future is refused at start. `period` and `t0` are fixed for the "
        "life of a device's keys: after changing either, `run`/`agi` refuse to start while devices exist until "
        "`securelink device rotate --all` (every device then needs its new provisioning URI); `doctor` checks it too",
        range=(0, None),
    )
    look_behind: int = setting(
        1, "previous windows accepted ({range})", note="previous windows accepted", range=(0, 5), skeleton=True
    )
    look_ahead: int = setting(  # SLK1 1.1: a device may place a second keyed call within one period
        1,
        "next windows accepted ({range}): lets a phone place a second keyed call within one period (SLK1 1.1 burst: "
        "it presents the next key), and tolerates a phone clock ahead. Costs log2(3/2) = 0.58 bits of key strength "
        "against `0` (W = look_behind + look_ahead + 1 live windows); `0` is SLK1 1.0's one keyed call per period",
        note="next windows accepted: a redial within one period (burst), clock skew",
        range=(0, 2),
        skeleton=True,
    )
    inbound_format: str = setting(
        "XXXXXXXXXX",
        "number format of device->PBX keys: `X`=0-9, `N`=2-9, `Z`=1-9, literal digits, leading `+`; below 10^6 keys "
        "refused, below 10^8 warned",
        note="device -> PBX key format (X=0-9, N=2-9, Z=1-9, digits, leading +)",
        skeleton=True,
    )
    outbound_format: str = setting(
        "XXXXXXXXXX",
        "number format of PBX->device caller IDs (e.g. `+1NXXNXXXXXX` so carriers pass it)",
        note="PBX -> device caller-ID format",
        skeleton=True,
    )
    trunk_prefixes: tuple[str, ...] = setting(  # digits a carrier may put in front of a number (SLK1.md, comparing)
        (),
        'digit strings a carrier may put in front of a number, e.g. `["0", "00", "011", "1"]`; environment: a comma '
        "list (`SECURELINK_KEYS_TRUNK_PREFIXES=0,011`). A key is compared on its format's significant part (the "
        "digits from the first placeholder on), and what the carrier put before them must be one of these followed "
        "by (part of) the format's literal prefix, so `+12677638475` is admitted as `2677638475`, `12677638475`, "
        "`0112677638475` (with `011`) or `(267) 763-8475`. Also used for registered numbers (two-factor) and given to "
        "phones (`trunk`) for the platform's outbound keys",
        note='digits your carrier may put in front of numbers, e.g. ["0", "00", "011"]',
        skeleton=True,
    )
    default_country_code: str = setting(
        "",
        "E.164 country code without `+` (e.g. `1`, `44`): `device add --number` then takes national numbers, "
        "without or with one national trunk prefix (`0`; `1` where the code is 1): `555 010 0001` and "
        "`1 555 010 0001` become `+15550100001`, with 44 `020 7946 0000` becomes `+442079460000`; unset, numbers must "
        "be given in international form (`+1 555 010 0001`). Registered numbers are stored in E.164 (`+` and 8-15 "
        "digits)",
        note='e.g. "1" or "44": lets `device add --number` take national numbers',
        skeleton=True,
    )

    def problems(self) -> list[str]:
        """The bounds, the number formats and the number-form settings of SLK1 1.1 (trunk prefixes, country code)."""
        out = range_problems(self.NAME, self)
        for name in ("inbound_format", "outbound_format"):
            try:
                NumberFormat(getattr(self, name))
            except FormatError as exc:
                out.append(f"keys.{name}: {exc}")
        try:
            check_trunk_prefixes(self.trunk_prefixes)
        except ValueError as exc:
            out.append(f'keys.trunk_prefixes: {exc} (e.g. ["0", "00", "011"])')
        if self.default_country_code and self.default_country_code not in COUNTRY_CODES:
            out.append(
                "keys.default_country_code: must be an E.164 country code without '+' (e.g. 1, 44, 49), "
                f"got {self.default_country_code!r}"
            )
        return out


@dataclass(frozen=True)
class InboundConfig:
    NAME: ClassVar[str] = "inbound"

    mode: Literal["ani", "dnis", "either"] = setting(
        "ani",
        "default mode when the dialplan does not name one: `ani`, `dnis`, `either`",
        note="ani | dnis | either",
        skeleton=True,
    )
    admitted_context: str = setting(
        "securelink-admitted", "where admitted calls continue (same extension)", skeleton=True
    )
    registration_context: str = setting(
        "securelink-register", "where verified calls of unregistered devices continue", skeleton=True
    )
    on_failure: Literal["reject", "continue"] = setting(
        "reject",
        "`reject` (hang up, SIP 403) or `continue` (back to the dialplan with the verdict set)",
        note="reject | continue (continue with SECURELINK_RESULT set)",
        skeleton=True,
    )
    anonymous: Literal["reject", "continue"] = setting(
        "reject",
        "withheld caller ID: `reject` or `continue` unverified",
        note="reject | continue (unverified)",
        skeleton=True,
    )
    require_registered_number: bool = setting(
        False,
        "two-factor (DNIS): only the device registered with the caller's number may match (compared in any carrier "
        "form: `+15550002222` registered matches `5550002222`, `15550002222`, `+1 555 000 2222`, and behind a trunk "
        "prefix). `securelink init` writes `true`: key alone is opt-in (docs/security.md)",
        note="two-factor: the caller's registered number picks the device (DNIS)",
        skeleton=True,
        init=True,  # docs/security.md, "H2": key alone is opt-in for a new installation
    )
    dial_prefix: str = setting(  # DNIS: an access prefix the phone dials before the key's significant part
        "",
        "DNIS: an access prefix the phone dials before the key's significant part (your dialplan strips it before "
        "`Stasis`); given to phones provisioned in `dnis` mode as `dial` (an `ani` phone gets none). With "
        "`inbound.mode = either`, setting it provisions phones in `dnis` mode, else `ani`",
    )
    max_in_flight: int = setting(
        16,
        "admissions being decided at once ({range}). A call that arrives past it is not queued: its verdict is "
        "`error` (reason `overload`, audited, counted in `securelink_overload_total`) and it is hung up at once "
        "instead of queueing behind the others (a carrier can route it elsewhere); never admitted unverified "
        '(docs/benchmarks.md, "Admission throughput and overload")',
        note="admissions decided at once; more calls are turned away (overload)",
        range=(1, MAX_IN_FLIGHT),
        skeleton=True,
    )
    overload_hangup: Literal["congestion", "rejected"] = setting(
        "congestion",
        "how an overload refusal hangs up: `congestion` (SIP 503: the carrier may try another route) or `rejected` "
        "(SIP 403)",
        note="congestion (SIP 503) | rejected (SIP 403)",
        skeleton=True,
    )

    def problems(self) -> list[str]:
        out = range_problems(self.NAME, self)
        prefix = self.dial_prefix
        if prefix and not (len(prefix) <= MAX_DIAL_PREFIX_DIGITS and prefix.isascii() and prefix.isdigit()):
            out.append(f"inbound.dial_prefix: must be 1..{MAX_DIAL_PREFIX_DIGITS} digits or empty, got {prefix!r}")
        for name in ("admitted_context", "registration_context"):  # both travel in the verdict's hand-off
            try:
                check_context(getattr(self, name))
            except ValueError as exc:
                out.append(f"inbound.{name}: {exc}")
        return out


@dataclass(frozen=True)
class LockoutConfig:
    """docs/decisions.md, "A guess budget per source, an allowance per registered number" (`core.lockout`)."""

    NAME: ClassVar[str] = "lockout"

    enabled: bool = setting(
        True,
        'limit guessing (docs/decisions.md, "A guess budget per source, an allowance per registered number"); the '
        "state is in the database, shared by every node. Only a number that could be a key counts: anonymous, "
        "malformed and wrong-length numbers, and two-factor calls from numbers no device is registered with, cost "
        "nothing",
    )
    max_guess_probability: float = setting(
        1e-6,
        "key alone (ANI, DNIS without two-factor): the chance, per source (trunk) and 24 hours, that guesses admit "
        "anyone. A source may fail floor(P·S / (W·D)) guesses in any 24 hours (S keys in the format, W = look_behind "
        "+ look_ahead + 1, D devices: 33 for 100 devices with 10 digits, 0 from 3,334 devices; `securelink doctor` "
        "prints it); over it, key-alone calls from that source are `locked_out` while two-factor calls are still "
        "verified. Two-factor: each registered number may fail floor(P·S / W) guesses in any 24 hours (3,333 with 10 "
        "digits), then its calls are `locked_out`",
        note="chance per 24 h that one trunk's (or one registered number's) guesses admit anyone",
        skeleton=True,
    )
    max_total_guess_probability: float = setting(
        1e-5,
        "key alone, a backstop: the chance per 24 hours that the guesses of every source together admit anyone. All "
        "sources together may fail floor(P·S / (W·D)) key-alone guesses in any 24 hours (333 for 100 devices with "
        "10 digits); over it, every key-alone call is `locked_out` while two-factor calls are still verified. Never "
        "below `max_guess_probability` (the larger of the two applies)",
        note="key alone: chance per 24 h that all sources' guesses admit anyone",
        skeleton=True,
    )

    def problems(self) -> list[str]:
        out: list[str] = []
        if not 0 < self.max_guess_probability <= 1:
            out.append(
                f"lockout.max_guess_probability: must be > 0 and <= 1 (e.g. 1e-6), got {self.max_guess_probability}"
            )
        out += range_problems(self.NAME, self)
        if not 0 < self.max_total_guess_probability <= 1:
            out.append(
                "lockout.max_total_guess_probability: must be > 0 and <= 1 (e.g. 1e-5), got "
                f"{self.max_total_guess_probability}"
            )
        return out


@dataclass(frozen=True)
class OutboundConfig:
    NAME: ClassVar[str] = "outbound"

    endpoint: str = setting("PJSIP/{number}@carrier", "how mobile legs are dialed")
    ring_timeout: int = setting(30, "seconds ({range})", range=(5, 300), unit="seconds")
    present: Literal["key", "number"] = setting(
        "key",
        "the mobile leg's caller ID: `key` (a fresh SLK1 outbound key, which the phone checks itself) or `number`: "
        "`outbound.present_number`, the enterprise's own number, which carriers can attest (STIR/SHAKEN) where a "
        "random key cannot be; the phone then tells the genuine PBX from a spoofer by claiming the call's voucher "
        "with the number it sees (`POST /v1/calls/claim`: 200 = this PBX is calling this device from that number "
        "now, 404 = it is not). Needs the device API",
    )
    present_number: str = setting("", "`number` mode: the number presented, in E.164 (`+12155550100`)")

    def problems(self) -> list[str]:
        """Number mode presents an E.164 number the phone can claim with (SLK1 1.1 compares it like a registered
        number)."""
        out: list[str] = []
        if "{number}" not in self.endpoint:
            out.append("outbound.endpoint: must contain {number}, e.g. PJSIP/{number}@carrier")
        out += range_problems(self.NAME, self)
        if self.present == "number":
            try:
                number = to_e164(self.present_number, None)
            except ValueError as exc:
                out.append(f"outbound.present_number: {exc} (outbound.present = number needs it)")
            else:
                if number != self.present_number.strip():
                    out.append(f"outbound.present_number: write it in E.164 form, {number}")
        return out
