"""The digits of one DTMF call (CALLING.md, "DTMF"): a pure state machine, no I/O and no clock.

The Stasis handler answers the call, plays the prompt and feeds every `ChannelDtmfReceived` digit to `digit()` with
the time it read from its own monotonic clock; it arms one timer for `deadline_ms()` and calls `expire()` when it
fires. Each call returns the steps to act on: `KeyReady` (the key field ended: verify and spend the key now) and
then exactly one `Finished` (the destination, or why there is none). Keeping the rules here, away from ARI and
timers, lets every edge be tested exactly, to the millisecond.

The rules, all counted from answer (`Timing`):
* The first digit must come before `first_digit_ms` (10 s; a `,,` pause before the key in an app's dial string fits
  in it), each later one within `inter_digit_ms` (4 s) of the one before, and all before `total_ms` (30 s). A
  deadline is the first instant that is too late: a digit at exactly the deadline is not taken.
* The key field ends at its K-th digit (`key_len`): `KeyReady` carries the K digits at that moment.
* The destination is the digits after the key, ended by `#` or by `inter_digit_ms` of silence; silence or `#` before
  any destination digit means no destination (`ok`, destination None). So a person's `KEY#DEST#` and an app's
  `KEY` pause `DEST` both give DEST.
* A `#` right after the key is ignored, once; so is the first `#` after a `*` emptied the destination (the field is
  as fresh as right after the key). A further `#` on an empty destination ends it: `KEY##` is "no destination".
* `*` clears the field being typed (the key digits so far, or the destination).
* Every digit, ignored `#` and `*` included, counts as a digit for the 4 s timer: silence is no digit at all.

What ends without a destination:
* `no_key`: before the key field ended, `A`-`D`, any other symbol (not `0-9*#A-D`: ARI only sends those, so anything
  else is treated like a letter), a `#` (the key cut short), or a deadline. `no_key` is not a guess: nothing was
  checked.
* `denied` (the destination is refused, never dialled in part): a destination digit past `max_destination` (20), at
  once; `A`-`D` or any other symbol after the key (a destination is `[0-9]{1,20}`); and the 30 s limit while a
  destination is being typed (digits typed, neither `#` nor 4 s of silence yet). At the 30 s limit with an empty
  destination the call goes on without one (`ok`, None), as after silence. When the silence timer and the 30 s limit
  fall on the same millisecond, the silence ended the field first: the destination stands.
* After `Finished`, digits and expiries give no more steps.

Clock: the handler passes its own milliseconds; a time before answer or before an earlier call is taken as the
latest time already seen (a clock does not run backwards here), so a late or reordered event cannot reopen a field.

Key digits are secret (architecture: never in logs): no `repr` or `str` of anything here shows them, and the
collector forgets them as soon as `KeyReady` hands them on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, TypeAlias

from asterisk_securelink.core.verdicts import Verdict

DIGITS: Final = frozenset("0123456789")
LETTERS: Final = frozenset("ABCD")
CLEAR: Final = "*"
END: Final = "#"


@dataclass(frozen=True)
class Timing:
    """CALLING.md's timers, in milliseconds from answer, and the longest destination."""

    first_digit_ms: int = 10_000
    inter_digit_ms: int = 4_000
    total_ms: int = 30_000
    max_destination: int = 20

    def __post_init__(self) -> None:
        if min(self.first_digit_ms, self.inter_digit_ms, self.total_ms, self.max_destination) < 1:
            raise ValueError("DTMF timers and max_destination must be positive")


class DtmfOutcome(StrEnum):
    """How the collection ended. `no_key` and `denied` are spelled as the verdicts they become."""

    OK = "ok"  # the key field ended (and was handed on), the destination is known (or there is none)
    NO_KEY = "no_key"
    DENIED = "denied"


class EndReason(StrEnum):
    """Why the collection ended: for the audit row's detail and the logs (never a digit)."""

    HASH = "hash"  # `#` ended the destination
    SILENCE = "silence"  # `inter_digit_ms` with no digit after the key or a destination digit
    FIRST_DIGIT_TIMEOUT = "first_digit_timeout"  # no digit at all before `first_digit_ms`
    INTER_DIGIT_TIMEOUT = "inter_digit_timeout"  # the key field cut short by silence
    TOTAL_TIMEOUT = "total_timeout"  # `total_ms` reached
    CUT_SHORT = "cut_short"  # `#` before the K-th key digit
    LETTER = "letter"  # `A`-`D`
    INVALID = "invalid"  # a symbol that is not DTMF
    TOO_LONG = "too_long"  # a destination digit past `max_destination`


@dataclass(frozen=True)
class DtmfResult:
    outcome: DtmfOutcome
    destination: str | None  # `[0-9]{1,max_destination}` when `ok` and one was given, else None
    reason: EndReason

    @property
    def verdict(self) -> Verdict | None:
        """The verdict this result is by itself: `no_key` or `denied`; None when `ok` (the key's check decides)."""
        return None if self.outcome is DtmfOutcome.OK else Verdict(self.outcome.value)


@dataclass(frozen=True, repr=False)
class KeyReady:
    """The key field ended: `key` is the K digits typed. Check and spend it now (one key per call)."""

    key: str

    def __repr__(self) -> str:
        return f"KeyReady(key=<{len(self.key)} digits>)"

    __str__ = __repr__


@dataclass(frozen=True)
class Finished:
    """The collection is over; nothing more will come from this collector."""

    result: DtmfResult


