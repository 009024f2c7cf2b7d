from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from asterisk_securelink.core.keyindex import Candidate
from asterisk_securelink.core.policy import identify, strength_bits
from asterisk_securelink.core.verdicts import Verdict

MOBILE = {1: "15550001", 2: "15550002", 3: "15550003"}


def test_no_candidate_is_mismatch() -> None:
    assert identify([], MOBILE, None).verdict is Verdict.MISMATCH


def test_one_device_newest_epoch() -> None:
    found = identify([Candidate(1, 9), Candidate(1, 10)], MOBILE, None)
    assert found.verdict is None and found.candidate == Candidate(1, 10)


def test_collision_is_ambiguous_never_a_pick() -> None:
    assert identify([Candidate(1, 10), Candidate(2, 10)], MOBILE, None).verdict is Verdict.AMBIGUOUS


def test_registered_number_narrows_a_collision() -> None:
    found = identify([Candidate(1, 10), Candidate(2, 10)], MOBILE, "15550002")
    assert found.candidate == Candidate(2, 10)


def test_unrelated_hint_does_not_narrow_without_two_factor() -> None:
    assert identify([Candidate(1, 10)], MOBILE, "19999999").candidate == Candidate(1, 10)
    assert identify([Candidate(1, 10), Candidate(2, 10)], MOBILE, "1999").verdict is Verdict.AMBIGUOUS


def test_two_factor_requires_the_callers_own_device() -> None:
    assert identify([Candidate(1, 10)], MOBILE, "15550002", require_hint=True).verdict is Verdict.MISMATCH
    assert identify([Candidate(1, 10)], MOBILE, None, require_hint=True).verdict is Verdict.MISMATCH
    assert identify([Candidate(1, 10)], MOBILE, "15550001", require_hint=True).candidate == Candidate(1, 10)


def test_strength_matches_spec_example() -> None:
    # SLK1.md: default 10-digit format, W=2, 100,000 devices -> 2e-5 per guess
    assert math.isclose(2 ** -strength_bits(10**10, 2, 100_000), 2e-5)


@given(
    st.lists(st.builds(Candidate, st.integers(1, 3), st.integers(0, 5)), max_size=6),
    st.one_of(st.none(), st.sampled_from([*MOBILE.values(), "1999"])),
    st.booleans(),
)
def test_identify_invariants(cands: list[Candidate], hint: str | None, two_factor: bool) -> None:
    found = identify(cands, MOBILE, hint, require_hint=two_factor)
    if found.verdict is None:
        c = found.candidate
        assert c in cands
        others = {x.device_id for x in cands} - {c.device_id}
        # a pick among several devices happens only when the registered number names exactly this one
        if others:
            assert hint is not None and MOBILE[c.device_id] == hint
        if two_factor:
            assert MOBILE[c.device_id] == hint
    else:
        assert found.verdict in (Verdict.MISMATCH, Verdict.AMBIGUOUS)
        assert found.candidate is None
