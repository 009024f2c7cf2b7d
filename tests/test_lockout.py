"""The pure lockout rules (`core.lockout`): what could be a key, the budgets, the allowance, registered numbers."""

from __future__ import annotations

import math

import pytest

from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.lockout import (
    RegisteredNumbers,
    could_be_key,
    guess_budget,
    guess_probability,
    number_allowance,
    total_budget,
)

TEN = NumberFormat("XXXXXXXXXX")
NANP = NumberFormat("+1NXXNXXXXXX")


@pytest.mark.parametrize(
    ("fmt", "digits", "trunks", "ok"),
    [
        (TEN, "1234567890", (), True),
        (TEN, "123456789", (), False),  # too short
        (TEN, "01234567890", (), False),  # a digit in front that is no trunk prefix
        (TEN, "01234567890", ("0",), True),
        (NANP, "15588674729", (), True),  # as presented
        (NANP, "5588674729", (), True),  # national: the literal prefix dropped
        (NANP, "0115588674729", ("011",), True),
        (NANP, "1588674729", (), False),  # N is 2-9: no key starts its significant part with 1
        (NANP, "5581674729", (), False),  # the second N
        (NANP, "25588674729", (), False),  # 2 is no suffix of the literal prefix 1
        (NumberFormat("555XXXXXXX"), "5551234567", (), True),
        (NumberFormat("555XXXXXXX"), "1234567", (), True),  # the significant part alone
        (NumberFormat("XXXXX1XXXX"), "1234517890", (), True),  # a literal inside the significant part
        (NumberFormat("XXXXX1XXXX"), "1234527890", (), False),
    ],
)
def test_could_be_key(fmt: NumberFormat, digits: str, trunks: tuple[str, ...], ok: bool) -> None:
    assert could_be_key(digits, fmt, trunks) is ok


def test_budget_is_the_target_over_the_chance_of_one_guess() -> None:
    assert guess_probability(10**10, 3, 100) == pytest.approx(3e-8)
    assert [guess_budget(1e-6, 10**10, 3, d) for d in (1, 10, 20, 100, 1000, 3333, 3334)] == [
        3333, 333, 166, 33, 3, 1, 0
    ]  # fmt: skip
    assert guess_budget(1e-6, 10**10, 3, 0) == 3333  # no device yet: counted as one
    assert guess_budget(1.0, 10**10, 3, 600) == 5_555_555
    s = NANP.size  # 6.4e9
    assert guess_budget(1e-6, s, 3, 20) == math.floor(1e-6 * s / 60)


def test_a_registered_number_is_allowed_what_the_target_allows_not_a_constant() -> None:
    """M5 (issue 22): a two-factor guess wins with W/S whatever D is, so one number may fail floor(P*S/W) guesses a
    day; with the defaults 3,333, more than a spoofer's minute at 20 calls/s (1,200). It was 5, then a backoff."""
    assert number_allowance(1e-6, 10**10, 3) == 3333 > 20 * 60
    assert number_allowance(1e-6, 10**10, 3) == guess_budget(1e-6, 10**10, 3, 1)
    assert number_allowance(1e-6, 10**8, 3) == 33  # 8-digit keys: the figure follows S
    assert number_allowance(1e-7, 10**10, 5) == 200  # and P and W


def test_the_total_budget_is_the_same_rule_for_its_own_target() -> None:
    assert total_budget(1e-5, 10**10, 3, 100) == 333 == 10 * guess_budget(1e-6, 10**10, 3, 100) + 3


def test_registered_numbers_name_devices_in_any_carrier_form() -> None:
    numbers = {1: "+15550002222", 2: "+442071234567", 3: "5550009999", 4: None, 5: "+15550002222"}
    r = RegisteredNumbers(numbers, ("0", "011"))
    assert r.devices("15550002222") == (1, 5)
    assert r.devices("5550002222") == (1, 5)
    assert r.devices("0115550002222") == (1, 5)
    assert r.devices("442071234567") == (2,)
    assert r.devices("02071234567") == (2,)  # national with the trunk prefix 0
    assert r.devices("5550009999") == (3,)  # a 1.0 number: compared whole
    assert r.devices("25550002222") == ()  # 2 is neither a trunk prefix nor part of +1
    assert r.devices("5550002223") == ()
    assert not r.stale(numbers)
    assert r.stale({**numbers, 6: "+15550003333"})
