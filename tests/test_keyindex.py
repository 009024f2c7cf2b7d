from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.vectors import COMPARISON, ROW_IDS, SPEC_SECRET

from asterisk_securelink.core.compare import matches
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.keyindex import Candidate, KeyIndex, Window, significant_keyer
from asterisk_securelink.core.numbers import classify
from asterisk_securelink.core.slk1 import Direction, SLK1Error, derive_key


def advance(idx: KeyIndex, current: int) -> int:
    """Make exactly the live epochs of `current` present, synchronously. Returns how many epochs were built."""
    missing = idx.missing(current)
    idx.install(current, {e: idx.build(e) for e in missing})
    return len(missing)


def secret(i: int) -> bytes:
    return hashlib.sha256(b"dev%d" % i).digest()


def make(n: int, fmt: str = "XXXXXXXXXX", behind: int = 1, ahead: int = 0) -> KeyIndex:
    idx = KeyIndex(Direction.INBOUND, NumberFormat(fmt), Window(30, 0, behind, ahead))
    for i in range(n):
        idx.set_device(i, secret(i))
    return idx


def naive(n: int, digits: str, epochs: range, fmt: str = "XXXXXXXXXX", trunk: tuple[str, ...] = ()) -> set[Candidate]:
    """Every device and epoch, compared one by one by the 1.1 rules."""
    f = NumberFormat(fmt)
    return {
        Candidate(i, e)
        for i in range(n)
        for e in epochs
        if matches(digits, f.significant(derive_key(secret(i), Direction.INBOUND, e, f)), f.literal_prefix, trunk)
    }


def test_live_epochs_only() -> None:
    idx = make(3, ahead=1)
    assert advance(idx, 100) == 3
    assert idx.epochs == [99, 100, 101]
    assert advance(idx, 101) == 1  # only the new epoch is built
    assert idx.epochs == [100, 101, 102]
    assert advance(idx, 101) == 0


def test_lookup_matches_naive_scan() -> None:
    idx = make(50)
    advance(idx, 1000)
    for dev in (0, 17, 49):
        for e in (999, 1000):
            key = derive_key(secret(dev), Direction.INBOUND, e, idx.fmt)
            assert set(idx.lookup(key)) == naive(50, key, range(999, 1001))
            assert Candidate(dev, e) in idx.lookup(key)
            assert idx.confirm(Candidate(dev, e), key)
    stale = derive_key(secret(3), Direction.INBOUND, 998, idx.fmt)
    assert Candidate(3, 998) not in idx.lookup(stale)
    outbound = derive_key(secret(3), Direction.OUTBOUND, 1000, idx.fmt)
    assert Candidate(3, 1000) not in idx.lookup(outbound)


def test_plus_formats_are_indexed_by_digits() -> None:
    idx = make(5, fmt="+1NXXNXXXXXX")
    advance(idx, 7)
    key = derive_key(secret(2), Direction.INBOUND, 7, idx.fmt)
    assert key.startswith("+1")
    assert idx.lookup(key[1:]) == [Candidate(2, 7)]


def test_rotation_and_removal_take_effect_in_live_tables() -> None:
    idx = make(4)
    advance(idx, 50)
    old = derive_key(secret(1), Direction.INBOUND, 50, idx.fmt)
    new_secret = hashlib.sha256(b"rotated").digest()
    idx.set_device(1, new_secret)
    assert idx.lookup(old) == []
    new = derive_key(new_secret, Direction.INBOUND, 50, idx.fmt)
    assert idx.lookup(new) == [Candidate(1, 50)]
    idx.set_device(1, None)
    assert idx.lookup(new) == []
    assert len(idx) == 3


