"""The one settable clock of the tests, and the instant most of them stand at.

A test hands `Clock(...)` to whatever takes a clock (`clock_ms`, a limiter's `clock`, the guard's `monotonic`) and
moves time by setting `clock.t`; nothing sleeps.
"""

from __future__ import annotations

from typing import Generic, TypeVar

N = TypeVar("N", int, float)

T = 1_790_000_000_000  # unix ms: epoch 59666666 at period 30, 20 s into the window
S = 1000  # one second in ms


class Clock(Generic[N]):
    """A settable clock: calling it returns `t` (integer unix ms for `clock_ms`, float seconds for a monotonic one)."""

    def __init__(self, t: N) -> None:
        self.t: N = t

    def __call__(self) -> N:
        return self.t
