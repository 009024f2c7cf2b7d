"""The live-key index: a key's significant part -> device(s), for the windows that are live now.

Pure and synchronous. Keys are indexed by their format's significant part (SLK1.md 1.1, "Comparing a presented number
with a key"), so a presented number is looked up by its last K digits whatever form the carrier delivered it in, and
the digits before them must pass the trunk-prefix rule (`compare.prefix_ok`): one lookup whatever the form, not one
per form. Identification is a dict lookup per live epoch, O(1) in the number of devices; the cost moves to rolling the
window: `missing()` names the epochs that became live, `build()` renders one key per device for each (from a
snapshot, so `livekeys.LiveKeys.refresh` runs it in a worker thread), and `install()` puts them in place and drops
the epochs that fell out of the window. The final comparison is done again, in constant time, by `KeyIndex.confirm`.

A `TableBuilder` builds tables a few devices per `step`, so a worker thread can hand the GIL back between slices: a
call arriving during a build then waits for one slice, not for the interpreter's switch interval. `snapshot()` is
O(1): it lends the secrets dict, and the next change copies it (copy on write); `install()` patches the tables for
the devices changed since (tracked, not found by comparing every device).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from asterisk_securelink.core.compare import matches, prefix_ok
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.slk1 import MIN_SECRET_LEN, Direction, SLK1Error, derive_key, key_message

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
        self._lent: dict[int, bytes] | None = None  # the dict `snapshot()` handed out: copied before a change
        self._changed: set[int] = set()  # devices changed since `_lent` was handed out
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
        if secret is not None and len(secret) < MIN_SECRET_LEN:
            raise SLK1Error(f"secret must be at least {MIN_SECRET_LEN} bytes")
        if self._secrets is self._lent:  # a build reads it: copy on write
            self._secrets = dict(self._secrets)
        if self._lent is not None:
            self._changed.add(device_id)
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

    def build(self, epoch: int, secrets: Mapping[int, bytes] | None = None) -> dict[str, _Entry]:
        """The table of one epoch. Reads only `secrets` (a snapshot), so it may run in a worker thread."""
        source = self._secrets if secrets is None else secrets
        builder = self.builder([epoch], source)
        builder.step(len(source) + 1)
        return builder.tables[epoch]

    def builder(self, epochs: Iterable[int], secrets: Mapping[int, bytes]) -> TableBuilder:
        """A `TableBuilder` of the tables of `epochs` from `secrets` (a snapshot)."""
        return TableBuilder(self.fmt, self.direction, epochs, secrets)

    def snapshot(self) -> Mapping[int, bytes]:
        """The secrets as they are now, for a build in a worker thread: lent, not copied (O(1)); the index copies
        them before its next change, and `install` patches the tables for the devices changed meanwhile."""
        if self._lent is not self._secrets:
            self._lent = self._secrets
            self._changed = set()
        return self._secrets

    def install(
        self, current: int, tables: dict[int, dict[str, _Entry]], secrets: Mapping[int, bytes] | None = None
    ) -> None:
        """Swap in tables built by `build`; epochs no longer live are dropped.

        Devices changed since `secrets` was snapshotted are patched so the tables match `self._secrets`.
        """
        changed: Collection[int] = ()
        if secrets is not None and secrets is not self._secrets:
            # the devices changed since the snapshot: tracked for the last one lent, else every device compared
            changed = self._changed if secrets is self._lent else secrets.keys() | self._secrets.keys()
        live = set(self.window.live_epochs(current))
        self._by_epoch = {e: t for e, t in self._by_epoch.items() if e in live}
        for epoch, table in tables.items():
            if epoch in live:
                if secrets is not None:
                    self._patch(table, epoch, secrets, changed)
                self._by_epoch[epoch] = table
        self.current = current
        if secrets is not None and secrets is self._lent:  # that build is done with it
            self._lent, self._changed = None, set()

    def _patch(
        self, table: dict[str, _Entry], epoch: int, built_from: Mapping[int, bytes], changed: Iterable[int]
    ) -> None:
        for device_id in changed:
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


class TableBuilder:
    """Builds the tables of some epochs from a snapshot of the secrets, `step(n)` devices at a time (every epoch of a
    device at once), so the caller decides how long each slice holds the GIL. Pure: reads only the snapshot, which
    nothing changes while it is lent (`KeyIndex.snapshot`)."""

    def __init__(
        self, fmt: NumberFormat, direction: Direction, epochs: Iterable[int], secrets: Mapping[int, bytes]
    ) -> None:
        self.tables: dict[int, dict[str, _Entry]] = {e: {} for e in epochs}
        self._keyers = [(self.tables[e], significant_keyer(fmt, direction, e)) for e in self.tables]
        self._items: Iterator[tuple[int, bytes]] = iter(secrets.items())
        self.done = False

    def step(self, n: int) -> bool:
        """Index the next `n` devices; True once every device is in the tables."""
        for _ in range(n):
            item = next(self._items, None)
            if item is None:
                self.done = True
                return True
            device_id, secret = item
            for table, keyer in self._keyers:
                _add(table, keyer(secret), device_id)
        return False


def significant_keyer(fmt: NumberFormat, direction: Direction, epoch: int) -> Callable[[bytes], str]:
    """secret -> the significant part of its key of `epoch`: `fmt.significant(derive_key(secret, direction, epoch,
    fmt))`, with the HMAC message built once per epoch and, for decimal significant parts, the key rendered by one
    format call. Tests hold it equal to `derive_key`; lookups still confirm with `derive_key` itself."""
    msg = key_message(direction, epoch)
    size, k = fmt.size, fmt.significant_length
    digest, from_bytes = hmac.digest, int.from_bytes
    sha256 = hashlib.sha256
    if set(fmt.pattern[-k:]) == {"X"}:  # K decimal placeholders: the key's index, zero-padded
        spec = f"0{k}d"
        return lambda secret: format(from_bytes(digest(secret, msg, sha256)[:8], "big") % size, spec)
    render, significant = fmt.render, fmt.significant
    return lambda secret: significant(render(from_bytes(digest(secret, msg, sha256)[:8], "big") % size))


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
