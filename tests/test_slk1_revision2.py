"""The platform side of SLK1.md 1.1 revision 2: `D` of the strength figure counts only the devices in the lookup,
"the same call" is recognised only while it made the latest spend, and the device's outbound window is fixed (it does
not follow look_behind or look_ahead; the platform's, at most current + 1, is test_store's)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from support.clock import Clock, S, T
from support.services import cfg, key, make_service, registered, verify
from support.vectors import prov

from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.slk1 import Direction, derive_key
from asterisk_securelink.core.verdicts import Verdict
from asterisk_securelink.device.reference import CheckStatus, check, outbound_epochs
from asterisk_securelink.store.store import Store


# -- D: the devices whose keys are looked up (not suspended, not revoked) --------------------------------------------
async def _four_of_each_status(store: Store) -> None:
    await store.add_device("P", "+15550001110", None, "kid-p", "t")  # provisioned: in the lookup
    await registered(store, "R", "+15550001111", "kid-r")  # registered: in the lookup
    s = await registered(store, "S", "+15550001112", "kid-s")
    await store.update_device(s.id, "device.suspend", "t", status="suspended")
    r = await registered(store, "X", "+15550001113", "kid-x")
    await store.update_device(r.id, "device.revoke", "t", status="revoked")


async def test_d_counts_the_devices_in_the_lookup(store: Store) -> None:
    await _four_of_each_status(store)
    assert await store.count_lookup_devices() == 2
    assert await store.count_live_devices() == 3  # the key settings still care for a suspended device's keys


async def test_doctor_s_strength_and_budget_use_that_d(store: Store, tmp_path: Path) -> None:
    """Revision 1 code counted the suspended device too (D = 3)."""
    from asterisk_securelink.doctor import budget_checks, key_checks

    await _four_of_each_status(store)
    c = cfg(tmp_path, database={"url": store.engine.url.render_as_string(hide_password=False)})
    strength, _ = await key_checks(c, store)
    assert "D=2 devices" in strength.detail
    assert f"2^-{math.log2(10**10 / (3 * 2)):.1f}" in strength.detail
    (budget,) = await budget_checks(c, store)
    assert "W*D/S = 3*2/" in budget.detail


async def test_the_live_index_counts_the_same_d(store: Store, tmp_path: Path) -> None:
    await _four_of_each_status(store)
    svc = make_service(cfg(tmp_path), store, clock_ms=Clock(T))
    await svc.start()
    assert svc.keys.strength_inputs()[2] == 2
    assert svc.keys.strength() == pytest.approx(math.log2(10**10 / (3 * 2)))


# -- "the same call": only while it made the latest spend -------------------------------------------------------------
async def test_the_same_call_is_recognised_only_while_it_made_the_latest_spend(store: Store) -> None:
    d = await store.add_device("A", "+15550001110", None, "kid", "t")
    assert await store.spend(d.id, Direction.INBOUND, 100, "node/call-1", 0)
    assert await store.spend(d.id, Direction.INBOUND, 100, "node/call-1", 0)  # a retransmission: the same call
    assert await store.spend(d.id, Direction.INBOUND, 101, "node/call-2", 1)  # another call spends a later epoch
    assert not await store.spend(d.id, Direction.INBOUND, 100, "node/call-1", 0)  # the earlier call again: replayed
    assert not await store.spend(d.id, Direction.INBOUND, 101, "node/call-1", 0)  # nor may it take 101
    assert await store.spend(d.id, Direction.INBOUND, 101, "node/call-2", 1)  # the latest spender still is


async def test_a_re_entry_after_another_call_s_spend_is_replayed(store: Store, tmp_path: Path) -> None:
    c = cfg(tmp_path)
    d = await registered(store, "A", "+15550001110", "kid-a")
    svc = make_service(c, store, clock_ms=Clock(T))
    await svc.start()
    now, ahead = key(d, T, c), key(d, T + 30 * S, c)
    assert await verify(svc, now, call_id="c1") is Verdict.ADMITTED
    assert await verify(svc, ahead, call_id="c2") is Verdict.ADMITTED  # the burst: the next epoch
    assert await verify(svc, now, call_id="c1") is Verdict.REPLAYED  # c1 no longer made the latest spend
    assert await verify(svc, ahead, call_id="c2") is Verdict.ADMITTED


# -- the outbound windows are fixed ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("behind", "ahead"), [(0, 0), (1, 1), (10, 10), (0, 5)])
def test_the_device_s_outbound_window_is_e_minus_1_to_e_plus_1_whatever_the_windows(behind: int, ahead: int) -> None:
    p = replace(prov(outbound="XXXXXXXXXX"), look_behind=behind, look_ahead=ahead)
    now = 100 * 30_000 + 10_000
    assert sorted(outbound_epochs(p, now)) == [99, 100, 101]
    fmt = NumberFormat("XXXXXXXXXX")
    for epoch, status in ((98, CheckStatus.NOT_GENUINE), (99, CheckStatus.GENUINE), (101, CheckStatus.GENUINE),
                          (102, CheckStatus.NOT_GENUINE)):  # fmt: skip
        assert check(p, derive_key(p.secret, Direction.OUTBOUND, epoch, fmt), now).status is status


# -- numbers the configuration names are E.164 by the same rule: + and 8-15 digits -------------------------------
@pytest.mark.parametrize(
    ("section", "problem"),
    [({"calling": {"access_numbers": ["+1215555"]}}, "calling.access_numbers: '+1215555': an international number"),
     ({"outbound": {"present": "number", "present_number": "+1555"}}, "outbound.present_number: an international")],
)  # fmt: skip
def test_configured_numbers_need_8_to_15_digits(tmp_path: Path, section: dict[str, object], problem: str) -> None:
    """Revision 1 code took 3-15 digits."""
    from asterisk_securelink import config

    with pytest.raises(config.ConfigError, match=problem.replace("+", r"\+")):
        config.build(section, {}, tmp_path)  # type: ignore[arg-type]
