"""`[calling]`: how a phone on any network reaches the PBX (CALLING.md, "The access number", "DTMF", "Intent").

An access number is an ordinary DID routed into `[securelink-access]`; a call to it is admitted by a live intent
(before answer) or asked for its key by DTMF (after answer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from asterisk_securelink.core.compare import to_e164
from asterisk_securelink.core.fields import range_problems, setting


@dataclass(frozen=True)
class CallingConfig:
    NAME: ClassVar[str] = "calling"

    access_numbers: tuple[str, ...] = setting(
        (),
        "the access numbers (E.164, e.g. `["
        '"+12155550199"]`): DIDs routed into `[securelink-access]`, where a call is admitted by a live intent or '
        "asked for its key by DTMF. An intent names one of them, chosen at random. Empty: DTMF and intent are off",
    )
    dtmf_prompt: str = setting(
        "beep", "the sound played when an access call is answered (a digit stops it); an Asterisk sound name"
    )
    dtmf_setup_s: int = setting(
        20,
        "seconds a DTMF caller's phone may be behind the answer (call setup; 30 where users roam): the key is "
        "checked against the windows around the answer, and `doctor` requires look_behind >= "
        "ceil(dtmf_setup_s / period) ({range})",
        range=(0, 120),
        unit="seconds",
    )
    dtmf_key_alone: bool = setting(
        False,
        "admit a DTMF key from a withheld or anonymous caller number by the key alone (its own guess budget, source "
        "`dtmf`); off: such calls are rejected before answer",
    )
    max_dtmf_sessions: int = setting(
        20, "DTMF collections at once ({range}); past it a call is refused before answer (cause 34)", range=(1, 10_000)
    )
    intent: Literal["on", "off"] = setting("on", "`off` turns call setup over the device API (intent) off")
    intent_ttl: int = setting(
        30,
        "seconds an intent lives ({range}; a phone dials an intent only with at least 15 s of it left)",
        range=(20, 300),
        unit="seconds",
    )
    intent_quiet: int = setting(
        120,
        "seconds after a call from a registered number that matched no intent (noise) during which that device "
        "gets 409 `use_dtmf` for a new intent ({range})",
        range=(0, 3600),
        unit="seconds",
    )
    intent_attestation: Literal["", "A"] = setting(
        "",
        "`A`: admit by intent only a call Asterisk verified with STIR/SHAKEN attestation A (`STIR_SHAKEN(0,"
        "attestation)`); empty: off",
    )

    record_days: int = setting(
        90,
        'days a call record is kept ({range}; both directions, CALLING.md "Call records")',
        range=(1, 3650),
        unit="days",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.access_numbers)

    @property
    def intents_on(self) -> bool:
        return self.enabled and self.intent == "on"

    def look_behind_needed(self, period: int) -> int:
        """The look_behind DTMF needs: the key may be `dtmf_setup_s` older than the answer."""
        return math.ceil(self.dtmf_setup_s / period)

    def problems(self) -> list[str]:
        out = range_problems(self.NAME, self)
        for number in self.access_numbers:
            try:
                e164 = to_e164(number, None)
            except ValueError as exc:
                out.append(f"calling.access_numbers: {number!r}: {exc}")
                continue
            if e164 != number:
                out.append(f"calling.access_numbers: write {number!r} in E.164 form, {e164}")
        if len(set(self.access_numbers)) != len(self.access_numbers):
            out.append("calling.access_numbers: a number is listed twice")
        if not self.dtmf_prompt.replace("/", "").replace("-", "").replace("_", "").isalnum():
            out.append(f"calling.dtmf_prompt: an Asterisk sound name such as beep, got {self.dtmf_prompt!r}")
        return out
