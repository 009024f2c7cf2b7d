"""The device reference (`device/reference.py`): it computes what the platform accepts, checks what it presents.

SLK1 1.1 on the device: integer time, the burst (the last inbound epoch `L` and the margin rule), the outbound
high-water mark, the comparison with the provisioning's trunk prefixes. The platform side in these tests is the
platform's own code: `VerificationService` on a real SQLite store for inbound keys, `Store.next_outbound_epoch` + the
SLK1 outbound derivation for the outbound keys the PBX presents. The command is in test_device_cli.py.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.clock import Clock, T
from support.keys import MASTER
from support.services import make_service
from support.vectors import BURST, COMPARISON, ROW_IDS, SPEC_SECRET, prov

from asterisk_securelink import config
from asterisk_securelink.config import Config
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.provisioning import Provisioning, ProvisioningError
from asterisk_securelink.core.slk1 import (
    Direction,
    SLK1Error,
    derive_key,
    device_secret,
    epoch_at_ms,
    epoch_start_ms,
    seconds_to_ms,
)
from asterisk_securelink.core.verdicts import Verdict
from asterisk_securelink.device import reference as device
from asterisk_securelink.device.reference import (
    BurstUsedUp,
    CheckResult,
    CheckStatus,
    DeviceState,
    check,
    inbound_key,
    outbound_epochs,
    present_inbound,
)
from asterisk_securelink.inbound.service import VerifyRequest
from asterisk_securelink.provision import device_params
from asterisk_securelink.store.store import DeviceRow, Store

FORMATS = ("XXXXXXXXXX", "+1NXXNXXXXXX", "555XXXXXXX", "9ZXXXXXXXX")


def outbound(p: Provisioning, epoch: int) -> str:
    """The PBX's outbound key of `epoch`, as the platform renders it."""
    return derive_key(p.secret, Direction.OUTBOUND, epoch, NumberFormat(p.outbound_format))


def outbound_keyer(master_key: bytes, fmt: NumberFormat) -> Callable[[str, int], str]:
    """The PBX's outbound keyer, as the service's `outbound_key`: the device secret from the master key, then SLK1."""

    def key(key_id: str, epoch: int) -> str:
        return derive_key(device_secret(master_key, key_id), Direction.OUTBOUND, epoch, fmt)

    return key


# -- spec vectors (SLK1.md, "Test vectors") --------------------------------------------------------------------
INBOUND_VECTORS = [
    (0, "6141638475", "+12677638475", "5551638475", "9941638475"),
    (1, "5193065513", "+13993065513", "5553065513", "9993065513"),
    (59682345, "3264874290", "+13582874290", "5554874290", "9664874290"),
    (1099511627776, "3805726724", "+15757726724", "5555726724", "9705726724"),
]
OUTBOUND_VECTORS = [
    (0, "6161835209", "+13203835209", "5551835209", "9761835209"),
    (1, "5575039342", "+19469039342", "5555039342", "9675039342"),
    (59682345, "6889726154", "+13113726154", "5559726154", "9289726154"),
    (1099511627776, "9940020971", "+12426020971", "5550020971", "9240020971"),
]


@pytest.mark.parametrize(("epoch", "keys"), [(v[0], v[1:]) for v in INBOUND_VECTORS])
def test_inbound_key_matches_the_spec_vectors(epoch: int, keys: tuple[str, ...]) -> None:
    for fmt, expected in zip(FORMATS, keys, strict=True):
        for at in (epoch * 30_000, epoch * 30_000 + 29_999):  # first and last millisecond of the window
            k = inbound_key(prov(inbound=fmt), at)
            assert (k.key, k.epoch, k.burst) == (expected, epoch, 1)
            assert k.digits == expected.lstrip("+") and k.present == expected


@pytest.mark.parametrize(("epoch", "keys"), [(v[0], v[1:]) for v in OUTBOUND_VECTORS])
def test_check_accepts_the_spec_outbound_vectors(epoch: int, keys: tuple[str, ...]) -> None:
    for fmt, expected in zip(FORMATS, keys, strict=True):
        assert check(prov(outbound=fmt), expected, epoch * 30_000 + 1) == CheckResult(CheckStatus.GENUINE, epoch, 0)


