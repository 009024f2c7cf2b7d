"""The guess guard: how many guesses the verification service may evaluate, with the state in the database so every
node sharing it enforces one budget (docs/decisions.md, "A guess budget per source, an allowance per registered
number").

* Key alone: a source (trunk) may fail `core.lockout.guess_budget` guesses in any 24 hours, and every source together
  `core.lockout.total_budget` (the subject `TOTAL`). A failed guess is counted by one UPSERT per subject that returns
  the new count; one that would go over a budget is given back and refused instead, so however many calls and nodes
  race, no more than the budget fail. A key that matched is admitted without touching the counts while they are far
  below their budgets (under half, by a view at most `CACHE_SECONDS` old); nearer, it takes a slot the same way
  first (given back once admitted), so a guess that matches cannot slip past a budget spent meanwhile. A source
  known to be over budget is refused without evaluating anything.
* Two-factor: failures count against the device the caller's registered number names (the subject `#<device id>`),
  which may fail `core.lockout.number_allowance` guesses in any 24 hours. A verified call does not reset it: that
  would hand a spoofer a fresh allowance each time the owner calls.
Crossing a limit raises a `LockoutEvent` (log, metric, AMI).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from asterisk_securelink.config import LockoutConfig
from asterisk_securelink.core.lockout import (
    BUDGET_HOURS,
    DAY_MS,
    HOUR_MS,
    LockoutEvent,
    guess_budget,
    number_allowance,
    total_budget,
)
from asterisk_securelink.store.lockout import LockoutStore

log = logging.getLogger(__name__)

CACHE_SECONDS: Final = 1.0  # how long a node trusts what it read of the shared counts
EVENT_QUIET_SECONDS: Final = 300.0  # a source's budget event is not repeated by one node within this time
MAX_CACHED: Final = 100_000
TOTAL: Final = "*"  # the subject of every source's key-alone guesses together (`routing.source_of` never gives it)


def device_subject(device_id: int) -> str:
    """The subject a registered number's failed two-factor guesses count against: its device."""
    return f"#{device_id}"


@dataclass(frozen=True)
class Slot:
    """Leave to admit a key-alone match (no subjects: nothing is counted)."""

    subjects: tuple[str, ...] = ()  # the source and TOTAL
    hour: int = 0
    reserved: bool = False  # counted in the database until the outcome is known; else nothing was counted
    refused: bool = False


@dataclass
class _View:
    """What a node knows of one source's count in one hour, shared by its concurrent calls."""

    hour: int
    earlier: int  # guesses in the hours of the window before `hour`
    current: int  # guesses in `hour`
    read_at: float  # when `earlier` was read (monotonic): trusted for CACHE_SECONDS
    learned_at: float  # when `current` was last learned (monotonic): a read issued before it is older news

    @property
    def total(self) -> int:
        return self.earlier + self.current

    def learn(self, current: int, now: float) -> None:
        """A count an UPSERT returned: the database's count when that statement ran."""
        self.current, self.learned_at = current, now


