"""The device's inbound presentation, SLK1.md 1.1 revision 2 ("Inbound presentation"): the margin test is on the
epoch presented (it differs from revision 1 only with look_ahead 0) and the clock correction is stored before it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.device_cli import run
from support.vectors import prov

from asterisk_securelink.device.reference import BurstUsedUp, DeviceState, inbound_epoch, inbound_key, present_inbound


# -- revision 2: the margin test is on the epoch presented, after the correction is stored -----------------------
def test_with_look_ahead_0_no_key_in_the_first_2_seconds_of_a_period() -> None:
    """`p <= epoch(now - 2000) + look_ahead` with p = current: a platform 2 s behind is still in the previous period.
    Revision 1 code tested L + 1 and so presented the key of epoch 101 at once."""
    p = prov(look_ahead=0)
    for last in (None, 50, 99):
        with pytest.raises(BurstUsedUp) as early:
            inbound_key(p, 3_030_000, last=last)
        assert early.value.wait_ms == 2_000 and early.value.burst_size == 1
        with pytest.raises(BurstUsedUp) as almost:
            inbound_key(p, 3_031_999, last=last)
        assert almost.value.wait_ms == 1
        assert inbound_key(p, 3_032_000, last=last).epoch == 101  # past the margin
    assert inbound_key(p, 3_059_999, last=100).epoch == 101


def test_with_look_ahead_1_the_current_epoch_is_never_held_back() -> None:
    p = prov(look_ahead=1)
    assert inbound_key(p, 3_030_000).epoch == 101 and inbound_key(p, 3_030_000, last=99).epoch == 101


@given(st.integers(0, 3), st.integers(0, 10**7), st.one_of(st.none(), st.integers(0, 400)), st.integers(5, 60))
def test_the_presentation_is_the_spec_s_steps(look_ahead: int, now: int, last: int | None, period: int) -> None:
    p = prov(look_ahead=look_ahead, period=period)
    current = now // (period * 1000)
    if last is not None and last > current + look_ahead:
        last = current - 1  # the correction first
    epoch = current if last is None else max(current, last + 1)
    floor = (now - 2000) // (period * 1000)
    try:
        got = inbound_epoch(p, now, None if last is None else last)
    except BurstUsedUp as wait:
        assert epoch > floor + look_ahead
        assert wait.wait_ms > 0 and inbound_epoch(p, now + wait.wait_ms, last) == epoch  # ready exactly then
        with pytest.raises(BurstUsedUp):
            inbound_epoch(p, now + wait.wait_ms - 1, last)
        return
    assert epoch <= floor + look_ahead and got == epoch


def test_the_correction_is_stored_even_when_no_key_follows() -> None:
    """Revision 2: `L = current - 1` is stored before the test. Here L = 102 at epoch 100 with look_ahead 0: the
    correction gives L = 99, and in the first 2 s of epoch 100 the test refuses; the state to keep says 99."""
    p = prov(look_ahead=0)
    state = DeviceState(p.key_id, p.period, p.t0, last_inbound=102)
    with pytest.raises(BurstUsedUp) as wait:
        present_inbound(p, state, 3_000_500)
    assert wait.value.last == 99 and wait.value.state == replace(state, last_inbound=99)
    k, after = present_inbound(p, wait.value.state, 3_002_000)
    assert (k.epoch, after.last_inbound) == (100, 100)
    # why it is stored: at epoch 102, L = 102 is no longer above current + look_ahead, so without the stored
    # correction the device would present 103 (not before epoch 103 + 2 s); with it, 102 as soon as the margin allows
    with pytest.raises(BurstUsedUp) as late:
        present_inbound(p, state, 3_062_000)
    assert late.value.wait_ms == 30_000
    assert present_inbound(p, wait.value.state, 3_062_000)[0].epoch == 102


def test_no_state_to_store_when_nothing_was_corrected() -> None:
    p = prov()
    state = DeviceState(p.key_id, p.period, p.t0, last_inbound=101)
    with pytest.raises(BurstUsedUp) as wait:
        present_inbound(p, state, 3_010_000)
    assert wait.value.state is None and wait.value.last == 101


# -- the device CLI keeps the corrected state and still shows a key without one ------------------------------------
def test_cli_stores_the_correction_though_no_key_follows(tmp_path: Path) -> None:
    uri = tmp_path / "d.uri"
    uri.write_text(prov(look_ahead=0).uri())
    uri.chmod(0o600)
    state = tmp_path / "phone.state"
    early = run("key", str(uri), "--state", str(state), "--at", "3060.5")  # epoch 102, 0.5 s in: look_ahead 0 waits
    assert early.returncode == 1 and "1.5 s" in early.stdout
    assert run("key", str(uri), "--state", str(state), "--at", "3062").returncode == 0
    assert json.loads(state.read_text())["last_inbound_epoch"] == 102
    back = run("key", str(uri), "--state", str(state), "--at", "3000.5", "--json")  # the clock was ahead: epoch 100
    assert back.returncode == 1 and json.loads(back.stdout)["last_inbound_epoch"] == 99
    assert json.loads(state.read_text())["last_inbound_epoch"] == 99  # revision 1 code: 102 kept


def test_cli_key_without_a_state_shows_the_key_presentable_after_the_margin(tmp_path: Path) -> None:
    uri = tmp_path / "d.uri"
    uri.write_text(prov(look_ahead=0).uri())
    uri.chmod(0o600)
    shown = run("key", str(uri), "--at", "3000", "--json")
    assert shown.returncode == 0 and "Traceback" not in shown.stderr
    row = json.loads(shown.stdout)
    assert (row["epoch"], row["at_ms"]) == (100, 3_002_000)
    watched = run("key", str(uri), "--at", "2990", "--count", "3")
    epochs = [line.split()[2] for line in watched.stdout.splitlines()]
    assert watched.returncode == 0 and epochs == ["99,", "100,", "101,"]
