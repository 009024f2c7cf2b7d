"""The guess guard: how many guesses the verification service may evaluate, with the state in the database so every
node sharing it enforces one budget (docs/decisions.md, "A guess budget per source, a backoff per registered number").

* Key alone: a source (trunk) may fail `core.lockout.guess_budget` guesses in any 24 hours. A failed guess is counted
  by one UPSERT that returns the new count; one that would go over the budget is given back and refused instead, so
  however many calls and nodes race, no more than the budget fail. A key that matched is admitted without touching
  the count while the source is far below its budget (under half, by a view at most `CACHE_SECONDS` old); nearer,
  it takes a slot the same way first (given back once admitted), so a guess that matches cannot slip past a budget
  spent meanwhile. A source known to be over budget is refused without evaluating anything.
* Two-factor: failures count against the device the caller's registered number names, which backs off
  progressively (`core.lockout.backoff_ms`); a verified call forgets them.
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
from asterisk_securelink.core.lockout import BUDGET_HOURS, DAY_MS, HOUR_MS, LockoutEvent, backoff_ms, guess_budget
from asterisk_securelink.store.lockout import LockoutStore

log = logging.getLogger(__name__)

CACHE_SECONDS: Final = 1.0  # how long a node trusts what it read of the shared counts
EVENT_QUIET_SECONDS: Final = 300.0  # a source's budget event is not repeated by one node within this time
MAX_CACHED: Final = 100_000


@dataclass(frozen=True)
class Slot:
    """Leave to admit a key-alone match from `source` (None: nothing is counted)."""

    source: str | None
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
        self._devices: OrderedDict[int, tuple[int, int, float]] = OrderedDict()  # id -> failures, last ms, read at
        self._announced: dict[str, float] = {}
        self._purged_hour = -1
        self._zero_logged = -1e9
        self._budget_for: tuple[int, int, int] | None = None
        self._budget = 0

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def budget(self) -> int:
        strength = self.strength()
        if strength != self._budget_for:  # exact (Fraction) arithmetic: once per change of S, W or D, not per call
            self._budget_for, self._budget = strength, guess_budget(self.config.max_guess_probability, *strength)
        return self._budget

    # -- key alone: the source's budget ----------------------------------------------------------------------------
    async def spent(self, source: str | None, at_ms: int) -> bool:
        """Whether `source` is known to be over its budget (a view at most CACHE_SECONDS old): refuse unevaluated."""
        if not self.enabled or not source:
            return False
        budget = self.budget()
        if (await self._view(source, at_ms // HOUR_MS)).total < budget:
            return False
        if budget == 0 and self.monotonic() - self._zero_logged > EVENT_QUIET_SECONDS:
            self._zero_logged = self.monotonic()
            log.warning("guess budget 0: key-alone calls are refused (see `securelink doctor`, guess budget)")
        return True

    async def count_failures(self, source: str | None, at_ms: int, n: int = 1) -> bool:
        """Count `n` failed key-alone guesses in one UPSERT. False when that would go over the budget: then they are
        given back and the caller refuses the call (`locked_out`), as if it had come a moment later."""
        if not self.enabled or not source or n < 1:
            return True
        budget, hour = self.budget(), at_ms // HOUR_MS
        view = await self._view(source, hour)
        view.learn(await self.db.add_guesses(source, hour, n), self.monotonic())
        total = view.total
        self._crossed(source, total - n, total, budget)
        if total > budget:
            view.learn(await self.db.add_guesses(source, hour, -n), self.monotonic())
            return False
        await self._purge(hour)
        return True

    async def slot(self, source: str | None, at_ms: int) -> Slot:
        """Before admitting a key that matched: nothing far below the budget, else a slot counted like a failure."""
        if not self.enabled or not source:
            return Slot(None)
        budget, hour = self.budget(), at_ms // HOUR_MS
        view = await self._view(source, hour)
        if view.total + 1 <= budget // 2:
            return Slot(source, hour)
        view.learn(await self.db.add_guesses(source, hour, 1), self.monotonic())
        if view.total > budget:
            view.learn(await self.db.add_guesses(source, hour, -1), self.monotonic())
            return Slot(source, refused=True)
        return Slot(source, hour, reserved=True)

    async def settle(self, slot: Slot, at_ms: int, failed: bool) -> bool:
        """After the spend of a slotted match: a reserved slot is given back unless the call failed (replayed, say);
        an unreserved one counts the failure now. False when that failure went over the budget (`count_failures`)."""
        if slot.source is None or slot.refused:
            return True
        if slot.reserved:
            if not failed:
                current = await self.db.add_guesses(slot.source, slot.hour, -1)
                view = self._views.get(slot.source)
                if view is not None and view.hour == slot.hour:
                    view.learn(current, self.monotonic())
            return True
        return await self.count_failures(slot.source, at_ms) if failed else True

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

    def _crossed(self, source: str, before: int, after: int, budget: int) -> None:
        if not before < budget <= after:
            return
        now = self.monotonic()
        if now - self._announced.get(source, -1e9) < EVENT_QUIET_SECONDS:
            return
        self._announced[source] = now
        self._emit(LockoutEvent("source", source, None, min(after, budget), budget, 0))

    # -- two-factor: the backoff of the device a registered number names -------------------------------------------
    async def device_locked(self, device_ids: Sequence[int], at_ms: int) -> bool:
        """Whether a device the caller's registered number names is backing off now."""
        if not self.enabled or not device_ids:
            return False
        c = self.config
        for failures, last_ms in (await self._device_states(device_ids)).values():
            wait = backoff_ms(failures, c.max_failures, c.backoff, c.cooldown)
            if last_ms >= at_ms - DAY_MS and at_ms < last_ms + wait:
                return True
        return False

    async def device_failed(self, device_ids: Sequence[int], at_ms: int) -> None:
        """A failed two-factor guess with a number that names these devices: one UPSERT each."""
        if not self.enabled:
            return
        c = self.config
        for device_id in device_ids:
            failures, last_ms = await self.db.add_device_failure(device_id, at_ms, at_ms - DAY_MS)
            self._cache_device(device_id, failures, last_ms)
            wait = backoff_ms(failures, c.max_failures, c.backoff, c.cooldown)
            if wait:
                self._emit(LockoutEvent("caller", None, device_id, failures, c.max_failures, wait // 1000))
        await self._purge(at_ms // HOUR_MS)

    async def device_verified(self, device_id: int) -> None:
        """A call verified for this device by two-factor: its failures are forgotten (no write when it has none)."""
        if not self.enabled:
            return
        known = self._devices.get(device_id)
        if known is not None and known[0] == 0:
            return
        await self.db.clear_device(device_id)
        self._cache_device(device_id, 0, 0)

    async def _device_states(self, device_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        now = self.monotonic()
        out: dict[int, tuple[int, int]] = {}
        missing = []
        for d in device_ids:
            known = self._devices.get(d)
            if known is not None and now - known[2] < CACHE_SECONDS:
                out[d] = known[:2]
            else:
                missing.append(d)
        if missing:
            read = await self.db.device_states(missing)
            for d in missing:
                failures, last_ms = read.get(d, (0, 0))
                self._cache_device(d, failures, last_ms)
                out[d] = (failures, last_ms)
        return out

    def _cache_device(self, device_id: int, failures: int, last_ms: int) -> None:
        self._devices[device_id] = (failures, last_ms, self.monotonic())
        self._devices.move_to_end(device_id)
        while len(self._devices) > MAX_CACHED:
            self._devices.popitem(last=False)

    # -- both --------------------------------------------------------------------------------------------------------
    def _emit(self, event: LockoutEvent) -> None:
        if event.kind == "source":
            log.warning("source %s spent its guess budget (%d failed key-alone guesses in 24 h, budget %d): key-alone "
                        "calls from it are refused; two-factor calls are still verified", event.source, event.count,
                        event.limit)  # fmt: skip
        else:
            log.warning("device %s: %d failed two-factor guesses in a row with its registered number; refused for %d s",
                        event.device_id, event.count, event.seconds)  # fmt: skip
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