class GuessGuard:
    def __init__(
        self,
        config: LockoutConfig,
        db: LockoutStore,
        strength: Callable[[], tuple[int, int, int]],
        *,
        alert: Callable[[LockoutEvent], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`strength`: the live (S, W, D) the budget is derived from (format size, live windows, devices); `alert`:
        told of every lockout that starts (`Notifier.lockout`: /metrics, AMI)."""
        self.config = config
        self.db = db
        self.strength = strength
        self.monotonic = monotonic
        self.alert = alert
        self._views: OrderedDict[str, _View] = OrderedDict()
        self._announced: dict[str, float] = {}
        self._purged_hour = -1
        self._zero_logged = -1e9
        self._budget_for: tuple[int, int, int] | None = None
        self._budgets = (0, 0, 0)

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def budgets(self) -> tuple[int, int, int]:
        """(per source, every source together, per registered number), from the live strength."""
        strength = self.strength()
        if strength != self._budget_for:  # exact (Fraction) arithmetic: once per change of S, W or D, not per call
            c, (size, width, _) = self.config, strength
            total = max(c.max_total_guess_probability, c.max_guess_probability)
            self._budget_for = strength
            self._budgets = (
                guess_budget(c.max_guess_probability, *strength),
                total_budget(total, *strength),
                number_allowance(c.max_guess_probability, size, width),
            )
        return self._budgets

    def budget(self) -> int:
        return self.budgets()[0]

    def _budget_of(self, subject: str) -> int:
        source, total, number = self.budgets()
        return total if subject == TOTAL else number if subject.startswith("#") else source

    # -- key alone: the source's budget and every source's ----------------------------------------------------------
    async def spent(self, source: str | None, at_ms: int) -> bool:
        """Whether `source`, or every source together, is known to be over budget (a view at most CACHE_SECONDS
        old): refuse unevaluated."""
        if not self.enabled or not source:
            return False
        if not await self._over((source, TOTAL), at_ms // HOUR_MS):
            return False
        if self.budget() == 0 and self.monotonic() - self._zero_logged > EVENT_QUIET_SECONDS:
            self._zero_logged = self.monotonic()
            log.warning("guess budget 0: key-alone calls are refused (see `securelink doctor`, guess budget)")
        return True

    async def count_failures(self, source: str | None, at_ms: int, n: int = 1) -> bool:
        """Count `n` failed key-alone guesses against the source and TOTAL. False when that would go over a budget:
        then they are given back and the caller refuses the call (`locked_out`), as if it had come a moment later."""
        if not self.enabled or not source or n < 1:
            return True
        hour = at_ms // HOUR_MS
        if not await self._add((source, TOTAL), hour, n):
            return False
        await self._purge(hour)
        return True

    async def slot(self, source: str | None, at_ms: int) -> Slot:
        """Before admitting a key that matched: nothing far below the budgets, else a slot counted like a failure."""
        if not self.enabled or not source:
            return Slot()
        subjects, hour = (source, TOTAL), at_ms // HOUR_MS
        far = [(await self._view(s, hour)).total + 1 <= self._budget_of(s) // 2 for s in subjects]
        if all(far):
            return Slot(subjects, hour)
        if not await self._add(subjects, hour, 1):
            return Slot(subjects, refused=True)
        return Slot(subjects, hour, reserved=True)

    async def settle(self, slot: Slot, at_ms: int, failed: bool) -> bool:
        """After the spend of a slotted match: a reserved slot is given back unless the call failed (replayed, say);
        an unreserved one counts the failure now. False when that failure went over a budget (`count_failures`)."""
        if not slot.subjects or slot.refused:
            return True
        if slot.reserved:
            if not failed:
                for subject in slot.subjects:
                    current = await self.db.add_guesses(subject, slot.hour, -1)
                    view = self._views.get(subject)
                    if view is not None and view.hour == slot.hour:
                        view.learn(current, self.monotonic())
            return True
        return await self.count_failures(slot.subjects[0], at_ms) if failed else True

    # -- two-factor: the allowance of the device a registered number names ------------------------------------------
    async def device_locked(self, device_ids: Sequence[int], at_ms: int) -> bool:
        """Whether a device the caller's registered number names has spent its allowance (view CACHE_SECONDS old)."""
        if not self.enabled or not device_ids:
            return False
        return await self._over([device_subject(d) for d in device_ids], at_ms // HOUR_MS)

    async def device_failed(self, device_ids: Sequence[int], at_ms: int) -> None:
        """A failed two-factor guess with a number that names these devices: one UPSERT each."""
        if not self.enabled:
            return
        hour = at_ms // HOUR_MS
        for device_id in device_ids:
            subject = device_subject(device_id)
            view = await self._view(subject, hour)
            view.learn(await self.db.add_guesses(subject, hour, 1), self.monotonic())
            self._crossed(subject, view.total - 1, view.total)
        await self._purge(hour)

    # -- the counts ---------------------------------------------------------------------------------------------------
    async def _over(self, subjects: Sequence[str], hour: int) -> bool:
        for subject in subjects:
            if (await self._view(subject, hour)).total >= self._budget_of(subject):
                return True
        return False

    async def _add(self, subjects: Sequence[str], hour: int, n: int) -> bool:
        """Count `n` against each subject in turn; when one goes over its budget, all are given back: False."""
        done: list[tuple[str, _View]] = []
        for subject in subjects:
            view = await self._view(subject, hour)
            view.learn(await self.db.add_guesses(subject, hour, n), self.monotonic())
            done.append((subject, view))
            self._crossed(subject, view.total - n, view.total)
            if view.total > self._budget_of(subject):
                for counted, v in done:
                    v.learn(await self.db.add_guesses(counted, hour, -n), self.monotonic())
                return False
        return True

    async def _view(self, source: str, hour: int) -> _View:
        """The node's view of `source` in `hour`, read again when it is older than CACHE_SECONDS. One object per
        source and hour, so what one call learns every other call sees at once."""
        view = self._views.get(source)
        if view is not None and view.hour == hour and self.monotonic() - view.read_at < CACHE_SECONDS:
            self._views.move_to_end(source)
            return view
        issued = self.monotonic()
        counts = await self.db.source_hours(source, hour - BUDGET_HOURS + 1)
        current = counts.pop(hour, 0)
        view = self._views.get(source)
        if view is None or view.hour != hour:
            view = _View(hour, sum(counts.values()), current, issued, issued)
            self._views[source] = view
        else:
            view.earlier, view.read_at = sum(counts.values()), issued
            if view.learned_at <= issued:  # else an UPSERT returned a newer count while this read was under way
                view.learn(current, issued)
        self._views.move_to_end(source)
        while len(self._views) > MAX_CACHED:
            self._views.popitem(last=False)
        return view

    def _crossed(self, subject: str, before: int, after: int) -> None:
        """A count that crossed its limit raises one event (per node and subject within EVENT_QUIET_SECONDS)."""
        limit = self._budget_of(subject)
        if not before < limit <= after:
            return
        now = self.monotonic()
        if now - self._announced.get(subject, -1e9) < EVENT_QUIET_SECONDS:
            return
        self._announced[subject] = now
        if subject.startswith("#"):
            self._emit(LockoutEvent("caller", None, int(subject[1:]), min(after, limit), limit, 0))
        else:
            self._emit(LockoutEvent("source", subject, None, min(after, limit), limit, 0))

    # -- both --------------------------------------------------------------------------------------------------------
    def _emit(self, event: LockoutEvent) -> None:
        if event.kind == "source":
            whose = "every source together" if event.source == TOTAL else f"source {event.source}"
            log.warning("%s spent its guess budget (%d failed key-alone guesses in 24 h, budget %d): key-alone calls "
                        "from it are refused; two-factor calls are still verified", whose, event.count,
                        event.limit)  # fmt: skip
        else:
            log.warning("device %s: %d failed two-factor guesses in 24 h with its registered number (allowance %d): "
                        "its two-factor calls are refused until they age out", event.device_id, event.count,
                        event.limit)  # fmt: skip
        if self.alert is not None:
            try:
                self.alert(event)
            except Exception as exc:  # noqa: BLE001 - an alert never changes a verdict
                log.warning("lockout alert failed (%s)", type(exc).__name__)

    async def _purge(self, hour: int) -> None:
        """Once an hour per node: rows that no longer count are deleted."""
        if hour <= self._purged_hour:
            return
        self._purged_hour = hour
        try:
            await self.db.purge(hour - BUDGET_HOURS + 1, hour * HOUR_MS - DAY_MS)
        except Exception as exc:  # noqa: BLE001 - housekeeping; the next hour tries again
            log.warning("lockout purge failed (%s)", type(exc).__name__)
