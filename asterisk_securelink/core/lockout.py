"""Failure counting and lockout, per caller number and per source (trunk / remote address). Pure.

N failures for one subject within `window` seconds lock it for `cooldown` seconds; a success clears it.
Memory is bounded: beyond `max_subjects` the least recently failing subject is forgotten.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass
class _State:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class LockoutTracker:
    def __init__(self, max_failures: int, window: float, cooldown: float, max_subjects: int = 100_000) -> None:
        if max_failures < 1 or window <= 0 or cooldown < 0:
            raise ValueError("lockout needs max_failures >= 1, window > 0 and cooldown >= 0")
        self.max_failures = max_failures
        self.window = window
        self.cooldown = cooldown
        self.max_subjects = max_subjects
        self._subjects: OrderedDict[str, _State] = OrderedDict()

    def is_locked(self, subject: str, now: float) -> bool:
        state = self._subjects.get(subject)
        return state is not None and now < state.locked_until

    def record_failure(self, subject: str, now: float) -> bool:
        """Count one failure; returns True when the subject is (now) locked."""
        state = self._subjects.pop(subject, None) or _State()
        self._subjects[subject] = state  # most recent last
        while state.failures and state.failures[0] <= now - self.window:
            state.failures.popleft()
        state.failures.append(now)
        if len(state.failures) >= self.max_failures:
            state.locked_until = max(state.locked_until, now + self.cooldown)
            state.failures.clear()
        while len(self._subjects) > self.max_subjects:
            self._subjects.popitem(last=False)
        return now < state.locked_until

    def record_success(self, subject: str) -> None:
        self._subjects.pop(subject, None)

    def __len__(self) -> int:
        return len(self._subjects)