@pytest.mark.parametrize(
    ("at", "period", "epoch"),
    [("1790000000.5", 30, 59666666), ("1790000000.5", 5, 358000000), ("1790000029.999", 30, 59666667),
     ("1790000030", 30, 59666667), ("59.9", 60, 0)],
)  # fmt: skip
def test_epochs_match_the_informative_vectors(at: str, period: int, epoch: int) -> None:
    assert inbound_key(prov(period=period), seconds_to_ms(at)).epoch == epoch


@pytest.mark.parametrize(
    ("t_ms", "epoch"),
    [(1790000029999, 59666667), (1790000030000, 59666667), (32985348833279999, 1099511627775),
     (32985348833280000, 1099511627776)],
)  # fmt: skip
def test_epochs_match_the_integer_vectors(t_ms: int, epoch: int) -> None:
    assert inbound_key(prov(), t_ms).epoch == epoch
    assert check(prov(), outbound(prov(), epoch), t_ms).epoch == epoch


def test_window_bounds_and_seconds_left_with_an_epoch_origin() -> None:
    p = prov(period=5, t0=1_000)
    k = inbound_key(p, 1_012_250)  # 12.25 s after t0: epoch 2, window [1010, 1015)
    assert (k.epoch, k.valid_from, k.valid_until, k.seconds_left) == (2, 1010.0, 1015.0, 2.75)
    assert (k.valid_from_ms, k.valid_until_ms, k.at_ms) == (1_010_000, 1_015_000, 1_012_250)
    assert inbound_key(p, 1_015_000).epoch == 3 and inbound_key(p, 1_015_000).seconds_left == 5.0
    with pytest.raises(SLK1Error):
        inbound_key(p, 999_999)  # before t0: no epoch
    with pytest.raises(SLK1Error):
        inbound_key(p, 1_012.25)  # type: ignore[arg-type]  # seconds as a float: not milliseconds


def test_load_parses_the_uri_and_refuses_junk() -> None:
    p = prov(inbound="+1NXXNXXXXXX", trunk=("0", "011"))
    assert device.load(p.uri()) == p
    with pytest.raises(ProvisioningError):
        device.load("securelink://provision?v=1.1")
    for padded in (f"  {p.uri()}", f"{p.uri()}\n", f"\t{p.uri()}\r\n"):  # revision 2: never deleted silently
        with pytest.raises(ProvisioningError, match="RFC 3986"):
            device.load(padded)


def test_a_1_0_provisioning_gets_no_burst() -> None:
    old = (
        "securelink://provision?v=1&alg=SLK1&device=7&key_id=vector&secret=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
        "&period=30&t0=0&in=XXXXXXXXXX&out=XXXXXXXXXX&behind=1&ahead=0"
    )
    p = device.load(old)
    first = inbound_key(p, 3_010_000)
    assert (first.epoch, first.burst, first.burst_size) == (100, 1, 1)
    with pytest.raises(BurstUsedUp) as wait:
        inbound_key(p, 3_010_000, last=100)  # a redial within the period: the PBX (look_ahead 0) would refuse it
    assert wait.value.wait_ms == 3_032_000 - 3_010_000
    assert inbound_key(p, 3_032_000, last=100).epoch == 101


# -- the burst (SLK1.md 1.1, "Inbound presentation" and the burst vectors, support/vectors.py) -------------------
@pytest.mark.parametrize("epoch", sorted(BURST))
def test_the_burst_vectors(epoch: int) -> None:
    for i, (direction, fmt) in enumerate(
        [("inbound", "XXXXXXXXXX"), ("inbound", "+1NXXNXXXXXX"), ("outbound", "XXXXXXXXXX"),
         ("outbound", "+1NXXNXXXXXX")]
    ):  # fmt: skip
        assert derive_key(SPEC_SECRET, direction, epoch, NumberFormat(fmt)) == BURST[epoch][i]