Step: TypeAlias = KeyReady | Finished


class DtmfCollector:
    """One call's digits, from answer to `Finished`. Not thread-safe: one channel's events arrive in order."""

    def __init__(self, key_len: int, answered_ms: int, timing: Timing = Timing()) -> None:
        if key_len < 1:
            raise ValueError("key_len must be at least 1")
        self.key_len = key_len
        self.answered_ms = answered_ms
        self.timing = timing
        self._now = answered_ms  # the latest time seen
        self._last_digit_ms: int | None = None  # None: no digit yet (the first-digit timer runs)
        self._key: list[str] = []  # the key digits so far; emptied when `KeyReady` hands them on
        self._key_done = False
        self._dest: list[str] = []
        self._hash_ignorable = False  # a `#` now would be "right after the key" (or after `*` emptied the field)
        self._result: DtmfResult | None = None

    @property
    def finished(self) -> bool:
        return self._result is not None

    @property
    def result(self) -> DtmfResult | None:
        return self._result

    def deadline_ms(self) -> int | None:
        """When the handler must call `expire()` if no digit comes first; None once finished. Every deadline ends the
        collection, so this is also the latest time the call can still be collecting."""
        if self._result is not None:
            return None
        return min(self._total_deadline(), self._field_deadline())

    def digit(self, d: str, now_ms: int) -> list[Step]:
        """One `ChannelDtmfReceived` digit (`0-9`, `*`, `#`, `A`-`D`) received at `now_ms`."""
        now = self._tick(now_ms)
        if self._result is not None:
            return []
        if now >= min(self._total_deadline(), self._field_deadline()):
            return self._expire_at()  # it came too late: the deadline ended the collection first
        self._last_digit_ms = now
        return self._after_key(d) if self._key_done else self._in_key(d)

    def expire(self, now_ms: int) -> list[Step]:
        """The handler's timer fired (or it checks): finishes the collection if `now_ms` reached `deadline_ms()`."""
        now = self._tick(now_ms)
        if self._result is not None or now < min(self._total_deadline(), self._field_deadline()):
            return []
        return self._expire_at()

    def __repr__(self) -> str:
        state = "finished" if self._result is not None else ("destination" if self._key_done else "key")
        return (
            f"DtmfCollector(key_len={self.key_len}, state={state}, key_digits={len(self._key)}, "
            f"destination_digits={len(self._dest)}, result={self._result!r})"
        )

    __str__ = __repr__

    # the rules

    def _in_key(self, d: str) -> list[Step]:
        if d in DIGITS:
            self._key.append(d)
            if len(self._key) < self.key_len:
                return []
            key = "".join(self._key)
            self._key.clear()
            self._key_done = True
            self._hash_ignorable = True
            return [KeyReady(key)]
        if d == CLEAR:
            self._key.clear()
            return []
        if d == END:
            return self._finish(DtmfOutcome.NO_KEY, EndReason.CUT_SHORT)
        return self._finish(DtmfOutcome.NO_KEY, EndReason.LETTER if d in LETTERS else EndReason.INVALID)

    def _after_key(self, d: str) -> list[Step]:
        if d in DIGITS:
            self._hash_ignorable = False
            self._dest.append(d)
            if len(self._dest) > self.timing.max_destination:
                return self._finish(DtmfOutcome.DENIED, EndReason.TOO_LONG)
            return []
        if d == CLEAR:
            self._dest.clear()
            self._hash_ignorable = True
            return []
        if d == END:
            if self._hash_ignorable:
                self._hash_ignorable = False
                return []
            return self._finish(DtmfOutcome.OK, EndReason.HASH)
        return self._finish(DtmfOutcome.DENIED, EndReason.LETTER if d in LETTERS else EndReason.INVALID)

    def _expire_at(self) -> list[Step]:
        """The earliest deadline has passed: which one it was decides the outcome."""
        by_field = self._field_deadline() <= self._total_deadline()  # a tie: the field's own timer ended it first
        if not self._key_done:
            if not by_field:
                reason = EndReason.TOTAL_TIMEOUT
            elif self._last_digit_ms is None:
                reason = EndReason.FIRST_DIGIT_TIMEOUT
            else:
                reason = EndReason.INTER_DIGIT_TIMEOUT
            return self._finish(DtmfOutcome.NO_KEY, reason)
        if by_field:
            return self._finish(DtmfOutcome.OK, EndReason.SILENCE)
        if self._dest:  # still typing at the 30 s limit: never dial part of a number
            return self._finish(DtmfOutcome.DENIED, EndReason.TOTAL_TIMEOUT)
        return self._finish(DtmfOutcome.OK, EndReason.TOTAL_TIMEOUT)

    def _finish(self, outcome: DtmfOutcome, reason: EndReason) -> list[Step]:
        destination = "".join(self._dest) if outcome is DtmfOutcome.OK and self._dest else None
        self._result = DtmfResult(outcome, destination, reason)
        self._key.clear()
        self._dest.clear()
        return [Finished(self._result)]

    # the clock

    def _tick(self, now_ms: int) -> int:
        self._now = max(self._now, now_ms)
        return self._now

    def _total_deadline(self) -> int:
        return self.answered_ms + self.timing.total_ms

    def _field_deadline(self) -> int:
        if self._last_digit_ms is None:
            return self.answered_ms + self.timing.first_digit_ms
        return self._last_digit_ms + self.timing.inter_digit_ms
