"""The app's dial tone digits (`calling.dialtone`, pure)."""

from __future__ import annotations

from asterisk_securelink.calling.dialtone import BETWEEN_MS, FIRST_DIGIT_MS, MAX_DIGITS, DialTone


def test_hash_ends_the_number_and_star_clears_it() -> None:
    t = DialTone(0)
    for i, d in enumerate("99*2001#"):
        t.digit(d, 100 * i)
    assert t.done and t.number == "2001" and not t.too_long


def test_silence_ends_it_first_digit_gets_longer() -> None:
    t = DialTone(0)
    t.expire(FIRST_DIGIT_MS - 1)
    assert not t.done
    t.digit("2", FIRST_DIGIT_MS - 1)
    t.expire(FIRST_DIGIT_MS - 1 + BETWEEN_MS - 1)
    assert not t.done
    t.expire(FIRST_DIGIT_MS - 1 + BETWEEN_MS)
    assert t.done and t.number == "2"


def test_nothing_dialled_is_no_number_and_too_long_is_flagged() -> None:
    silent = DialTone(0)
    silent.expire(FIRST_DIGIT_MS)
    assert silent.done and silent.number is None
    long = DialTone(0)
    for i in range(MAX_DIGITS + 1):
        long.digit("1", i)
    assert long.done and long.too_long
    long.digit("#", 99)  # ignored once done
    assert long.number == "1" * (MAX_DIGITS + 1)