@pytest.mark.parametrize("now", [3_002_000, 3_015_000, 3_029_999])  # epoch 100, past the 2 s margin
def test_the_spec_burst_sequence_on_the_device(now: int) -> None:
    p = prov()  # look_behind 1, look_ahead 1, period 30
    state = DeviceState(p.key_id, p.period, p.t0)
    first, state = present_inbound(p, state, now)
    assert (first.key, first.epoch, first.burst, first.burst_size) == (BURST[100][0], 100, 1, 2)
    second, state = present_inbound(p, state, now)  # a redial right after the call is admitted
    assert (second.key, second.epoch, second.burst) == (BURST[101][0], 101, 2)
    assert state.last_inbound == 101
    with pytest.raises(BurstUsedUp) as third:  # a conforming device places no third keyed call in epoch 100
        present_inbound(p, state, now)
    assert third.value.wait_ms == 3_032_000 - now  # until epoch(now - 2000) + look_ahead reaches 102
    assert "2 keyed calls" in str(third.value) and "s" in str(third.value)
    # the outbound side of the same sequence: the PBX presents 100, then 101; the device accepts 100, then 101,
    # and refuses 100 after 101
    a = check(p, BURST[100][2], now)
    assert a == CheckResult(CheckStatus.GENUINE, 100, 0)
    state = device.accept(state, a)
    b = check(p, BURST[101][2], now, state.outbound_high_water)
    assert b == CheckResult(CheckStatus.GENUINE, 101, 1)
    state = device.accept(state, b)
    assert check(p, BURST[100][2], now, state.outbound_high_water) == CheckResult(CheckStatus.REPLAYED, 100, 0)
    assert state.outbound_high_water == 101


def test_the_burst_waits_out_the_margin_and_is_one_call_per_period_sustained() -> None:
    p = prov()
    assert inbound_key(p, 3_000_000, last=99).epoch == 100  # the first call of the period: no wait
    with pytest.raises(BurstUsedUp) as early:  # 101 now: a platform 2 s behind (epoch 99) would not accept it yet
        inbound_key(p, 3_000_000, last=100)
    assert early.value.wait_ms == 2_000
    assert inbound_key(p, 3_002_000, last=100).epoch == 101
    with pytest.raises(BurstUsedUp) as late:
        inbound_key(p, 3_031_999, last=101)  # epoch 101, still within the margin
    assert late.value.wait_ms == 1
    k = inbound_key(p, 3_032_000, last=101)
    assert (k.epoch, k.burst) == (102, 2)  # one call in epoch 101: the burst was spent ahead
    assert inbound_key(p, 3_100_000, last=102).epoch == 103  # in epoch 103, after 102 was presented
    assert inbound_key(p, 3_300_000, last=102).epoch == 110  # an old L: the current epoch


@pytest.mark.parametrize(("last", "epoch"), [(102, 100), (200, 100), (10**9, 100)])
def test_a_corrected_clock_resets_the_last_epoch(last: int, epoch: int) -> None:
    # L > current + look_ahead: the device's clock was ahead and has been corrected, so L = current - 1
    assert inbound_key(prov(), 3_010_000, last=last).epoch == epoch


def test_no_reset_within_look_ahead() -> None:
    with pytest.raises(BurstUsedUp):
        inbound_key(prov(), 3_010_000, last=101)  # L = current + look_ahead: the burst is used up, not a clock jump


def test_dnis_presentation_dials_the_access_prefix_and_the_significant_part() -> None:
    p = Provisioning(30, 0, "+1NXXNXXXXXX", "XXXXXXXXXX", mode="dnis", dial="9", key_id="k1", secret=SPEC_SECRET)
    assert inbound_key(p, 0).present == "9" + "2677638475"
    bare = Provisioning(30, 0, "555XXXXXXX", "XXXXXXXXXX", mode="dnis", key_id="k1", secret=SPEC_SECRET)
    assert inbound_key(bare, 0).present == "5551638475"  # no access prefix: the key itself


# -- what the device keeps -------------------------------------------------------------------------------------
def test_state_round_trip_and_rotation() -> None:
    p = prov()
    s = DeviceState(p.key_id, 30, 0, 101, 100)
    assert device.state_from_json(device.state_to_json(s)) == s
    assert device.state_for(p, s) is s
    assert device.state_for(p, None) == DeviceState("vector", 30, 0)
    rotated = prov(key_id="vector-2")
    assert device.state_for(rotated, s) == DeviceState("vector-2", 30, 0)  # a new key_id: new high-water marks
    with pytest.raises(device.StateError):
        device.state_for(prov(period=5), s)  # same key_id, another period: not one platform's


