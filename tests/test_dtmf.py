"""The DTMF collector (CALLING.md, "DTMF"): every rule, the issue's two examples, the timer edges, and a property test
that any digits at any times end by the 30 s limit with one `Finished`, after at most one `KeyReady`."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asterisk_securelink.core.verdicts import Method, Mode, Verdict
from asterisk_securelink.inbound.dtmf import (
    DtmfCollector,
    DtmfOutcome,
    DtmfResult,
    EndReason,
    Finished,
    KeyReady,
    Step,
    Timing,
)

K = 6
KEY = "739182"
T0 = 1_000_000  # answer, on the handler's monotonic clock in ms


def collector(key_len: int = K, timing: Timing | None = None) -> DtmfCollector:
    return DtmfCollector(key_len, T0, timing or Timing())


def feed(c: DtmfCollector, digits: str, at: int, gap: int = 200) -> list[Step]:
    """`digits` from `at` ms after answer, one every `gap` ms."""
    steps: list[Step] = []
    for i, d in enumerate(digits):
        steps += c.digit(d, T0 + at + i * gap)
    return steps


def run_out(c: DtmfCollector) -> list[Step]:
    """What the handler's timer does: expire at each deadline until finished."""
    steps: list[Step] = []
    while (deadline := c.deadline_ms()) is not None:
        steps += c.expire(deadline)
    return steps


def result_of(steps: Iterable[Step]) -> DtmfResult:
    (done,) = [s for s in steps if isinstance(s, Finished)]
    return done.result


def ok(destination: str | None, reason: EndReason) -> DtmfResult:
    return DtmfResult(DtmfOutcome.OK, destination, reason)


# the two examples


def test_app_string_key_pause_destination() -> None:
    """`ACCESS,,KEY,2001`: ~6 s pause before the key (within the 10 s first-digit timer), ~3 s before 2001."""
    c = collector()
    assert feed(c, KEY, 6_000) == [KeyReady(KEY)]
    assert feed(c, "2001", 6_000 + 5 * 200 + 3_000) == []
    assert run_out(c) == [Finished(ok("2001", EndReason.SILENCE))]


def test_person_key_hash_destination_hash() -> None:
    c = collector()
    steps = feed(c, KEY + "#2001#", 2_000, gap=900)
    assert steps == [KeyReady(KEY), Finished(ok("2001", EndReason.HASH))]
    assert c.finished and c.deadline_ms() is None


def test_fast_android_pause_still_gives_the_destination() -> None:
    """A `,` of 0.5 s: the destination follows the key closely, and is still the destination."""
    c = collector()
    feed(c, KEY, 1_000, gap=100)
    feed(c, "2001", 1_000 + 5 * 100 + 500, gap=100)
    assert result_of(run_out(c)) == ok("2001", EndReason.SILENCE)


# the key field


def test_key_ready_at_the_kth_digit_with_exactly_those_digits() -> None:
    c = collector()
    assert feed(c, KEY[:-1], 0) == []
    assert c.digit(KEY[-1], T0 + 4_700) == [KeyReady(KEY)]
    assert not c.finished


def test_key_len_one_and_a_longer_key() -> None:
    c = collector(key_len=1)
    assert c.digit("5", T0) == [KeyReady("5")]
    c = collector(key_len=10)
    assert feed(c, "0123456789", 0) == [KeyReady("0123456789")]


def test_hash_right_after_key_is_ignored() -> None:
    c = collector()
    feed(c, KEY, 0)
    assert c.digit("#", T0 + 2_000) == []
    assert not c.finished
    assert result_of(run_out(c)) == ok(None, EndReason.SILENCE)


def test_second_hash_ends_an_empty_destination() -> None:
    c = collector()
    assert feed(c, KEY + "##", 0) == [KeyReady(KEY), Finished(ok(None, EndReason.HASH))]


def test_hash_after_a_destination_digit_is_not_ignored() -> None:
    c = collector()
    assert result_of(feed(c, KEY + "7#", 0)) == ok("7", EndReason.HASH)


def test_star_clears_the_key_field() -> None:
    c = collector()
    assert feed(c, "1234*", 0) == []
    assert feed(c, KEY, 2_000) == [KeyReady(KEY)]


