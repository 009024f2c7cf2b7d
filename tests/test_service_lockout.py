"""The guess guard through the verification service, on a real database (issue 12, "one caller locks out a whole
carrier trunk"): only guesses that could have matched count; a source's key-alone budget comes from
`lockout.max_guess_probability` and the live strength; over it, two-factor calls are still verified; every source
together has a budget too; a registered number has an allowance derived from the same target; two services sharing
the database grant one budget between them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from support.clock import Clock, S, T
from support.driver import generic_path_forbidden, not_run
from support.services import cfg, key, make_service, registered, verify

from asterisk_securelink.config import Config
from asterisk_securelink.core.lockout import DAY_MS, guess_budget
from asterisk_securelink.core.verdicts import Mode, Verdict
from asterisk_securelink.inbound.guard import LockoutEvent
from asterisk_securelink.inbound.service import VerificationService, VerifyRequest
from asterisk_securelink.store.lockout import LockoutStore
from asterisk_securelink.store.store import DeviceRow, Store

TRUNK = "PJSIP/carrier"
# 3 devices, W = 3, S = 10^10: one key-alone guess succeeds with 9e-10, so 9e-9 per 24 h is a budget of 10 guesses
P_FOR_10 = 9e-9


@pytest.fixture(autouse=True, params=["fast", "generic"])
def lockout_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test on both ways the counts are read and written: in the driver's own terms (`store.driver.run_fast`),
    whose use is proven by taking the generic path away, and the generic Core path."""
    from asterisk_securelink.store import lockout

    if request.param == "generic":
        monkeypatch.setattr(lockout, "run_fast", not_run)
    else:
        forbidden = generic_path_forbidden("lockout counts")
        monkeypatch.setattr(lockout, "_generic_hours", forbidden)
        monkeypatch.setattr(lockout, "_generic_add", forbidden)
    return str(request.param)


def guesses(n: int, start: int = 0) -> list[str]:
    """Well-formed 10-digit numbers that are nobody's key (3 devices x 3 windows in 10^10: never in practice)."""
    return [f"55{start + i:08d}" for i in range(n)]


async def service(store: Store, c: Config, clock: Clock[int] | None = None) -> VerificationService:
    svc = make_service(c, store, clock_ms=clock or Clock(T), device_sync_interval=0)
    await svc.start()
    return svc


async def three_devices(store: Store) -> list[DeviceRow]:
    return [await registered(store, n, f"+1555000111{i}", f"kid-{n}") for i, n in enumerate("ABC")]


async def test_budget_is_derived_from_the_target_and_the_live_strength(store: Store, tmp_path: Path) -> None:
    await three_devices(store)
    svc = await service(store, cfg(tmp_path, lockout={"max_guess_probability": P_FOR_10}))
    assert svc.guard.budget() == 10 == guess_budget(P_FOR_10, 10**10, 3, 3)
    await registered(store, "D", "+15550001119", "kid-d")
    await svc.keys.sync_devices()
    assert svc.guard.budget() == 7  # 4 devices: each guess is likelier, so fewer are allowed
    await svc.audit.drain()


async def test_only_guesses_that_could_match_spend_the_budget(store: Store, tmp_path: Path) -> None:
    devices = await three_devices(store)
    c = cfg(tmp_path, lockout={"max_guess_probability": P_FOR_10})
    svc = await service(store, c)
    free = [None, "", "anonymous", "abc", "12", "9" * 30, "123456789", "12345678901", "055500000001"]
    for i in range(3):
        for raw in free:  # anonymous, malformed, too short, too long, a digit in front that is no trunk prefix
            assert await verify(svc, raw, source=TRUNK, call_id=f"f{i}{raw}") in (
                Verdict.ANONYMOUS, Verdict.MALFORMED, Verdict.MISMATCH
            )  # fmt: skip
    for g in guesses(10):
        assert await verify(svc, g, source=TRUNK) is Verdict.MISMATCH
    out = await svc.verify(VerifyRequest(presented=key(devices[0], T, c), source=TRUNK, call_id="late"))
    assert (out.verdict, out.detail) == (Verdict.LOCKED_OUT, {"lockout": "source"})  # even a right key, key alone
    assert await verify(svc, guesses(1, 50)[0], source="PJSIP/other") is Verdict.MISMATCH  # another source's budget
    assert await verify(svc, key(devices[1], T, c), source="PJSIP/other", call_id="o") is Verdict.ADMITTED
    await svc.audit.drain()