@pytest.mark.parametrize(
    "text",
    ["", "[]", "{}", '{"format": "other"}', '{"format": "slk1-device-state/1", "key_id": "a", "period": 30}',
     '{"format": "slk1-device-state/1", "key_id": 1, "period": 30, "t0": 0}',
     '{"format": "slk1-device-state/1", "key_id": "a", "period": 30, "t0": 0, "last_inbound_epoch": -1}',
     '{"format": "slk1-device-state/1", "key_id": "a", "period": 30, "t0": 0, "outbound_high_water": true}',
     '{"format": "slk1-device-state/1", "key_id": "a", "period": 30, "t0": 0, "outbound_high_water": 1.5}'],
)  # fmt: skip
def test_a_bad_state_is_refused_not_reset(text: str) -> None:
    with pytest.raises(device.StateError):
        device.state_from_json(text)


def test_accept_keeps_the_highest_epoch() -> None:
    s = DeviceState("k", 30, 0, None, 100)
    assert device.accept(s, CheckResult(CheckStatus.GENUINE, 101, 1)).outbound_high_water == 101
    assert device.accept(s, CheckResult(CheckStatus.GENUINE, 99, -1)).outbound_high_water == 100
    assert device.accept(s, CheckResult(CheckStatus.REPLAYED, 100, 0)) is s
    assert device.accept(s, CheckResult(CheckStatus.NOT_GENUINE)) is s


# -- outbound check --------------------------------------------------------------------------------------------
def test_check_accepts_previous_current_and_next_windows_only() -> None:
    p = prov()
    e = 59666666
    assert outbound_epochs(p, T) == [e, e + 1, e - 1]
    for d, window in ((-1, "previous"), (0, "current"), (1, "next")):
        r = check(p, outbound(p, e + d), T)
        assert (r.status, r.epoch, r.offset, r.window, r.genuine) == (CheckStatus.GENUINE, e + d, d, window, True)
    for d in (-3, -2, 2, 3):
        assert check(p, outbound(p, e + d), T) == CheckResult(CheckStatus.NOT_GENUINE)


def test_check_rejects_other_numbers_and_the_other_direction() -> None:
    p = prov()
    e = 59666666
    inbound_same_epoch = derive_key(p.secret, Direction.INBOUND, e, NumberFormat(p.outbound_format))
    assert check(p, inbound_same_epoch, T).status is CheckStatus.NOT_GENUINE  # a reflected inbound key
    other = prov(secret=bytes(range(1, 33)))
    assert check(p, outbound(other, e), T).status is CheckStatus.NOT_GENUINE  # another device's key
    assert check(p, "5550100", T).status is CheckStatus.NOT_GENUINE
    genuine = outbound(p, e)
    wrong_digit = genuine[:-1] + str((int(genuine[-1]) + 1) % 10)
    assert check(p, wrong_digit, T).status is CheckStatus.NOT_GENUINE
    assert check(p, genuine + "0", T).status is CheckStatus.NOT_GENUINE


def test_check_normalizes_and_compares_like_the_pbx() -> None:
    p = prov(outbound="+1NXXNXXXXXX")
    key = outbound(p, 59666666)  # '+1NXXNXXXXXX': 12 characters with the '+'
    digits = key[1:]
    spaced = f"+{digits[0]} ({digits[1:4]}) {digits[4:7]}-{digits[7:]}"
    slashed = f"{digits[1:4]}/{digits[4:7]}-{digits[7:]}"
    for shown in (key, digits, spaced, slashed, f"  {key} ", digits.replace("", ".").strip("."), digits[1:]):
        assert check(p, shown, T).genuine, shown  # the national form too (1.1: the literal '1' carries no entropy)
    assert not check(p, "++" + digits, T).genuine
    assert not check(p, "011" + digits, T).genuine  # a trunk prefix the phone was not provisioned with
    assert check(prov(outbound="+1NXXNXXXXXX", trunk=("0", "011")), "011" + digits, T).genuine


def outbound_form(presented: str, fmt: NumberFormat, inbound_key_: str, outbound_key: str) -> str:
    """A comparison-table row's presented number with the inbound key's significant digits swapped for the outbound
    key's (a differing digit stays differing), everything else (prefix, separators) kept."""
    k = fmt.significant_length
    positions = [i for i, c in enumerate(presented) if c.isdigit()][-k:]
    if len(positions) < k:
        return presented
    chars = list(presented)
    out = fmt.significant(outbound_key)
    if "".join(chars[i] for i in positions) != fmt.significant(inbound_key_):
        out = out[:-1] + str((int(out[-1]) + 1) % 10)
    for i, c in zip(positions, out, strict=True):
        chars[i] = c
    return "".join(chars)


