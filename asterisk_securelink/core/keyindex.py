"""The live-key index: a key's significant part -> device(s), for the windows that are live now.

Pure and synchronous. Keys are indexed by their format's significant part (SLK1.md 1.1, "Comparing a presented number
with a key"), so a presented number is looked up by its last K digits whatever form the carrier delivered it in, and
the digits before them must pass the trunk-prefix rule (`compare.prefix_ok`): one lookup whatever the form, not one
per form. Identification is a dict lookup per live epoch, O(1) in the number of devices; the cost moves to rolling the
window: `missing()` names the epochs that became live, `build()` renders one key per device for each (from a
snapshot, so `livekeys.LiveKeys.refresh` runs it in a worker thread), and `install()` puts them in place and drops
the epochs that fell out of the window. The final comparison is done again, in constant time, by `KeyIndex.confirm`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asterisk_securelink.core.compare import matches, prefix_ok
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.slk1 import Direction, derive_key

_Entry = int | tuple[int, ...]  # one device id, or several when keys collide


@dataclass(frozen=True)
class Window:
    period: int
    t0: int = 0
    look_behind: int = 1
    look_ahead: int = 0

    def live_epochs(self, current: int) -> range:
        return range(max(0, current - self.look_behind), current + self.look_ahead + 1)

    @property
    def width(self) -> int:
        return self.look_behind + self.look_ahead + 1


@dataclass(frozen=True)
class Candidate:
    device_id: int
    epoch: int


class KeyIndex:
    """Keys of one direction and format for every known device, for the live epochs only."""

    def __init__(
        self, direction: Direction, fmt: NumberFormat, window: Window, trunk_prefixes: Sequence[str] = ()
    ) -> None:
        self.direction = direction
        self.fmt = fmt
        self.window = window
        self.trunk_prefixes = tuple(trunk_prefixes)
        self._secrets: dict[int, bytes] = {}
        self._by_epoch: dict[int, dict[str, _Entry]] = {}
        self.current: int | None = None

    def __len__(self) -> int:
        return len(self._secrets)

    @property
    def epochs(self) -> list[int]:
        return sorted(self._by_epoch)

    def key_for(self, secret: bytes, epoch: int) -> str:
        """The significant part of the device's key of `epoch`: what the tables are keyed by."""
        return self.fmt.significant(derive_key(secret, self.direction, epoch, self.fmt))

    # -- population ---------------------------------------------------------------------------------------
    def set_device(self, device_id: int, secret: bytes | None) -> None:
        """Add, replace (new secret after a rotation) or remove (`secret=None`) one device."""
        old = self._secrets.pop(device_id, None)
        if old is not None:
            for epoch, table in self._by_epoch.items():
                _remove(table, self.key_for(old, epoch), device_id)
        if secret is not None:
            self._secrets[device_id] = secret
            for epoch, table in self._by_epoch.items():
                _add(table, self.key_for(secret, epoch), device_id)

    def missing(self, current: int) -> list[int]:
        return sorted(set(self.window.live_epochs(current)) - self._by_epoch.keys())

    def build(self, epoch: int, secrets: dict[int, bytes] | None = None) -> dict[str, _Entry]:
        """The table of one epoch. Reads only `secrets` (a snapshot), so it may run in a worker thread."""
        table: dict[str, _Entry] = {}
        for device_id, secret in (self._secrets if secrets is None else secrets).items():
            _add(table, self.key_for(secret, epoch), device_id)
        return table

    def snapshot(self) -> dict[int, bytes]:
        return dict(self._secrets)

    def install(
        self, current: int, tables: dict[int, dict[str, _Entry]], secrets: dict[int, bytes] | None = None
    ) -> None:
        """Swap in tables built by `build`; epochs no longer live are dropped.

        Devices changed since `secrets` was snapshotted are patched so the tables match `self._secrets`.
        """
        live = set(self.window.live_epochs(current))
        self._by_epoch = {e: t for e, t in self._by_epoch.items() if e in live}
        for epoch, table in tables.items():
            if epoch in live:
                if secrets is not None:
                    self._patch(table, epoch, secrets)
                self._by_epoch[epoch] = table
        self.current = current

    def _patch(self, table: dict[str, _Entry], epoch: int, built_from: dict[int, bytes]) -> None:
        for device_id in built_from.keys() | self._secrets.keys():
            old, new = built_from.get(device_id), self._secrets.get(device_id)
            if old == new:
                continue
            if old is not None:
                _remove(table, self.key_for(old, epoch), device_id)
            if new is not None:
                _add(table, self.key_for(new, epoch), device_id)

    # -- lookup ---------------------------------------------------------------------------------------------
    def lookup(self, digits: str) -> list[Candidate]:
        """Every (device, epoch) whose live key `digits` (a normalized presented number) may be, newest epoch first:
        its last K digits are the key's significant part and the digits before them pass the trunk-prefix rule."""
        k = self.fmt.significant_length
        if len(digits) < k or not prefix_ok(digits[:-k], self.fmt.literal_prefix, self.trunk_prefixes):
            return []
        significant = digits[-k:]
        found: list[Candidate] = []
        for epoch in sorted(self._by_epoch, reverse=True):
            entry = self._by_epoch[epoch].get(significant)
            if entry is None:
                continue
            ids = (entry,) if isinstance(entry, int) else entry
            found.extend(Candidate(d, epoch) for d in ids)
        return found

    def confirm(self, candidate: Candidate, digits: str) -> bool:
        """Recompute the candidate's key and compare it with `digits` by the 1.1 rules (the digits in constant time)."""
        secret = self._secrets.get(candidate.device_id)
        if secret is None:
            return False
        expected = self.key_for(secret, candidate.epoch)
        return matches(digits, expected, self.fmt.literal_prefix, self.trunk_prefixes)


def _add(table: dict[str, _Entry], key: str, device_id: int) -> None:
    entry = table.get(key)
    if entry is None:
        table[key] = device_id
    elif isinstance(entry, int):
        if entry != device_id:
            table[key] = (entry, device_id)
    elif device_id not in entry:
        table[key] = (*entry, device_id)


def _remove(table: dict[str, _Entry], key: str, device_id: int) -> None:
    entry = table.get(key)
    if entry is None:
        return
    if isinstance(entry, int):
        if entry == device_id:
            del table[key]
        return
    rest = tuple(d for d in entry if d != device_id)
    table[key] = rest[0] if len(rest) == 1 else rest
