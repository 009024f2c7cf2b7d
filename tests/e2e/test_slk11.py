"""SLK1 1.1 on the real Asterisk: carrier number forms, burst (a redial within one period) and the PBX's two outbound
calls within one period, with the device reference (`device.reference`) as the phone.

SIPp places the calls through the testbed's carrier endpoint (tests/e2e/sipp.py); routes as in test_inbound.py
(1XX: ANI via Stasis) and test_outbound.py (6 + device id: the mobile, SIPp UAS on 5070 as the carrier). This module's
installation: inbound format `+1NXXNXXXXXX`, trunk prefixes `0` and `011`, a 10 s period (room for several calls in
one period), look_behind 1 and look_ahead 1 (the 1.1 defaults).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from subprocess import Popen
from typing import Any

import pytest
from harness import Home, new_home, no_channels_left, wait_until
from sipp import UasProcess, run_uac

from asterisk_securelink.core.provisioning import Provisioning
from asterisk_securelink.core.slk1 import epoch_at_ms, now_ms
from asterisk_securelink.device import reference as phone

PERIOD = 10
ANI = "100"
CALLER = "15557770000"
KEYS = f"""[keys]
period = {PERIOD}
inbound_format = "+1NXXNXXXXXX"
trunk_prefixes = ["0", "011"]
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    h = new_home(tmp_path_factory.mktemp("securelink-slk11"))
    toml = h.path / "securelink.toml"
    text = toml.read_text()
    assert "[keys]\nperiod = 5\n" in text
    toml.write_text(
        text.replace("[keys]\nperiod = 5\n", KEYS)
        + '[outbound]\nendpoint = "PJSIP/{number}@carrier"\nring_timeout = 5\n'
    )
    yield h
    for p in h.procs:
        h.stop(p)


def enroll(home: Home, name: str, number: str) -> tuple[dict[str, Any], Provisioning]:
    dev = home.add_device(name, number)
    return dev, phone.load(str(dev["provisioning_uri"]))


def calls(*pairs: tuple[str, str]) -> list[int | None]:
    return [r.status_code for r in run_uac(list(pairs), rate=20, timeout=30)]


def verdicts(home: Home, since: int, n: int) -> list[str]:
    """The verdicts audited after row `since`, once there are `n` (audit rows are written in the background)."""
    wait_until(lambda: len([e for e in home.audit() if e["id"] > since]) >= n, 10, f"{n} audit rows")
    return [e["result"] for e in home.audit() if e["id"] > since]


def last_audit_id(home: Home) -> int:
    rows = home.audit()
    return int(rows[-1]["id"]) if rows else 0


def into_period(after_ms: int = 2100, need_ms: int = 6000) -> int:
    """Wait until `after_ms` into a period with `need_ms` of it left (the phone presents its second key of a period
    only 2 s into it: SLK1.md's margin); returns that period's epoch."""
    now = now_ms()
    pos = now % (PERIOD * 1000)
    if pos > PERIOD * 1000 - need_ms:
        time.sleep((PERIOD * 1000 - pos + after_ms) / 1000)
    elif pos < after_ms:
        time.sleep((after_ms - pos) / 1000)
    return epoch_at_ms(now_ms(), PERIOD)


def test_a_genuine_key_in_carrier_forms_is_admitted(home: Home, app: Popen[bytes]) -> None:
    """The phone presents `+1NXXNXXXXXX`; the carrier delivers it national, behind a trunk prefix, with separators."""
    national, trunk, separators = (enroll(home, f"Form {i}", f"+1555020000{i}")[1] for i in range(3))
    into_period()
    t = now_ms()
    k1, k2, k3 = (phone.inbound_key(p, t).key for p in (national, trunk, separators))
    assert all(k.startswith("+1") and len(k) == 12 for k in (k1, k2, k3))
    delivered = [
        k1[2:],  # national: 2677638475
        "011" + k2[1:],  # international prefix 011 (a configured trunk prefix): 0112677638475
        f"({k3[2:5]}){k3[5:8]}-{k3[8:]}",  # separators: (267)763-8475
    ]
    since = last_audit_id(home)
    assert calls(*((number, ANI) for number in delivered)) == [200, 200, 200]
    assert verdicts(home, since, 3) == ["admitted"] * 3
    since = last_audit_id(home)
    assert calls(("0" + k1[2:], ANI)) == [403]  # the same key again, in yet another form: spent
    assert calls(("00" + k2[1:], ANI)) == [403]  # 00 is not a configured trunk prefix: not a form of the key
    assert verdicts(home, since, 2) == ["replayed", "mismatch"]
    no_channels_left()


def test_a_redial_within_the_period_is_admitted_and_a_third_call_is_not_placed(home: Home, app: Popen[bytes]) -> None:
    dev, prov = enroll(home, "Burst", "+15550200010")
    state = phone.state_for(prov, None)
    since = last_audit_id(home)  # before the period starts: the calls below must fit in it
    epoch = into_period()
    first, state = phone.present_inbound(prov, state, now_ms())
    assert (first.epoch, first.burst, first.burst_size) == (epoch, 1, 2)
    assert calls((first.present, ANI)) == [200]
    second, state = phone.present_inbound(prov, state, now_ms())  # the redial, right after: the next key
    assert (second.epoch, second.burst) == (epoch + 1, 2)
    assert calls((second.present, ANI)) == [200]
    with pytest.raises(phone.BurstUsedUp) as used_up:  # a conforming phone places no third keyed call
        phone.present_inbound(prov, state, now_ms())
    assert 0 < used_up.value.wait_ms <= PERIOD * 1000 + phone.MARGIN_MS
    assert calls((second.present, ANI), (first.present, ANI)) == [403, 403]  # a non-conforming replay
    assert epoch_at_ms(now_ms(), PERIOD) == epoch, "the calls took longer than one period"
    assert verdicts(home, since, 4) == ["admitted", "admitted", "replayed", "replayed"]
    assert all(e["device"] == dev["id"] for e in home.audit() if e["id"] > since)
    no_channels_left()


def test_the_pbx_two_outbound_calls_within_one_period_are_both_genuine_for_the_phone(
    home: Home, app: Popen[bytes]
) -> None:
    dev, prov = enroll(home, "Outbound burst", "+15550200020")
    state = phone.state_for(prov, None)
    epoch = into_period(after_ms=200)
    with UasProcess(5070, mode="answer", ring_ms=200) as mobile:
        assert calls((CALLER, f"6{dev['id']}")) == [200]
        assert calls((CALLER, f"6{dev['id']}")) == [200]
        presented = [inv.from_user for inv in mobile.invites_to("+15550200020")]
    assert epoch_at_ms(now_ms(), PERIOD) == epoch, "the calls took longer than one period"
    assert len(presented) == 2 and presented[0] != presented[1]
    results = []
    for number in presented:  # in the order the phone received them
        result = phone.check(prov, number, now_ms(), state.outbound_high_water)
        results.append((result.status, result.epoch))
        state = phone.accept(state, result)
    assert results == [(phone.CheckStatus.GENUINE, epoch), (phone.CheckStatus.GENUINE, epoch + 1)]
    again = phone.check(prov, presented[0], now_ms(), state.outbound_high_water)
    assert again.status is phone.CheckStatus.REPLAYED  # and neither is accepted twice
    no_channels_left()