async def test_over_budget_two_factor_calls_are_still_verified(store: Store, tmp_path: Path) -> None:
    a, b, _ = await three_devices(store)
    c = cfg(tmp_path, lockout={"max_guess_probability": P_FOR_10}, inbound={"require_registered_number": True})
    svc = await service(store, c)
    for g in guesses(10):  # random keys as caller numbers (ANI: the key alone)
        assert await verify(svc, g, source=TRUNK) is Verdict.MISMATCH
    assert await verify(svc, guesses(1, 10)[0], source=TRUNK) is Verdict.LOCKED_OUT
    # the registered number picks the device and its key is checked for it alone: odds W / S, whatever D
    for i, d in enumerate((a, b)):
        got = await verify(svc, key(d, T, c), mode=Mode.DNIS, caller=d.mobile_number, source=TRUNK, call_id=f"2f{i}")
        assert got is Verdict.ADMITTED
    # random DNIS guesses with unregistered caller numbers could not match: they cost nobody anything
    for i, g in enumerate(guesses(30, 100)):
        assert await verify(svc, g, mode=Mode.DNIS, caller=f"1444{i:07d}", source=TRUNK) is Verdict.MISMATCH
    got = await verify(svc, key(a, T + 30 * S, c), mode=Mode.DNIS, caller="+1 555 000 1110", source=TRUNK, call_id="x")
    assert got is Verdict.ADMITTED
    await svc.audit.drain()


async def test_a_registered_number_may_fail_its_allowance_and_a_verified_call_does_not_reset_it(
    store: Store, tmp_path: Path
) -> None:
    """M5 (issue 22): the allowance is floor(P*S/W) failures in any 24 hours (10 here), counted in the shared store;
    not 5 in a row then a backoff that a call every 15 minutes keeps going."""
    a, b, _ = await three_devices(store)
    clock = Clock(T)
    c = cfg(tmp_path, inbound={"require_registered_number": True}, lockout={"max_guess_probability": 3e-9})
    svc = await service(store, c, clock)
    assert svc.guard.budgets()[2] == 10
    events: list[LockoutEvent] = []
    svc.guard.alert = events.append

    async def dnis(number: str, caller: str, call_id: str = "") -> Verdict:
        return await verify(svc, number, mode=Mode.DNIS, caller=caller, source=TRUNK, call_id=call_id or None)

    for g in guesses(5):  # someone spoofing A's number: 5 failures no longer lock anything
        assert await dnis(g, "15550001110") is Verdict.MISMATCH
    assert await dnis(key(a, clock.t, c), "+15550001110", "a1") is Verdict.ADMITTED
    for g in guesses(5, 5):
        assert await dnis(g, "5550001110") is Verdict.MISMATCH  # in another carrier form: still A
    assert [(e.kind, e.device_id, e.count, e.limit) for e in events] == [("caller", a.id, 10, 10)]
    clock.t += 30 * S
    # the admitted call did not hand the spoofer a fresh allowance: 10 in 24 h are spent, even the right key waits
    assert await dnis(key(a, clock.t, c), "15550001110", "a2") is Verdict.LOCKED_OUT
    assert await dnis(key(b, clock.t, c), "15550001111", "b1") is Verdict.ADMITTED  # B is not A
    clock.t += DAY_MS + 3_600_000  # the failures have aged out (they weigh 24 to 25 hours)
    assert await dnis(key(a, clock.t, c), "15550001110", "a3") is Verdict.ADMITTED
    await svc.audit.drain()


