from __future__ import annotations

import pytest

from asterisk_securelink.core.lockout import LockoutTracker


def test_locks_after_n_failures_within_window() -> None:
    t = LockoutTracker(max_failures=3, window=60, cooldown=100)
    assert not t.record_failure("a", 0)
    assert not t.record_failure("a", 10)
    assert t.record_failure("a", 20)
    assert t.is_locked("a", 119)
    assert not t.is_locked("a", 120)
    assert not t.is_locked("b", 50)


def test_failures_outside_window_do_not_count() -> None:
    t = LockoutTracker(max_failures=3, window=60, cooldown=100)
    t.record_failure("a", 0)
    t.record_failure("a", 10)
    assert not t.record_failure("a", 75)  # the first two fell out of the window
    assert not t.is_locked("a", 76)


def test_success_resets() -> None:
    t = LockoutTracker(max_failures=2, window=60, cooldown=100)
    t.record_failure("a", 0)
    t.record_success("a")
    assert not t.record_failure("a", 1)


def test_memory_is_bounded() -> None:
    t = LockoutTracker(max_failures=5, window=60, cooldown=100, max_subjects=10)
    for i in range(100):
        t.record_failure(str(i), i)
    assert len(t) == 10


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        LockoutTracker(0, 60, 10)