def test_star_clears_the_destination_field() -> None:
    c = collector()
    steps = feed(c, KEY + "#99*2001#", 0)
    assert steps == [KeyReady(KEY), Finished(ok("2001", EndReason.HASH))]


def test_after_star_empties_the_destination_one_hash_is_ignored_again() -> None:
    c = collector()
    assert feed(c, KEY + "12*#", 0) == [KeyReady(KEY)]
    assert result_of(feed(c, "2001#", 2_000)) == ok("2001", EndReason.HASH)


def test_star_right_after_the_key_keeps_the_key() -> None:
    c = collector()
    assert feed(c, KEY + "*2001#", 0) == [KeyReady(KEY), Finished(ok("2001", EndReason.HASH))]


def test_star_after_a_digit_restarts_the_key_count() -> None:
    """Five key digits, `*`, then six more: the key is the six, not five plus one."""
    c = collector()
    steps = feed(c, KEY[:5] + "*" + "111111", 0)
    assert steps == [KeyReady("111111")]


@pytest.mark.parametrize("letter", "ABCD")
def test_letter_before_the_key_is_no_key(letter: str) -> None:
    c = collector()
    steps = feed(c, KEY[:3] + letter, 0)
    assert steps == [Finished(DtmfResult(DtmfOutcome.NO_KEY, None, EndReason.LETTER))]
    assert c.result is not None and c.result.verdict is Verdict.NO_KEY


@pytest.mark.parametrize("symbol", ["a", "E", "x", "", "12", " ", "\x00"])
def test_other_symbol_before_the_key_is_no_key(symbol: str) -> None:
    c = collector()
    assert c.digit(symbol, T0) == [Finished(DtmfResult(DtmfOutcome.NO_KEY, None, EndReason.INVALID))]


def test_hash_before_k_digits_cuts_the_key_short() -> None:
    c = collector()
    steps = feed(c, KEY[:-1] + "#", 0)
    assert steps == [Finished(DtmfResult(DtmfOutcome.NO_KEY, None, EndReason.CUT_SHORT))]


def test_hash_first_is_a_key_cut_short() -> None:
    c = collector()
    assert result_of(c.digit("#", T0)) == DtmfResult(DtmfOutcome.NO_KEY, None, EndReason.CUT_SHORT)


def test_key_cut_short_by_silence() -> None:
    c = collector()
    feed(c, KEY[:3], 0, gap=1_000)  # last digit at +2 s
    assert c.deadline_ms() == T0 + 2_000 + 4_000
    assert c.expire(T0 + 5_999) == []
    assert c.expire(T0 + 6_000) == [Finished(DtmfResult(DtmfOutcome.NO_KEY, None, EndReason.INTER_DIGIT_TIMEOUT))]


@pytest.mark.parametrize("letter", ["A", "D", "x"])
def test_letter_in_the_destination_is_denied_never_dialled(letter: str) -> None:
    c = collector()
    steps = feed(c, KEY + "20" + letter, 0)
    want = EndReason.LETTER if letter in "ABCD" else EndReason.INVALID
    assert steps == [KeyReady(KEY), Finished(DtmfResult(DtmfOutcome.DENIED, None, want))]
    assert c.result is not None and c.result.verdict is Verdict.DENIED


# the destination


def test_twenty_destination_digits_are_taken() -> None:
    c = collector()
    dest = "12345678901234567890"
    assert result_of(feed(c, KEY + dest + "#", 0)) == ok(dest, EndReason.HASH)


def test_twenty_one_destination_digits_are_denied_at_once() -> None:
    c = collector()
    steps = feed(c, KEY + "123456789012345678901", 0)
    assert steps[-1] == Finished(DtmfResult(DtmfOutcome.DENIED, None, EndReason.TOO_LONG))
    assert c.finished


def test_max_destination_follows_timing() -> None:
    c = collector(timing=Timing(max_destination=4))
    assert result_of(feed(c, KEY + "20011", 0)).outcome is DtmfOutcome.DENIED
    c = collector(timing=Timing(max_destination=4))
    assert result_of(feed(c, KEY + "2001#", 0)) == ok("2001", EndReason.HASH)