async def test_a_spoofer_at_20_calls_a_second_for_a_minute_does_not_lock_the_owner_out(
    store: Store, tmp_path: Path
) -> None:
    """M5 (issue 22), at the default settings: 1,200 spoofed two-factor calls with A's number in one minute, 20 at a
    time; then A's genuine call is admitted at once. (Before: locked out after the 5th.)"""
    a, _, _ = await three_devices(store)
    clock = Clock(T)
    c = cfg(tmp_path, inbound={"require_registered_number": True})
    svc = await service(store, c, clock)
    numbers = guesses(1200)
    for second in range(60):
        batch = numbers[second * 20 : second * 20 + 20]
        got = await asyncio.gather(*(verify(svc, g, mode=Mode.DNIS, caller="15550001110", source=TRUNK) for g in batch))
        assert set(got) == {Verdict.MISMATCH}
        clock.t += S
    got = await verify(svc, key(a, clock.t, c), mode=Mode.DNIS, caller="15550001110", source=TRUNK, call_id="a")
    assert got is Verdict.ADMITTED
    await svc.audit.drain()


async def test_every_source_together_has_a_budget(store: Store, tmp_path: Path) -> None:
    """H1 (issue 22), the backstop: sources an attacker can multiply (guest peers, made-up FastAGI names) share one
    budget, max_total_guess_probability's (here 2x a source's: 20 failures over 20 sources, then all key-alone
    calls are refused; two-factor calls are still verified)."""
    a, _, _ = await three_devices(store)
    lockout = {"max_guess_probability": P_FOR_10, "max_total_guess_probability": 2 * P_FOR_10}
    c = cfg(tmp_path, lockout=lockout, inbound={"require_registered_number": True})
    svc = await service(store, c)
    assert svc.guard.budgets()[:2] == (10, 20)
    got = [await verify(svc, g, source=f"IAX2/host{i}") for i, g in enumerate(guesses(25))]
    assert got == [Verdict.MISMATCH] * 20 + [Verdict.LOCKED_OUT] * 5
    out = await svc.verify(VerifyRequest(presented=key(a, T, c), source="PJSIP/fresh", call_id="k"))
    assert (out.verdict, out.detail) == (Verdict.LOCKED_OUT, {"lockout": "source"})
    got = await verify(svc, key(a, T, c), mode=Mode.DNIS, caller="15550001110", source="PJSIP/fresh", call_id="2f")
    assert got is Verdict.ADMITTED
    await svc.audit.drain()


async def test_a_source_going_over_budget_is_announced_once(store: Store, tmp_path: Path) -> None:
    await three_devices(store)
    svc = await service(store, cfg(tmp_path, lockout={"max_guess_probability": P_FOR_10}))
    events: list[LockoutEvent] = []
    svc.guard.alert = events.append
    for g in guesses(25):
        await verify(svc, g, source=TRUNK)
    assert events == [LockoutEvent("source", TRUNK, None, 10, 10, 0)]
    await svc.audit.drain()


async def test_concurrent_guesses_never_exceed_the_budget(store: Store, tmp_path: Path) -> None:
    """From half the budget on a guess is reserved before it is evaluated, so 40 at once evaluate exactly 10."""
    await three_devices(store)
    svc = await service(store, cfg(tmp_path, lockout={"max_guess_probability": P_FOR_10}))
    got = await asyncio.gather(*(verify(svc, g, source=TRUNK) for g in guesses(40)))
    assert Counter(got) == Counter({Verdict.LOCKED_OUT: 30, Verdict.MISMATCH: 10})
    assert sum((await LockoutStore(store).source_hours(TRUNK, 0)).values()) == 10
    await svc.audit.drain()


async def test_successes_near_the_budget_give_their_reservation_back(store: Store, tmp_path: Path) -> None:
    devices = await three_devices(store)
    c = cfg(tmp_path, lockout={"max_guess_probability": P_FOR_10})
    svc = await service(store, c)
    for g in guesses(9):
        assert await verify(svc, g, source=TRUNK) is Verdict.MISMATCH
    for i, d in enumerate(devices):  # genuine calls in the strict band: reserved, then given back
        assert await verify(svc, key(d, T, c), source=TRUNK, call_id=f"g{i}") is Verdict.ADMITTED
    assert await verify(svc, guesses(1, 9)[0], source=TRUNK) is Verdict.MISMATCH  # the 10th failure
    assert await verify(svc, guesses(1, 10)[0], source=TRUNK) is Verdict.LOCKED_OUT
    await svc.audit.drain()