def test_collisions_keep_every_device() -> None:
    # 10^6 keys and 3000 devices: about 4.5 colliding pairs per epoch
    idx = make(3000, fmt="XXXXXX", behind=0)
    advance(idx, 1)
    f = NumberFormat("XXXXXX")
    by_key: dict[str, list[int]] = {}
    for i in range(3000):
        by_key.setdefault(derive_key(secret(i), Direction.INBOUND, 1, f), []).append(i)
    collided = {k: v for k, v in by_key.items() if len(v) > 1}
    assert collided, "expected at least one collision at this density"
    for key, devices in collided.items():
        assert sorted(c.device_id for c in idx.lookup(key)) == sorted(devices)
    # removing one colliding device leaves the other
    key, devices = next(iter(collided.items()))
    idx.set_device(devices[0], None)
    assert [c.device_id for c in idx.lookup(key)] == devices[1:]


def test_install_patches_devices_changed_during_a_background_build() -> None:
    idx = make(3)
    advance(idx, 10)
    snapshot = idx.snapshot()
    tables = {11: idx.build(11, snapshot)}
    idx.set_device(0, None)  # removed while the table was being built
    idx.set_device(7, secret(7))  # added meanwhile
    idx.install(11, tables, snapshot)
    assert Candidate(0, 11) not in idx.lookup(derive_key(secret(0), Direction.INBOUND, 11, idx.fmt))
    assert idx.lookup(derive_key(secret(7), Direction.INBOUND, 11, idx.fmt)) == [Candidate(7, 11)]


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 39), st.integers(0, 10**6), st.text(alphabet="0123456789", min_size=10, max_size=10))
def test_lookup_equals_naive_for_any_number(dev: int, epoch: int, noise: str) -> None:
    idx = make(40)
    advance(idx, epoch)
    live = range(max(0, epoch - 1), epoch + 1)
    real = derive_key(secret(dev), Direction.INBOUND, epoch, idx.fmt)
    for digits in (real, noise):
        assert set(idx.lookup(digits)) == naive(40, digits, live)


@pytest.mark.parametrize(("pattern", "key", "presented", "trunk", "expected"), COMPARISON, ids=ROW_IDS)
def test_every_comparison_vector_through_the_index(
    pattern: str, key: str, presented: str, trunk: tuple[str, ...], expected: bool
) -> None:
    idx = KeyIndex(Direction.INBOUND, NumberFormat(pattern), Window(30, 0, 1, 1), trunk)
    idx.set_device(1, SPEC_SECRET)
    advance(idx, 0)  # live epochs 0 and 1; the table's key is epoch 0's
    digits = classify(presented).digits
    found = [c for c in idx.lookup(digits) if idx.confirm(c, digits)]
    assert found == ([Candidate(1, 0)] if expected else [])


def test_the_index_is_keyed_by_the_significant_part() -> None:
    idx = make(20, fmt="+1NXXNXXXXXX")
    advance(idx, 7)
    key = derive_key(secret(4), Direction.INBOUND, 7, idx.fmt)
    assert all(len(k) == 10 for table in idx._by_epoch.values() for k in table)
    for form in (key[1:], key[2:], "1" + key[2:]):  # international, national, with the country code
        assert idx.lookup(form) == [Candidate(4, 7)] and idx.confirm(Candidate(4, 7), form)
    assert idx.lookup("011" + key[1:]) == []  # no trunk prefix configured
    assert idx.lookup(key[3:]) == []  # fewer than K digits


class CountingDict(dict[str, object]):
    gets = 0

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        CountingDict.gets += 1
        return super().get(key, default)