def test_no_destination_within_four_seconds_means_none() -> None:
    c = collector()
    feed(c, KEY, 0)  # last key digit at +1 s
    assert c.deadline_ms() == T0 + 1_000 + 4_000
    assert c.expire(T0 + 4_999) == []
    assert c.expire(T0 + 5_000) == [Finished(ok(None, EndReason.SILENCE))]


def test_ignored_hash_restarts_the_silence_timer() -> None:
    c = collector()
    feed(c, KEY, 0)  # last key digit at +1 s
    c.digit("#", T0 + 4_000)
    assert c.deadline_ms() == T0 + 8_000
    assert c.digit("2", T0 + 7_999) == []
    assert result_of(c.digit("#", T0 + 8_500)) == ok("2", EndReason.HASH)


def test_destination_ended_by_silence() -> None:
    c = collector()
    feed(c, KEY + "2001", 0)  # last digit at +1.8 s
    assert c.deadline_ms() == T0 + 5_800
    assert c.expire(T0 + 5_800) == [Finished(ok("2001", EndReason.SILENCE))]


# the timers


def test_no_digits_within_ten_seconds_is_no_key() -> None:
    c = collector()
    assert c.deadline_ms() == T0 + 10_000
    assert c.expire(T0 + 9_999) == []
    assert c.expire(T0 + 10_000) == [Finished(DtmfResult(DtmfOutcome.NO_KEY, None, EndReason.FIRST_DIGIT_TIMEOUT))]


def test_first_digit_just_before_ten_seconds_is_taken() -> None:
    c = collector()
    assert c.digit(KEY[0], T0 + 9_999) == []
    assert c.deadline_ms() == T0 + 9_999 + 4_000


def test_first_digit_exactly_at_ten_seconds_is_too_late() -> None:
    """The handler's timer and the digit race; the digit at the deadline loses: the timer's outcome, once."""
    c = collector()
    assert c.digit(KEY[0], T0 + 10_000) == [
        Finished(DtmfResult(DtmfOutcome.NO_KEY, None, EndReason.FIRST_DIGIT_TIMEOUT))
    ]
    assert c.expire(T0 + 10_000) == []


def test_digit_exactly_four_seconds_after_the_last_is_too_late() -> None:
    c = collector()
    c.digit(KEY[0], T0 + 1_000)
    assert c.digit(KEY[1], T0 + 4_999) == []
    assert result_of(c.digit(KEY[2], T0 + 8_999)).reason is EndReason.INTER_DIGIT_TIMEOUT


def test_destination_digit_exactly_four_seconds_after_the_key_is_too_late() -> None:
    c = collector()
    feed(c, KEY, 0)  # +1 s
    assert c.digit("2", T0 + 5_000) == [Finished(ok(None, EndReason.SILENCE))]