@pytest.mark.parametrize(("pattern", "key", "presented", "trunk", "expected"), COMPARISON, ids=ROW_IDS)
def test_every_comparison_vector_on_the_phone(
    pattern: str, key: str, presented: str, trunk: tuple[str, ...], expected: bool
) -> None:
    # the phone compares the platform's outbound keys the same way, with its own trunk list (SLK1.md)
    p = prov(outbound=pattern, trunk=trunk)
    received = outbound_form(presented, NumberFormat(pattern), key, outbound(p, 0))
    assert check(p, received, 1_000).genuine is expected


def test_a_spent_epoch_and_every_earlier_one_are_replays() -> None:
    p = prov()
    e = 59666666
    key = outbound(p, e)
    assert check(p, key, T).genuine
    assert check(p, key, T, high_water=e) == CheckResult(CheckStatus.REPLAYED, e, 0)
    assert check(p, outbound(p, e - 1), T, high_water=e) == CheckResult(CheckStatus.REPLAYED, e - 1, -1)
    assert check(p, outbound(p, e + 1), T, high_water=e).genuine  # the next key is still fresh
    assert check(p, key, T, high_water=e + 1).status is CheckStatus.REPLAYED


@pytest.mark.parametrize(
    "number",
    ["abc", "12", "1" * 21, "5550\x00100", "+1 555 0100; DROP TABLE devices", "\u0665\u0665\u0665\u0660\u0661\u0660",
     "1" * 100, "sip:5550100@x", "withheld", "unavailable"],
)  # fmt: skip
def test_malformed_numbers_are_a_result_not_an_exception(number: str) -> None:
    assert check(prov(), number, T) == CheckResult(CheckStatus.MALFORMED)


@pytest.mark.parametrize("number", [None, "", "anonymous", "Restricted", " unknown ", "PRIVATE"])
def test_anonymous_numbers(number: str | None) -> None:
    r = check(prov(), number, T)
    assert r == CheckResult(CheckStatus.ANONYMOUS) and not r.genuine and r.window is None


def test_non_string_input_is_malformed() -> None:
    for junk in (5550100, b"5550100", 3.5, ["5550100"]):
        assert check(prov(), junk, T).status is CheckStatus.MALFORMED  # type: ignore[arg-type]


def test_every_window_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # compare.matches calls hmac.compare_digest through the module
    p = prov()
    check(p, outbound(p, 59666666), T)  # matches the first window tried...
    assert len(calls) == 3  # ...and the other two are compared all the same
    calls.clear()
    check(p, "5550100", T)  # shorter than the key: compared all the same
    assert len(calls) == 3


def test_epoch_zero_has_no_previous_window() -> None:
    p = prov()
    assert outbound_epochs(p, 1_000) == [0, 1]
    assert check(p, outbound(p, 0), 1_000).genuine


@settings(max_examples=200, deadline=None)
@given(number=st.one_of(st.none(), st.text(max_size=80)))
def test_check_never_raises_on_any_text(number: str | None) -> None:
    r = check(prov(), number, T)
    assert r.status in set(CheckStatus) and r.genuine is (r.status is CheckStatus.GENUINE)