async def test_guesses_stop_counting_after_a_day(store: Store, tmp_path: Path) -> None:
    await three_devices(store)
    clock = Clock(T)
    svc = await service(store, cfg(tmp_path, lockout={"max_guess_probability": P_FOR_10}), clock)
    for g in guesses(11):
        await verify(svc, g, source=TRUNK)
    clock.t += DAY_MS - 3_600 * S  # 23 hours later: still spent
    assert await verify(svc, guesses(1, 20)[0], source=TRUNK) is Verdict.LOCKED_OUT
    clock.t += 2 * 3_600 * S  # 25 hours after the guesses: free again, and their rows purged
    assert await verify(svc, guesses(1, 21)[0], source=TRUNK) is Verdict.MISMATCH
    assert sum((await LockoutStore(store).source_hours(TRUNK, 0)).values()) == 1
    await svc.audit.drain()


async def test_either_mode_counts_each_number_it_tries(store: Store, tmp_path: Path) -> None:
    await three_devices(store)
    svc = await service(store, cfg(tmp_path, lockout={"max_guess_probability": P_FOR_10}))
    dialed, callers = guesses(5), guesses(5, 100)
    for d, c in zip(dialed, callers, strict=True):  # a well-formed dialed number, then the caller number: 2 guesses
        assert await verify(svc, c, mode=Mode.EITHER, dialed=d, caller=c, source=TRUNK) is Verdict.MISMATCH
    assert await verify(svc, "5512345678", mode=Mode.EITHER, dialed="100", caller="5512345678", source=TRUNK) is (
        Verdict.LOCKED_OUT
    )
    await svc.audit.drain()


async def test_either_mode_with_two_factor_never_admits_on_the_key_alone(store: Store, tmp_path: Path) -> None:
    """Issue 12, Medium: with `inbound.mode = either` a dialed number that holds no live key fell back to ANI, where
    `require_registered_number` did not apply: a key presented as the caller number was admitted on its own."""
    a, _, _ = await three_devices(store)
    c = cfg(tmp_path, inbound={"require_registered_number": True, "mode": "either"})
    svc = await service(store, c)
    k = key(a, T, c)
    out = await svc.verify(VerifyRequest(presented=k, mode=Mode.EITHER, dialed="4930123456", caller=k, call_id="1"))
    assert out.verdict is Verdict.MISMATCH and out.device_id is None
    # the same key dialed by the device's registered number is two-factor, and admitted
    out = await svc.verify(
        VerifyRequest(presented="15550001110", mode=Mode.EITHER, dialed=k, caller="15550001110", call_id="2")
    )
    assert (out.verdict, out.device_id, out.mode) == (Verdict.ADMITTED, a.id, Mode.DNIS)
    await svc.audit.drain()
    assert [r.subject for r in await store.list_audit(action="verify")] == [None, "15550001110"]  # never the key


