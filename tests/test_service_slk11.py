"""SLK1 1.1 through the verification service on a real database: the spec's burst sequence and comparison vectors,
the outbound high-water mark, registered numbers in E.164, "the same call", start-up refusals and the strength report.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.clock import Clock, S, T
from support.services import cfg, key, make_service, registered, verify
from support.vectors import COMPARISON, SPEC_SECRET

from asterisk_securelink.core.slk1 import Direction, derive_key
from asterisk_securelink.core.verdicts import Mode, Verdict
from asterisk_securelink.inbound.service import VerificationService, VerifyRequest
from asterisk_securelink.store.store import Store


@pytest.fixture
def spec_device(monkeypatch: pytest.MonkeyPatch) -> str:
    """The key_id whose device secret is the spec's vector secret, so the service meets the spec's numbers."""
    from asterisk_securelink import livekeys

    real = livekeys.device_secret
    monkeypatch.setattr(livekeys, "device_secret", lambda m, k: SPEC_SECRET if k == "spec" else real(m, k))
    return "spec"


def spec_service(store: Store, tmp_path: Path, at_ms: int, **keys: object) -> VerificationService:
    c = cfg(tmp_path, keys=dict(keys), lockout={"enabled": False})
    return make_service(c, store, clock_ms=Clock(at_ms), device_sync_interval=0)


@pytest.mark.parametrize(
    ("fmt", "keys"),
    [
        ("XXXXXXXXXX", {99: "1670674729", 100: "1646302798", 101: "0157179956", 102: "6021453076"}),
        ("+1NXXNXXXXXX", {99: "+15588674729", 100: "+17058302798", 101: "+15697179956", 102: "+19027453076"}),
    ],
)
async def test_spec_burst_sequence_on_the_platform(
    store: Store, tmp_path: Path, spec_device: str, fmt: str, keys: dict[int, str]
) -> None:
    """SLK1.md, "Burst (1.1)": both clocks at epoch 100 (t_ms 3000000-3029999), look_behind 1, look_ahead 1."""
    svc = spec_service(store, tmp_path, 3_015_000, inbound_format=fmt)
    d = await registered(store, "Spec", "+15550001111", spec_device)
    await svc.start()
    steps = [(100, Verdict.ADMITTED), (101, Verdict.ADMITTED)]  # a redial within the period: the next key
    steps += [(101, Verdict.REPLAYED), (100, Verdict.REPLAYED), (99, Verdict.REPLAYED), (102, Verdict.MISMATCH)]
    for i, (epoch, want) in enumerate(steps):
        out = await svc.verify(VerifyRequest(presented=keys[epoch], call_id=f"burst-{i}"))
        assert (epoch, out.verdict) == (epoch, want)
        assert out.device_id == (None if want is Verdict.MISMATCH else d.id)
    row = await store.key_epoch(d.id, Direction.INBOUND)
    assert row is not None and row.last_epoch == 101 and row.drift == 1
    await svc.audit.drain()


async def test_spec_outbound_presentation_high_water_mark(store: Store, tmp_path: Path, spec_device: str) -> None:
    """The platform presents 100, then 101; a third call within epoch 100 is refused (rate_limited)."""
    svc = spec_service(store, tmp_path, 3_015_000)
    d = await registered(store, "Spec", "+15550001111", spec_device)
    current = svc.keys.epoch_now()
    assert current == 100
    presented = [await store.next_outbound_epoch(d.id, current, f"out-{i}") for i in range(3)]
    assert presented == [100, 101, None]
    assert [svc.keys.outbound_key(spec_device, e) for e in (100, 101)] == ["8191505962", "0735751441"]
    assert await store.next_outbound_epoch(d.id, 101, "out-3") == 102  # epoch 101: max(101, 101 + 1) = current + 1
    assert await store.next_outbound_epoch(d.id, 101, "out-4") is None
    assert await store.next_outbound_epoch(d.id, 103, "out-5") == 103


async def test_look_ahead_0_refuses_the_next_epoch(store: Store, tmp_path: Path) -> None:
    c = cfg(tmp_path, keys={"look_ahead": 0})
    svc = make_service(c, store, clock_ms=Clock(T), device_sync_interval=0)
    d = await registered(store, "A", "+15550001111", "kid-a")
    await svc.start()
    assert await verify(svc, key(d, T + 30 * S, c), call_id="n") is Verdict.MISMATCH
    assert await verify(svc, key(d, T, c), call_id="c") is Verdict.ADMITTED
    assert await verify(svc, key(d, T, c), call_id="r") is Verdict.REPLAYED  # 1.0's one call per period


# SLK1.md, "Comparison (1.1)": the spec's vectors, one copy (tests/test_compare.py)


@pytest.mark.parametrize(("fmt", "expected", "presented", "trunks", "match"), COMPARISON)
@pytest.mark.parametrize("mode", [Mode.ANI, Mode.DNIS, Mode.EITHER])
async def test_spec_comparison_vectors_through_the_service(
    store: Store,
    tmp_path: Path,
    spec_device: str,
    fmt: str,
    expected: str,
    presented: str,
    trunks: tuple[str, ...],
    match: bool,
    mode: Mode,
) -> None:
    """Every comparison vector of the spec, as a call in each mode: the key delivered in another form is admitted."""
    svc = spec_service(store, tmp_path, 10_000, inbound_format=fmt, trunk_prefixes=list(trunks))
    await registered(store, "Spec", "+15550001111", spec_device)
    await svc.start()
    assert derive_key(SPEC_SECRET, Direction.INBOUND, 0, svc.config.inbound_fmt) == expected
    req = VerifyRequest(presented=presented, mode=mode, dialed=presented, caller="+15550001111", call_id="v")
    if mode is Mode.EITHER:  # the dialed number carries the key; the caller number is not a key
        req = VerifyRequest(presented="+15550001111", mode=mode, dialed=presented, call_id="v")
    out = await svc.verify(req)
    assert out.verdict is (Verdict.ADMITTED if match else Verdict.MISMATCH)
    await svc.audit.drain()


@pytest.mark.parametrize(
    ("delivered", "trunks", "admitted"),
    [
        ("+15550002222", (), True),
        ("15550002222", (), True),
        ("5550002222", (), True),
        ("+1 555 000 2222", (), True),
        ("0115550002222", ("011",), True),
        ("0115550002222", (), False),
        ("+445550002222", (), False),
        ("5550002223", (), False),
    ],
)
async def test_two_factor_compares_the_registered_number_by_the_1_1_rule(
    store: Store, tmp_path: Path, delivered: str, trunks: tuple[str, ...], admitted: bool
) -> None:
    c = cfg(tmp_path, inbound={"require_registered_number": True}, keys={"trunk_prefixes": list(trunks)})
    svc = make_service(c, store, clock_ms=Clock(T), device_sync_interval=0)
    a = await registered(store, "A", "+15550002222", "kid-a")
    await svc.start()
    out = await svc.verify(VerifyRequest(presented=key(a, T, c), mode=Mode.DNIS, caller=delivered, call_id="2f"))
    assert out.verdict is (Verdict.ADMITTED if admitted else Verdict.MISMATCH)
    await svc.audit.drain()


async def test_a_registered_number_left_in_1_0_form_is_compared_digit_for_digit(store: Store, tmp_path: Path) -> None:
    c = cfg(tmp_path, inbound={"require_registered_number": True})
    svc = make_service(c, store, clock_ms=Clock(T), device_sync_interval=0)
    a = await registered(store, "A", "0301234567", "kid-a")  # 0003 could not rewrite it
    await svc.start()
    k = key(a, T, c)
    assert await verify(svc, k, mode=Mode.DNIS, caller="301234567", call_id="1") is Verdict.MISMATCH
    assert await verify(svc, k, mode=Mode.DNIS, caller="030-123-4567", call_id="2") is Verdict.ADMITTED
    await svc.audit.drain()


async def test_same_call_identity_and_node(store: Store, tmp_path: Path) -> None:
    svc = make_service(cfg(tmp_path, ari={"node": "pbx-1"}), store, clock_ms=Clock(T))
    assert svc.same_call("1790000000.7") == "pbx-1/1790000000.7"
    assert svc.same_call(None) is None and svc.same_call("") is None
    long = svc.same_call("x" * 200)
    assert long is not None and long.startswith("sha256:") and len(long) <= 128

    async def info() -> dict[str, object]:
        return {"system": {"entity_id": "00:11:22:33:44:55"}, "config": {"name": ""}}

    assert await svc.learn_node(info) == "pbx-1"  # configured: ARI is not asked
    svc = make_service(cfg(tmp_path), store, clock_ms=Clock(T))
    assert await svc.learn_node(info) == "00:11:22:33:44:55"

    async def named() -> dict[str, object]:
        return {"system": {"entity_id": "00:11:22:33:44:55"}, "config": {"name": "pbx-east"}}

    assert await svc.learn_node(named) == "pbx-east"  # asterisk.conf systemname, when set

    async def down() -> dict[str, object]:
        raise ConnectionError("ARI down")

    svc = make_service(cfg(tmp_path), store, clock_ms=Clock(T))
    host = svc.node
    assert host and await svc.learn_node(down) == host


async def test_t0_in_the_future_is_refused_at_start(store: Store, tmp_path: Path) -> None:
    from asterisk_securelink.errors import StartupError

    svc = make_service(cfg(tmp_path, keys={"t0": T // S + 60}), store, clock_ms=Clock(T))
    with pytest.raises(StartupError, match=r"keys\.t0: .*future"):
        await svc.start()


async def test_period_or_t0_change_is_refused_while_devices_exist(store: Store, tmp_path: Path) -> None:
    from asterisk_securelink.errors import StartupError

    async def start(**keys: object) -> None:
        await make_service(cfg(tmp_path, keys=dict(keys)), store, clock_ms=Clock(T)).start()

    await start(period=10)  # no device yet: whatever is configured is recorded
    assert await store.settings() == {"keys.period": "10", "keys.t0": "0"}
    await start()  # still no device: the change is simply recorded
    assert await store.settings() == {"keys.period": "30", "keys.t0": "0"}
    d = await registered(store, "A", "+15550001111", "kid-a")
    await start()
    for keys in ({"period": 10}, {"t0": 1_700_000_000}):
        with pytest.raises(StartupError, match=r"rotate --all"):
            await start(**keys)
    await store.update_device(d.id, "device.revoke", "t", status="revoked")
    await start(period=10)  # only revoked devices: nothing left whose epochs would be misread
    assert (await store.settings())["keys.period"] == "10"


async def test_strength_report_uses_w_with_look_ahead_and_names_the_burst_cost(store: Store, tmp_path: Path) -> None:
    import math

    from asterisk_securelink.doctor import key_checks, strength_check

    c = cfg(tmp_path, database={"url": str(store.engine.url)} if "sqlite" in str(store.engine.url) else {})
    for i in range(4):
        await registered(store, f"D{i}", f"+1555000111{i}", f"kid-{i}")
    svc = make_service(c, store, clock_ms=Clock(T))
    await svc.start()
    bits = math.log2(10**10 / (3 * 4))  # W = 1 + 1 + 1, D = 4: 29.6 bits, below 30
    assert svc.keys.strength() == pytest.approx(bits)
    line = svc.keys.strength_line()
    assert f"2^-{bits:.1f}" in line and "W=3" in line and "burst (look_ahead 1) costs 0.58 bits" in line
    assert "two-factor" in line  # below 30 bits: says what to do
    check = strength_check(c, 4)
    assert check.warn and not check.ok and "0.58 bits" in check.detail
    two_factor = strength_check(cfg(tmp_path, inbound={"require_registered_number": True}), 4)
    assert two_factor.ok and f"two-factor (DNIS): ~2^-{math.log2(10**10 / 3):.1f}" in two_factor.detail
    no_burst = strength_check(cfg(tmp_path, keys={"look_ahead": 0}), 4)
    assert no_burst.ok and "burst" not in no_burst.detail and "W=2" in no_burst.detail
    if "sqlite" in str(store.engine.url):
        strength, settings = await key_checks(c, store)
        assert strength.name == "key strength" and settings.ok
        changed = cfg(tmp_path, database={"url": str(store.engine.url)}, keys={"period": 10})
        assert not (await key_checks(changed, store))[1].ok  # doctor reads, never records
        assert (await store.settings())["keys.period"] == "30"