@settings(max_examples=200, deadline=None)
@given(
    secret=st.binary(min_size=16, max_size=64),
    period=st.integers(5, 60),
    t0=st.integers(0, 10**9),
    since_ms=st.integers(0, 10**13),
    offset=st.integers(-3, 3),
    fmt=st.sampled_from(FORMATS),
)
def test_property_windows(secret: bytes, period: int, t0: int, since_ms: int, offset: int, fmt: str) -> None:
    p = prov(secret, period=period, t0=t0, inbound=fmt, outbound=fmt)
    at = t0 * 1000 + since_ms
    k = inbound_key(p, at)
    assert 0 < k.seconds_left <= period and k.valid_from_ms <= at < k.valid_until_ms
    assert k.key == derive_key(secret, Direction.INBOUND, k.epoch, NumberFormat(fmt))
    e = k.epoch + offset
    if e < 0:
        return
    r = check(p, outbound(p, e), at)
    if offset in (-1, 0, 1):
        assert r == CheckResult(CheckStatus.GENUINE, e, offset)
    else:
        assert r.status is CheckStatus.NOT_GENUINE  # (a chance collision, ~3/S, is below what 200 examples find)


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 10**6), steps=st.lists(st.integers(0, 40_000), max_size=12), look_ahead=st.integers(0, 2))
def test_property_the_burst_never_exceeds_what_the_platform_accepts(
    start: int, steps: list[int], look_ahead: int
) -> None:
    """Calls as often as allowed: every presented epoch is new, at most current + look_ahead, and never ahead of what
    a platform clock 2 s behind accepts; at most look_ahead + 1 calls within one period."""
    p = prov(look_ahead=look_ahead)
    state = DeviceState(p.key_id, p.period, p.t0)
    now = start * 1000
    per_epoch: dict[int, int] = {}
    for step in [0, *steps]:
        now += step
        while True:
            try:
                k, after = present_inbound(p, state, now)
            except BurstUsedUp as wait:
                assert wait.wait_ms > 0
                break
            current = epoch_at_ms(now, 30)
            assert state.last_inbound is None or k.epoch > state.last_inbound  # never a key presented before
            assert current <= k.epoch <= current + look_ahead
            if k.epoch > current:  # ahead of the clock: still within what a platform 2 s behind accepts
                assert k.epoch <= (now - device.MARGIN_MS) // 30_000 + look_ahead
            per_epoch[current] = per_epoch.get(current, 0) + 1
            assert per_epoch[current] <= look_ahead + 1
            state = after


# -- against the platform's own verifier -----------------------------------------------------------------------
def cfg(tmp_path: Path, **keys: object) -> Config:
    return config.build({"keys": dict(keys)}, {}, tmp_path)


def enrolled(c: Config, d: DeviceRow) -> Provisioning:
    """What `securelink device add` gives the device: the derived secret and the platform's key settings."""
    p = Provisioning.of(device_params(c), key_id=d.key_id, secret=device_secret(MASTER, d.key_id), device_id=d.id)
    return device.load(p.uri())  # through the URI, as the phone gets it


async def registered(store: Store, name: str, mobile: str, key_id: str) -> DeviceRow:
    d = await store.add_device(name, mobile, None, key_id, "test")
    return await store.update_device(d.id, "device.register", "test", status="registered")


@pytest.mark.parametrize(
    "keys",
    [{}, {"period": 5, "t0": 1_700_000_000, "inbound_format": "+1NXXNXXXXXX"}, {"inbound_format": "555XXXXXXX"}],
)
async def test_the_verifier_admits_the_device_key(sqlite_store: Store, tmp_path: Path, keys: dict[str, object]) -> None:
    c = cfg(tmp_path, **keys)
    a = await registered(sqlite_store, "A", "+15550000001", "kid-a")
    b = await registered(sqlite_store, "B", "+15550000002", "kid-b")
    clock = Clock(T)
    svc = make_service(c, sqlite_store, clock_ms=clock, device_sync_interval=0)
    await svc.start()
    period_ms = c.keys.period * 1000
    start = epoch_start_ms(epoch_at_ms(T, c.keys.period, c.keys.t0), c.keys.period, c.keys.t0)  # of T's window
    for i, at in enumerate((T, start + 2 * period_ms - 1, start + 2 * period_ms, start + 9 * period_ms)):
        clock.t = at
        for d in (a, b):
            k = inbound_key(enrolled(c, d), at)
            out = await svc.verify(VerifyRequest(presented=k.key, call_id=f"{d.id}-{i}"))
            assert (out.verdict, out.device_id, out.epoch) == (Verdict.ADMITTED, d.id, k.epoch)
    await svc.audit.drain()


