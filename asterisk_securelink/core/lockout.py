"""What a failed guess costs, and how much guessing is allowed (docs/decisions.md, "A guess budget per source, a
backoff per registered number"). Pure.

* Only a guess that could have matched counts: a number whose last K digits have the shape of the inbound format's
  significant part and whose digits before them pass the 1.1 trunk-prefix rule (`could_be_key`). Anonymous,
  malformed, wrong-length and wrong-shape numbers cost nothing.
* Key alone (ANI, or DNIS without two-factor): one random guess is admitted with probability W*D/S (SLK1.md, "How
  strong is a key, really"), so a source (trunk) may make `guess_budget` = floor(P*S / (W*D)) failed guesses in any
  24 hours for a target P (`lockout.max_guess_probability`); counted in hourly buckets (`BUDGET_HOURS`).
* Every source together: `total_budget` for `lockout.max_total_guess_probability`, a backstop for sources an attacker
  can multiply.
* Two-factor (the caller's registered number picks the device): a guess is admitted with W/S whatever D is. It is
  counted against the device the number names (`RegisteredNumbers`), which may fail `number_allowance` =
  floor(P*S / W) guesses in any 24 hours, counted in the same hourly buckets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from asterisk_securelink.core.compare import country_code_of, prefix_ok, same_registered_number
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.numbers import normalize

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS
BUDGET_HOURS: Final = 25  # the current hour and the 24 before it: a counted guess weighs for 24 to 25 hours


def could_be_key(digits: str, fmt: NumberFormat, trunk_prefixes: Sequence[str]) -> bool:
    """Whether a normalized number (digits, no '+') could be a key of `fmt` as the network may deliver it (SLK1.md
    1.1, rules 2-3): its last K digits fit the significant part's placeholders and literals, and the digits before
    them are a trunk prefix followed by a suffix of the literal prefix. Nothing here is secret."""
    k = fmt.significant_length
    if len(digits) < k or not prefix_ok(digits[: len(digits) - k], fmt.literal_prefix, trunk_prefixes):
        return False
    return fmt.significant_fits(digits[len(digits) - k :])


def guess_probability(size: int, window_width: int, devices: int) -> Fraction:
    """W*D/S: the chance that one random key-alone guess is admitted (at least one device counted)."""
    return Fraction(window_width * max(1, devices), size)


def guess_budget(max_probability: float, size: int, window_width: int, devices: int) -> int:
    """floor(P / (W*D/S)): the failed key-alone guesses one source may make in any 24 hours so that their chance of
    admitting anyone stays within P. 0 when a single guess is already more likely than P."""
    return math.floor(Fraction(repr(max_probability)) / guess_probability(size, window_width, devices))


def total_budget(max_total_probability: float, size: int, window_width: int, devices: int) -> int:
    """The backstop: the failed key-alone guesses every source together may make in any 24 hours (the same rule as
    `guess_budget`, for `lockout.max_total_guess_probability`), so sources an attacker can multiply (peers, guest
    addresses, FastAGI peers) do not multiply the odds past it."""
    return guess_budget(max_total_probability, size, window_width, devices)


def number_allowance(max_probability: float, size: int, window_width: int) -> int:
    """floor(P*S / W): the failed two-factor guesses one registered number (its device) may take in any 24 hours.
    A two-factor guess is checked against that device alone, so it is admitted with W/S whatever D is: the same
    target P as a source's, with D = 1 (3,333 with 10-digit keys, W = 3 and P = 1e-6)."""
    return guess_budget(max_probability, size, window_width, 1)


class RegisteredNumbers:
    """Which devices a caller number names (SLK1.md, "The registered number": rules 1-3 with the country code as the
    literal prefix), for counting two-factor failures against them. Indexed by national number, so a lookup tries one
    dict key per distinct national-number length, whatever the device count.

    Built from a snapshot of the registered numbers; `stale` says when to build it again (the numbers changed in
    size or the snapshot is older than `max_age` seconds). It decides only what is counted, never an admission.
    """

    def __init__(self, numbers: Mapping[int, str | None], trunk_prefixes: Sequence[str], max_age: float = 5.0) -> None:
        self.trunk_prefixes = tuple(trunk_prefixes)
        self.size = len(numbers)
        self.built_at = time.monotonic()
        self.max_age = max_age
        self._national: dict[str, list[tuple[int, str]]] = {}
        self._exact: dict[str, list[int]] = {}  # numbers 0003 could not rewrite to E.164: compared whole
        for device_id, number in numbers.items():
            if not number:
                continue
            if number.startswith("+"):
                digits = number[1:]
                national = digits[len(country_code_of(digits) or "") :]
                self._national.setdefault(national, []).append((device_id, number))
            else:
                plain = normalize(number)
                if plain is not None:
                    self._exact.setdefault(plain, []).append(device_id)
        self._lengths = sorted({len(n) for n in self._national if n})

    def stale(self, numbers: Mapping[int, str | None]) -> bool:
        return len(numbers) != self.size or time.monotonic() - self.built_at > self.max_age

    def devices(self, caller: str) -> tuple[int, ...]:
        """The devices registered with `caller` (normalized digits), in any carrier form."""
        found = list(self._exact.get(caller, ()))
        for n in self._lengths:
            if len(caller) < n:
                break
            for device_id, number in self._national.get(caller[len(caller) - n :], ()):
                if same_registered_number(caller, number, self.trunk_prefixes):
                    found.append(device_id)
        return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class LockoutEvent:
    kind: str  # "source": a source (or "*", every source) spent its key-alone budget; "caller": a registered number
    source: str | None  # the source, for "source"
    device_id: int | None  # the device the caller's number names, for "caller"
    count: int  # guesses counted in the last 24 hours
    limit: int  # the budget (source) / the allowance (caller)
    seconds: int  # 0: the refusal lasts until guesses older than 24 hours no longer count