def test_total_limit_while_typing_the_key_is_no_key() -> None:
    c = collector()
    for t in range(0, 30_000, 3_000):  # `*` then digits every 3 s: never 4 s of silence, never a whole key
        c.digit("*" if (t // 3_000) % 3 == 0 else "1", T0 + t)
    assert c.deadline_ms() == T0 + 30_000
    assert c.expire(T0 + 29_999) == []
    assert c.expire(T0 + 30_000) == [Finished(DtmfResult(DtmfOutcome.NO_KEY, None, EndReason.TOTAL_TIMEOUT))]


def test_total_limit_while_typing_a_destination_is_denied() -> None:
    c = collector()
    feed(c, KEY, 9_000)  # the key by +10 s
    for t in range(12_000, 30_000, 3_000):
        assert c.digit("2", T0 + t) == []  # six digits, the last at +27 s
    assert c.deadline_ms() == T0 + 30_000
    assert c.expire(T0 + 30_000) == [Finished(DtmfResult(DtmfOutcome.DENIED, None, EndReason.TOTAL_TIMEOUT))]


def test_total_limit_with_an_empty_destination_goes_on_without_one() -> None:
    c = collector()
    for t in range(0, 30_000, 3_000):  # the key by +15 s, then `*` and `#`: the destination stays empty
        c.digit(KEY[t // 3_000] if t < 18_000 else "*#"[(t // 3_000) % 2], T0 + t)
    assert c.expire(T0 + 30_000) == [Finished(ok(None, EndReason.TOTAL_TIMEOUT))]


def test_silence_and_total_limit_on_the_same_millisecond_keep_the_destination() -> None:
    c = collector()
    feed(c, KEY, 9_000)
    for t in range(12_000, 27_000, 3_000):
        c.digit("2", T0 + t)
    c.digit("3", T0 + 26_000)  # silence ends the field at +30 s, exactly the total limit
    assert c.deadline_ms() == T0 + 30_000
    assert c.expire(T0 + 30_000) == [Finished(ok("222223", EndReason.SILENCE))]


def test_digit_at_the_total_limit_is_too_late() -> None:
    c = collector()
    feed(c, KEY, 9_000)
    for t in range(12_000, 30_000, 3_000):
        c.digit("2", T0 + t)
    assert c.digit("#", T0 + 30_000) == [Finished(DtmfResult(DtmfOutcome.DENIED, None, EndReason.TOTAL_TIMEOUT))]


def test_expire_before_the_deadline_does_nothing() -> None:
    c = collector()
    assert c.expire(T0) == [] and c.expire(T0 + 5_000) == []
    assert not c.finished and c.deadline_ms() == T0 + 10_000


def test_custom_timing() -> None:
    c = collector(timing=Timing(first_digit_ms=500, inter_digit_ms=100, total_ms=1_000))
    assert c.deadline_ms() == T0 + 500
    feed(c, KEY, 0, gap=50)
    assert result_of(c.expire(T0 + 350)) == ok(None, EndReason.SILENCE)


@pytest.mark.parametrize(
    "bad", [{"first_digit_ms": 0}, {"inter_digit_ms": -1}, {"total_ms": 0}, {"max_destination": 0}]
)
def test_timing_must_be_positive(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Timing(**bad)


def test_key_len_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DtmfCollector(0, T0)


# the clock


def test_digits_before_answer_count_from_answer() -> None:
    """A digit whose event carries an earlier time (the prompt was still starting) is taken at answer time."""
    c = collector()
    c.digit(KEY[0], T0 - 5_000)
    assert c.deadline_ms() == T0 + 4_000


def test_clock_going_backwards_cannot_reopen_a_field() -> None:
    c = collector()
    c.digit(KEY[0], T0 + 3_000)
    c.expire(T0 + 6_000)  # not yet due: the latest time seen is now +6 s
    assert c.digit(KEY[1], T0 + 1_000) == []  # taken at +6 s
    assert c.deadline_ms() == T0 + 10_000


# after Finished


def test_digits_after_finished_give_no_steps() -> None:
    c = collector()
    steps = feed(c, KEY + "2001#", 0)
    assert result_of(steps) == ok("2001", EndReason.HASH)
    assert feed(c, "12#" + KEY + "AB*", 2_000) == []
    assert c.expire(T0 + 60_000) == []
    assert c.result == ok("2001", EndReason.HASH)


def test_result_verdicts() -> None:
    assert ok("1", EndReason.HASH).verdict is None
    assert DtmfResult(DtmfOutcome.NO_KEY, None, EndReason.LETTER).verdict is Verdict.NO_KEY
    assert DtmfResult(DtmfOutcome.DENIED, None, EndReason.TOO_LONG).verdict is Verdict.DENIED


# secrets


def test_no_repr_shows_the_key_digits() -> None:
    c = collector()
    feed(c, KEY[:-1], 0)
    assert KEY[:-1] not in repr(c) and KEY[:-1] not in str(c)
    (ready,) = c.digit(KEY[-1], T0 + 1_500)
    finished = feed(c, "2001#", 2_000)
    for obj in (ready, [ready], c, finished, c.result):
        for text in (repr(obj), str(obj), f"{obj}", f"{obj!r}", format(obj)):
            assert KEY not in text, text
    assert repr(ready) == "KeyReady(key=<6 digits>)"
    assert isinstance(ready, KeyReady) and ready.key == KEY  # the handler still gets it


def test_the_collector_forgets_the_key_once_handed_on() -> None:
    c = collector()
    feed(c, KEY, 0)
    assert all(KEY not in repr(v) for v in vars(c).values())


# verdicts and methods


def test_added_verdicts_are_spelled_as_calling_md() -> None:
    assert [Verdict.NO_KEY, Verdict.DENIED, Verdict.NO_ROUTE, Verdict.UNCONFIRMED] == [
        "no_key",
        "denied",
        "no_route",
        "unconfirmed",
    ]


def test_methods_are_the_dialplan_contract_and_mode_is_unchanged() -> None:
    assert [m.value for m in Method] == ["ani", "dnis", "dtmf", "intent", "callback"]
    assert [m.value for m in Mode] == ["ani", "dnis", "either"]
    assert Method(Mode.ANI.value) is Method.ANI and Method(Mode.DNIS.value) is Method.DNIS


# the property


SYMBOLS = st.sampled_from(list("0123456789") * 3 + list("*#") * 3 + list("ABCD") + ["x"])
GAPS = st.integers(min_value=0, max_value=6_000)


@settings(max_examples=400, deadline=None)
@given(
    presses=st.lists(st.tuples(SYMBOLS, GAPS), max_size=60),
    key_len=st.integers(min_value=1, max_value=10),
    checks=st.lists(st.integers(min_value=0, max_value=40_000), max_size=5),
)
def test_any_digits_at_any_times_end_once_by_the_total_limit(
    presses: list[tuple[str, int]], key_len: int, checks: list[int]
) -> None:
    timing = Timing()
    c = DtmfCollector(key_len, T0, timing)
    steps: list[Step] = []
    now = T0
    for i, (symbol, gap) in enumerate(presses):
        now += gap
        if i < len(checks):  # the handler's timer may also fire (early or late) between digits
            steps += c.expire(T0 + checks[i])
        deadline = c.deadline_ms()
        assert deadline is None or deadline <= T0 + timing.total_ms
        steps += c.digit(symbol, now)
    steps += run_out(c)

    finished = [i for i, s in enumerate(steps) if isinstance(s, Finished)]
    ready = [i for i, s in enumerate(steps) if isinstance(s, KeyReady)]
    assert len(finished) == 1 and finished[0] == len(steps) - 1
    assert len(ready) <= 1
    assert all(r < finished[0] for r in ready)
    assert c.finished and c.deadline_ms() is None
    result = result_of(steps)
    for s in steps:
        if isinstance(s, KeyReady):
            assert len(s.key) == key_len and set(s.key) <= set("0123456789")
    if result.outcome is DtmfOutcome.OK:
        assert ready, "ok only after the key was handed on"
    if result.destination is not None:
        assert result.outcome is DtmfOutcome.OK
        assert 1 <= len(result.destination) <= timing.max_destination and result.destination.isdigit()
    assert c.digit("1", now + 1) == [] and c.expire(now + 100_000) == []


@settings(max_examples=200, deadline=None)
@given(
    key=st.text("0123456789", min_size=K, max_size=K),
    dest=st.text("0123456789", min_size=1, max_size=20),
    wait=st.integers(min_value=0, max_value=9_999),
    pause=st.integers(min_value=0, max_value=3_999),
    gap=st.integers(min_value=0, max_value=300),
    hashes=st.booleans(),
)
def test_both_ways_of_sending_give_the_destination(
    key: str, dest: str, wait: int, pause: int, gap: int, hashes: bool
) -> None:
    """Whatever pause before the key (< 10 s) and between key and destination (< 4 s): `KEY#DEST#` or `KEY`
    pause `DEST` hands DEST on, as long as it all fits in the 30 s."""
    c = DtmfCollector(K, T0)
    steps = feed(c, key, wait, gap)
    at = wait + (K - 1) * gap + pause
    if hashes:
        steps += c.digit("#", T0 + at)
    steps += feed(c, dest + ("#" if hashes else ""), at + (gap if hashes else 0), gap)
    steps += run_out(c)
    assert steps[0] == KeyReady(key)
    assert result_of(steps) == ok(dest, EndReason.HASH if hashes else EndReason.SILENCE)