async def test_two_services_on_one_database_grant_one_budget(db_url: str, tmp_path: Path) -> None:
    """Two nodes sharing the database (PostgreSQL when SECURELINK_TEST_DATABASE_URL is set): the source budget and a
    registered number's allowance are one, not one per node."""
    stores = [Store.from_url(db_url), Store.from_url(db_url)]
    try:
        a, b, _ = await three_devices(stores[0])
        c = cfg(tmp_path, lockout={"max_guess_probability": P_FOR_10}, inbound={"require_registered_number": True})
        nodes = [await service(s, c) for s in stores]
        mono = Clock(1000.0)
        for n in nodes:
            n.guard.monotonic = mono
        # both nodes cold, 30 guesses at once, then one at a time: 10 fail, between them
        got = await asyncio.gather(*(verify(nodes[i % 2], g, source=TRUNK) for i, g in enumerate(guesses(30))))
        got += [await verify(nodes[i % 2], g, source=TRUNK) for i, g in enumerate(guesses(8, 30))]
        assert Counter(got) == Counter({Verdict.MISMATCH: 10, Verdict.LOCKED_OUT: 28})
        assert sum((await LockoutStore(stores[1]).source_hours(TRUNK, 0)).values()) == 10
        for i, n in enumerate(nodes):  # over budget on both, and two-factor calls are still verified on both
            assert await verify(n, guesses(1, 90)[0], source=TRUNK) is Verdict.LOCKED_OUT
            got_a = await verify(n, key(a, T + i * 30 * S, c), mode=Mode.DNIS, caller="15550001110", call_id=f"a{i}")
            assert got_a is Verdict.ADMITTED
        # B's number: 15 failures on one node and 15 on the other make 30 together, its allowance (P*S/W)
        assert nodes[0].guard.budgets()[2] == 30
        for i, g in enumerate(guesses(30, 200)):
            assert await verify(nodes[i % 2], g, mode=Mode.DNIS, caller="15550001111") is Verdict.MISMATCH
        mono.t += 1.5  # each node trusts what it read of the shared state for at most a second
        for i, n in enumerate(nodes):
            got_b = await verify(n, key(b, T, c), mode=Mode.DNIS, caller="15550001111", call_id=f"b{i}")
            assert got_b is Verdict.LOCKED_OUT
        for n in nodes:
            await n.audit.drain()
    finally:
        for s in stores:
            await s.close()


async def test_far_below_the_budget_a_genuine_call_writes_nothing_and_at_zero_no_key_alone_call_passes(
    store: Store, tmp_path: Path
) -> None:
    devices = await three_devices(store)
    c = cfg(tmp_path, lockout={"max_guess_probability": P_FOR_10})
    svc = await service(store, c)
    assert await verify(svc, key(devices[0], T, c), source=TRUNK, call_id="g") is Verdict.ADMITTED
    assert await LockoutStore(store).source_hours(TRUNK, 0) == {}
    z = cfg(tmp_path, lockout={"max_guess_probability": 5e-10}, inbound={"require_registered_number": True})
    zero = await service(store, z)  # one guess is 9e-10, likelier than the target: no key-alone call at all
    assert zero.guard.budget() == 0
    assert await verify(zero, key(devices[1], T, c), source=TRUNK, call_id="z") is Verdict.LOCKED_OUT
    got = await verify(zero, key(devices[1], T, c), mode=Mode.DNIS, caller="15550001111", source=TRUNK, call_id="y")
    assert got is Verdict.ADMITTED  # two-factor is not limited by the source's budget
    await svc.audit.drain()
    await zero.audit.drain()


async def test_disabled_lockout_counts_nothing(store: Store, tmp_path: Path) -> None:
    await three_devices(store)
    svc = await service(store, cfg(tmp_path, lockout={"enabled": False, "max_guess_probability": P_FOR_10}))
    assert {await verify(svc, g, source=TRUNK) for g in guesses(20)} == {Verdict.MISMATCH}
    assert await LockoutStore(store).source_hours(TRUNK, 0) == {}
    await svc.audit.drain()


async def test_many_registered_numbers_are_indexed_again_off_the_event_loop(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asterisk_securelink.inbound import service as service_module

    monkeypatch.setattr(service_module, "NUMBERS_BUILT_INLINE", 0)  # as if there were more than 2,000 devices
    await three_devices(store)
    svc = await service(store, cfg(tmp_path, inbound={"require_registered_number": True}))
    assert svc._named_devices("15550001110") != ()
    d = await registered(store, "D", "+15550001119", "kid-d")
    await svc.keys.sync_devices()
    assert svc._named_devices("15550001119") == ()  # the old index answers while the new one is built
    assert svc._numbers_task is not None
    await svc._numbers_task
    assert svc._named_devices("15550001119") == (d.id,)
    await svc.audit.drain()