async def test_the_verifier_windows_seen_from_a_1_0_device(sqlite_store: Store, tmp_path: Path) -> None:
    c = cfg(tmp_path, look_ahead=0)
    d = await registered(sqlite_store, "A", "+15550000001", "kid-a")
    svc = make_service(c, sqlite_store, clock_ms=Clock(T), device_sync_interval=0)
    await svc.start()
    p = enrolled(c, d)
    now = inbound_key(p, T)

    async def verdict(key: str, call: str) -> Verdict:
        return (await svc.verify(VerifyRequest(presented=key, call_id=call))).verdict

    assert await verdict(inbound_key(p, T + 30_000).key, "ahead") is Verdict.MISMATCH  # look_ahead 0: not yet
    assert await verdict(inbound_key(p, T - 60_000).key, "old") is Verdict.MISMATCH  # two windows old
    assert await verdict(inbound_key(p, T - 30_000).key, "prev") is Verdict.ADMITTED  # previous window, a slow call
    assert await verdict(now.key, "c1") is Verdict.ADMITTED
    assert await verdict(now.key, "c2") is Verdict.REPLAYED  # one call per key
    with pytest.raises(BurstUsedUp):
        inbound_key(p, T, last=now.epoch)  # and the device knows it: it waits instead of calling
    await svc.audit.drain()


async def test_a_burst_against_the_verifier(sqlite_store: Store, tmp_path: Path) -> None:
    c = cfg(tmp_path, look_ahead=1)
    d = await registered(sqlite_store, "A", "+15550000001", "kid-a")
    clock = Clock(T)
    svc = make_service(c, sqlite_store, clock_ms=clock, device_sync_interval=0)
    await svc.start()
    p = enrolled(c, d)
    state = DeviceState(p.key_id, p.period, p.t0)

    async def call(at: int, name: str) -> tuple[Verdict, int]:
        nonlocal state
        clock.t = at
        k, state = present_inbound(p, state, at)
        return (await svc.verify(VerifyRequest(presented=k.key, call_id=name))).verdict, k.epoch

    e = epoch_at_ms(T, 30)
    assert await call(T, "first") == (Verdict.ADMITTED, e)
    assert await call(T + 500, "redial") == (Verdict.ADMITTED, e + 1)
    with pytest.raises(BurstUsedUp) as wait:
        await call(T + 1_000, "third")
    ready = T + 1_000 + wait.value.wait_ms
    assert ready == epoch_start_ms(e + 1, 30) + device.MARGIN_MS
    assert await call(ready, "next period") == (Verdict.ADMITTED, e + 2)
    replay = inbound_key(p, T, last=e).key  # the key of e + 1, presented again by a non-conforming device
    assert (await svc.verify(VerifyRequest(presented=replay, call_id="replay"))).verdict is Verdict.REPLAYED
    await svc.audit.drain()


async def test_the_pbx_outbound_keys_pass_the_device_check(sqlite_store: Store, tmp_path: Path) -> None:
    c = cfg(tmp_path, outbound_format="+1NXXNXXXXXX")
    d = await registered(sqlite_store, "A", "+15550000001", "kid-a")
    p = enrolled(c, d)
    keyer = outbound_keyer(MASTER, c.outbound_fmt)
    current = 59666666
    state = DeviceState(p.key_id, p.period, p.t0)

    async def ring(at_device: int) -> tuple[CheckResult, int | None]:
        """The PBX claims an epoch and presents its key; the phone checks it with its own clock and high-water mark."""
        nonlocal state
        epoch = await sqlite_store.next_outbound_epoch(d.id, current, None)
        if epoch is None:
            return CheckResult(CheckStatus.NOT_GENUINE), None
        r = check(p, keyer(d.key_id, epoch), at_device, state.outbound_high_water)
        state = device.accept(state, r)
        return r, epoch

    first, e1 = await ring(T)
    assert e1 == current and first == CheckResult(CheckStatus.GENUINE, current, 0)
    second, e2 = await ring(T + 500)  # a second call within the period: the PBX presents current + 1
    assert e2 == current + 1 and second == CheckResult(CheckStatus.GENUINE, current + 1, 1)
    assert (await ring(T + 1_000))[1] is None  # a third: rate_limited, no key presented
    # the same PBX keys, received late (device clock one window on) or replayed
    assert check(p, keyer(d.key_id, current), T + 30_000).window == "previous"
    high = state.outbound_high_water
    assert check(p, keyer(d.key_id, current), T + 30_000, high).status is CheckStatus.REPLAYED
    assert check(p, keyer(d.key_id, current), T + 60_000).status is CheckStatus.NOT_GENUINE  # stale
    national = keyer(d.key_id, current + 1)[2:]  # delivered without '+1': the phone still recognizes it
    assert check(p, national, T).genuine