def test_one_lookup_per_live_table_whatever_the_form_or_the_population() -> None:
    for n in (10, 1000):
        idx = make(n, fmt="+1NXXNXXXXXX")
        idx.trunk_prefixes = ("0", "011")
        advance(idx, 7)
        idx._by_epoch = {e: CountingDict(t) for e, t in idx._by_epoch.items()}  # type: ignore[misc]
        key = derive_key(secret(3), Direction.INBOUND, 7, idx.fmt)
        for form in (key[1:], key[2:], "011" + key[1:]):
            CountingDict.gets = 0
            assert Candidate(3, 7) in idx.lookup(form)
            assert CountingDict.gets == len(idx.epochs)  # one dict lookup per live epoch, not one per form


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 29), st.integers(0, 10**6), st.text(alphabet="0123456789", min_size=3, max_size=14))
def test_lookup_equals_the_naive_1_1_comparison_with_trunk_prefixes(dev: int, epoch: int, noise: str) -> None:
    trunk = ("0", "011", "1")
    idx = KeyIndex(Direction.INBOUND, NumberFormat("+1NXXNXXXXXX"), Window(30, 0, 1, 1), trunk)
    for i in range(30):
        idx.set_device(i, secret(i))
    advance(idx, epoch)
    live = range(max(0, epoch - 1), epoch + 2)
    real = derive_key(secret(dev), Direction.INBOUND, epoch, idx.fmt)
    for digits in (real[1:], real[2:], "011" + real[1:], noise):
        found = {c for c in idx.lookup(digits) if idx.confirm(c, digits)}
        assert found == naive(30, digits, live, "+1NXXNXXXXXX", trunk)


@pytest.mark.parametrize("pattern", ["XXXXXXXXXX", "+1NXXNXXXXXX", "XXXXXX", "0XXXX5XXXX", "+44ZXXXXXXXXX"])
@pytest.mark.parametrize("direction", list(Direction))
def test_the_table_keyer_renders_what_derive_key_renders(pattern: str, direction: Direction) -> None:
    fmt = NumberFormat(pattern)
    for epoch in (0, 1, 59_666_666, 2**64 - 1):
        key = significant_keyer(fmt, direction, epoch)
        for i in range(50):
            assert key(secret(i)) == fmt.significant(derive_key(secret(i), direction, epoch, fmt))
    with pytest.raises(SLK1Error):
        significant_keyer(fmt, direction, 2**64)


def test_a_table_built_in_slices_equals_one_built_at_once() -> None:
    idx = make(300, fmt="XXXXXX", ahead=1)  # 10^6 keys: a few collisions among 300 devices x 3 epochs
    builder = idx.builder([9, 10, 11], idx.snapshot())
    steps = 1
    while not builder.step(7):
        steps += 1
    assert steps == 43 and builder.done
    assert builder.tables == {e: idx.build(e) for e in (9, 10, 11)}


def test_a_snapshot_is_lent_and_never_changed_by_later_changes() -> None:
    idx = make(3)
    advance(idx, 10)
    snapshot = idx.snapshot()
    assert snapshot is idx.snapshot()  # lent, not copied
    before = dict(snapshot)
    idx.set_device(1, None)
    idx.set_device(9, secret(9))
    idx.set_device(2, hashlib.sha256(b"rotated").digest())
    assert dict(snapshot) == before  # copied on write: a build reading it sees one consistent state
    idx.install(11, {11: idx.build(11, snapshot)}, snapshot)
    assert idx.lookup(derive_key(secret(1), Direction.INBOUND, 11, idx.fmt)) == []
    assert idx.lookup(derive_key(secret(2), Direction.INBOUND, 11, idx.fmt)) == []
    assert idx.lookup(derive_key(secret(9), Direction.INBOUND, 11, idx.fmt)) == [Candidate(9, 11)]
    rotated = derive_key(hashlib.sha256(b"rotated").digest(), Direction.INBOUND, 11, idx.fmt)
    assert idx.lookup(rotated) == [Candidate(2, 11)]
    assert idx.build(11) == idx._by_epoch[11]  # the patched table is what a fresh build gives


def test_an_older_snapshot_is_patched_by_comparing_every_device() -> None:
    idx = make(4)
    advance(idx, 20)
    old = idx.snapshot()
    idx.set_device(0, None)
    newer = idx.snapshot()  # lent in turn: changes now tracked against this one
    idx.set_device(3, None)
    idx.install(21, {21: idx.build(21, old)}, old)  # built before both changes
    assert idx._by_epoch[21] == idx.build(21)
    idx.install(22, {22: idx.build(22, newer)}, newer)
    assert idx._by_epoch[22] == idx.build(22)


def test_a_short_secret_is_refused() -> None:
    idx = make(1)
    with pytest.raises(SLK1Error):
        idx.set_device(5, b"short")
    assert len(idx) == 1
