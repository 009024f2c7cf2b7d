"""`[routing]`: where an admitted call goes, and the guard against toll fraud (CALLING.md, "Where an admitted call
goes"). The rules are pure (`core.tollguard`); this section holds their values and checks them at load."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from asterisk_securelink.core.callerid import check_context, parse_callerid
from asterisk_securelink.core.dialpatterns import PatternError, parse
from asterisk_securelink.core.fields import range_problems, setting
from asterisk_securelink.core.tollguard import DESTINATION, Home, parse_home

DENIED = ("_00XXXXX.", "_011XXXXX.", "_900XXXXX.", "_9011XXXXX.", "_000XXXXX.", "_0011XXXXX.")
EMERGENCY = ("112", "911", "999", "000", "110", "119")


@dataclass(frozen=True)
class RoutingConfig:
    NAME: ClassVar[str] = "routing"

    default_context: str = setting(
        "",
        "the dialplan context of admitted calls of a device that has none of its own (`device set --context`) and no "
        "desk endpoint with one; empty: such calls get verdict `no_route`",
        example="from-internal",
    )
    default_callerid: str = setting(
        "",
        'the caller ID (`"Name" <number>`) of such calls; empty: the desk endpoint\'s, else verdict `no_route`',
        example='"Mobile" <1000>',
    )
    home: str = setting(
        "disa",
        "where an admitted call without a destination goes: `disa` (dial tone inside the app, then the guard), "
        "`extension:<exten>` (e.g. voicemail, in the device's context) or `hangup`; per device `device set --home`",
    )
    allowed: tuple[str, ...] = setting(
        ("_XXXX",),
        "destinations an admitted call may dial (Asterisk patterns; the default: four-digit internal extensions)",
    )
    denied: tuple[str, ...] = setting(
        DENIED,
        "destinations refused even when `allowed` matches (Asterisk patterns; the default: international numbers, "
        "with or without an outside-line digit)",
        shown="international prefixes",
    )
    emergency: tuple[str, ...] = setting(
        EMERGENCY,
        "emergency numbers, refused alone or behind one `outside_line` digit whatever `allowed` says (the phone "
        "calls them itself, never with the desk's identity)",
        shown="112 911 999 000 110 119",
    )
    outside_line: tuple[str, ...] = setting(("9", "0"), "outside-line digits that may stand before a number")
    max_concurrent: int = setting(2, "call-through and callback calls of one device at once ({range})", range=(1, 100))
    max_per_day: int = setting(
        50, "call-through and callback calls of one device in a rolling 24 h ({range})", range=(1, 100_000)
    )
    max_call_seconds: int = setting(
        3600,
        "a call-through or callback call ends after this long (`TIMEOUT(absolute)`; {range})",
        range=(10, 86_400),
        unit="seconds",
    )

    @property
    def home_default(self) -> Home:
        return parse_home(self.home)

    def problems(self) -> list[str]:
        out = range_problems(self.NAME, self)
        if self.default_context:
            try:
                check_context(self.default_context)
            except ValueError as exc:
                out.append(f"routing.default_context: {exc}")
        if self.default_callerid:
            try:
                parse_callerid(self.default_callerid)
            except ValueError as exc:
                out.append(f"routing.default_callerid: {exc}")
        try:
            parse_home(self.home)
        except ValueError as exc:
            out.append(f"routing.home: {exc}")
        for name in ("allowed", "denied"):
            for pattern in getattr(self, name):
                try:
                    parse(pattern)
                except PatternError as exc:
                    out.append(f"routing.{name}: {exc}")
        for name in ("emergency", "outside_line"):
            for number in getattr(self, name):
                if not DESTINATION.fullmatch(number):
                    out.append(f"routing.{name}: {number!r} is not a number of digits")
        return out
