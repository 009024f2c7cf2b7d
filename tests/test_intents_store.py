"""Intents in the shared store (`store.intents.IntentStore`) on SQLite and PostgreSQL: create, repeat, replace, the
rate limit and the quiet window; the spend within the ttl and exactly for the access number, once; cancel on conflict
and the raced report; noise records and their clearing; purge; and two nodes racing one intent."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from asterisk_securelink.store.intent_models import CallIntent, IntentNoise
from asterisk_securelink.store.intents import (
    RATE_WINDOW_MS,
    AdmitResult,
    CreateOutcome,
    CreateResult,
    Intent,
    IntentStore,
)
from asterisk_securelink.store.lanes import Lanes, lanes_for
from asterisk_securelink.store.store import DeviceRow, Store, StoreError

NOW = 1_790_000_000_000
TTL = 30
QUIET = 120
ACCESS = "+12025550100"
OTHER_ACCESS = "+12025550101"


class Node:
    """One node: its own engine and lanes on the shared database."""

    def __init__(self, url: str) -> None:
        self.store = Store.from_url(url)
        self.lanes: Lanes = lanes_for(self.store.engine)
        self.intents = IntentStore(self.store, self.lanes)

    async def close(self) -> None:
        await self.lanes.close()
        await self.store.close()


@pytest.fixture
async def node(db_url: str) -> AsyncIterator[Node]:
    n = Node(db_url)
    try:
        yield n
    finally:
        await n.close()


@pytest.fixture
async def two(db_url: str) -> AsyncIterator[tuple[Node, Node]]:
    a, b = Node(db_url), Node(db_url)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def device(n: Node, i: int = 1) -> DeviceRow:
    return await n.store.add_device(f"Dev {i}", f"+1555000000{i}", None, f"dev-000{i}", "test")


async def create(n: Node, dev: DeviceRow, at: int = NOW, access: str = ACCESS, idem: str | None = None,
                 dest: str | None = "2001", **kw: Any) -> CreateResult:  # fmt: skip
    kw.setdefault("quiet_s", QUIET)
    return await n.intents.create(dev.id, access, dest, at, TTL, idem, **kw)


async def created(n: Node, dev: DeviceRow, **kw: Any) -> Intent:
    r = await create(n, dev, **kw)
    assert r.outcome is CreateOutcome.CREATED and r.intent is not None
    return r.intent


async def rows(n: Node) -> dict[str, CallIntent]:
    async with n.store.sessions() as s:
        return {r.id: r for r in (await s.execute(select(CallIntent))).scalars()}


async def noise(n: Node) -> list[tuple[int, str, int]]:
    async with n.store.sessions() as s:
        q = select(IntentNoise.device_id, IntentNoise.channel, IntentNoise.at_ms).order_by(IntentNoise.id)
        return [(int(d), str(c), int(t)) for d, c, t in (await s.execute(q)).all()]


# -- create ----------------------------------------------------------------------------------------------------
async def test_create_answers_a_fresh_intent(node: Node) -> None:
    dev = await device(node)
    r = await create(node, dev, dest=None)
    assert r.outcome is CreateOutcome.CREATED and r.replaced == ()
    i = r.intent
    assert i is not None
    assert uuid.UUID(i.intent_id).version == 4 and uuid.UUID(i.call_id).version == 4 and i.intent_id != i.call_id
    assert (i.device_id, i.access_number, i.destination, i.created_ms, i.expires_ms) == (
        dev.id, ACCESS, None, NOW, NOW + TTL * 1000)  # fmt: skip
    row = (await rows(node))[i.intent_id]
    assert (row.call_id, row.spent_ms, row.cancelled_ms, row.idempotency_key) == (i.call_id, None, None, None)


async def test_the_same_idempotency_key_answers_the_same_intent_while_it_lives(node: Node) -> None:
    dev, other = await device(node, 1), await device(node, 2)
    first = await created(node, dev, idem="k-1")
    again = await create(node, dev, at=NOW + 5000, idem="k-1", access=OTHER_ACCESS)
    assert again.outcome is CreateOutcome.REPEATED and again.intent == first
    assert (await created(node, other, idem="k-1")).intent_id != first.intent_id  # another device's key
    no_key = await created(node, dev, at=NOW + 6000, idem="")  # empty: no idempotency, a new intent
    assert no_key.intent_id != first.intent_id
    assert (await rows(node))[no_key.intent_id].idempotency_key is None
    # the first was replaced by it, so the same key now makes a new intent
    after = await created(node, dev, at=NOW + 7000, idem="k-1")
    assert after.intent_id not in (first.intent_id, no_key.intent_id)
    # expired: new again
    assert (await created(node, dev, at=after.expires_ms, idem="k-1")).intent_id != after.intent_id


async def test_a_repeat_after_the_spend_is_a_new_intent(node: Node) -> None:
    dev = await device(node)
    first = await created(node, dev, idem="k")
    assert (await node.intents.admit([dev.id], ACCESS, "PJSIP/a-1", NOW + 1000)).admitted
    assert (await created(node, dev, at=NOW + 2000, idem="k")).intent_id != first.intent_id


async def test_a_new_intent_replaces_the_live_one(node: Node) -> None:
    dev = await device(node)
    old = await created(node, dev)
    r = await create(node, dev, at=NOW + 1000)
    assert r.outcome is CreateOutcome.CREATED and r.intent is not None and r.replaced == (old.intent_id,)
    assert (await rows(node))[old.intent_id].cancelled_ms == NOW + 1000
    admitted = await node.intents.admit([dev.id], ACCESS, "PJSIP/a-1", NOW + 2000)
    assert admitted.intent == r.intent  # the new one matches, the old one does not
    assert (await rows(node))[old.intent_id].spent_ms is None


async def test_at_most_per_minute_intents_a_rolling_minute(node: Node) -> None:
    dev, other = await device(node, 1), await device(node, 2)
    for k in range(10):
        await created(node, dev, at=NOW + k * 1000)
    limited = await create(node, dev, at=NOW + 30_500)
    assert limited.outcome is CreateOutcome.RATE_LIMITED and limited.intent is None
    assert limited.retry_after_s == 30  # the oldest of the ten (NOW) leaves the minute at NOW + 60 000
    assert (await create(node, other, at=NOW + 30_500)).outcome is CreateOutcome.CREATED  # per device
    last = await created(node, dev, at=NOW + RATE_WINDOW_MS, idem="x")  # the oldest has left
    again = await create(node, dev, at=NOW + 60_500, idem="x")
    assert again.outcome is CreateOutcome.REPEATED and again.intent == last  # a repeat is not refused nor counted
    refused = await create(node, dev, at=NOW + 60_500)
    assert (refused.outcome, refused.retry_after_s) == (CreateOutcome.RATE_LIMITED, 1)  # NOW + 1000 leaves next
    assert len([r for r in (await rows(node)).values() if r.device_id == dev.id]) == 11  # refusals wrote nothing


async def test_per_minute_is_the_callers(node: Node) -> None:
    dev = await device(node)
    await created(node, dev, per_minute=2)
    await created(node, dev, at=NOW + 1, per_minute=2)
    r = await create(node, dev, at=NOW + 2, per_minute=2)
    assert (r.outcome, r.retry_after_s) == (CreateOutcome.RATE_LIMITED, 60)
    assert (await create(node, dev, at=NOW + 2, per_minute=3)).outcome is CreateOutcome.CREATED


async def test_an_intent_within_the_quiet_window_of_a_noise_record_is_refused(node: Node) -> None:
    dev, other = await device(node, 1), await device(node, 2)
    miss = await node.intents.admit([dev.id], ACCESS, "PJSIP/spoof-1", NOW)  # a probe: no live intent
    assert not miss.admitted and miss.noise == (dev.id,)
    r = await create(node, dev, at=NOW + QUIET * 1000 - 1)
    assert (r.outcome, r.intent, r.noise_ms) == (CreateOutcome.USE_DTMF, None, NOW)
    assert (await create(node, other, at=NOW + 1000)).outcome is CreateOutcome.CREATED  # its own noise only
    assert (await create(node, dev, at=NOW + QUIET * 1000)).outcome is CreateOutcome.CREATED
    assert (await create(node, dev, at=NOW + 10, quiet_s=0, idem="q")).outcome is CreateOutcome.CREATED


async def test_create_for_no_such_device_fails(node: Node) -> None:
    with pytest.raises(StoreError):
        await node.intents.create(999, ACCESS, None, NOW, TTL, None, quiet_s=QUIET)
    dev = await device(node)
    with pytest.raises(ValueError):
        await node.intents.create(dev.id, ACCESS, None, NOW, TTL, "k" * 129, quiet_s=QUIET)
    assert await rows(node) == {}


# -- admit ------------------------------------------------------------------------------------------------------
async def test_admit_spends_the_live_intent_within_its_ttl(node: Node) -> None:
    dev = await device(node)
    intent = await created(node, dev)
    r = await node.intents.admit([dev.id], ACCESS, "PJSIP/a-1", intent.expires_ms - 1)
    assert r == AdmitResult(intent) and r.admitted
    row = (await rows(node))[intent.intent_id]
    assert (row.spent_ms, row.spent_channel, row.cancelled_ms) == (intent.expires_ms - 1, "PJSIP/a-1", None)
    assert await noise(node) == []  # an admitted call is not noise
    again = await node.intents.admit([dev.id], ACCESS, "PJSIP/a-1", intent.expires_ms - 1)
    assert again == AdmitResult(intent)  # the same channel again (a second Stasis entry) is not a second use
    assert (await rows(node))[intent.intent_id].spent_ms == intent.expires_ms - 1


async def test_admit_after_the_ttl_misses(node: Node) -> None:
    dev = await device(node)
    intent = await created(node, dev)
    r = await node.intents.admit([dev.id], ACCESS, "PJSIP/a-1", intent.expires_ms)
    assert r == AdmitResult(None, (), (dev.id,))  # a miss: noise, nothing to cancel (the intent is dead)
    assert (await rows(node))[intent.intent_id].spent_ms is None
    assert await noise(node) == [(dev.id, "PJSIP/a-1", intent.expires_ms)]


async def test_another_access_number_misses_and_cancels_the_intent(node: Node) -> None:
    dev = await device(node)
    intent = await created(node, dev)
    r = await node.intents.admit([dev.id], OTHER_ACCESS, "PJSIP/x-1", NOW + 1000)
    assert not r.admitted and r.raced == () and r.noise == (dev.id,)
    (c,) = r.conflicts
    assert (c.intent_id, c.call_id, c.device_id, c.access_number, c.spent_channel, c.raced) == (
        intent.intent_id, intent.call_id, dev.id, ACCESS, None, False)  # fmt: skip
    assert (await rows(node))[intent.intent_id].cancelled_ms == NOW + 1000
    late = await node.intents.admit([dev.id], ACCESS, "PJSIP/a-1", NOW + 2000)  # the right number, too late
    assert not late.admitted and late.conflicts == ()


async def test_a_second_call_misses_and_reports_the_race(node: Node) -> None:
    dev = await device(node)
    intent = await created(node, dev)
    assert (await node.intents.admit([dev.id], ACCESS, "PJSIP/spoof-1", NOW + 1000)).admitted  # the spoofer first
    r = await node.intents.admit([dev.id], ACCESS, "PJSIP/victim-1", NOW + 2000)
    assert not r.admitted and r.noise == (dev.id,)
    (c,) = r.raced
    assert (c.intent_id, c.spent_channel) == (intent.intent_id, "PJSIP/spoof-1")  # the call to hang up
    assert (await rows(node))[intent.intent_id].cancelled_ms == NOW + 2000
    third = await node.intents.admit([dev.id], ACCESS, "PJSIP/victim-2", NOW + 3000)
    assert not third.admitted and third.conflicts == ()  # reported once
    assert not (await node.intents.admit([dev.id], ACCESS, "PJSIP/spoof-1", NOW + 3000)).admitted  # cancelled


async def test_a_spent_intent_past_its_ttl_is_not_a_race(node: Node) -> None:
    dev = await device(node)
    intent = await created(node, dev)
    assert (await node.intents.admit([dev.id], ACCESS, "PJSIP/a-1", NOW + 1000)).admitted
    r = await node.intents.admit([dev.id], ACCESS, "PJSIP/a-2", intent.expires_ms)
    assert not r.admitted and r.conflicts == () and r.noise == (dev.id,)


async def test_another_devices_call_does_not_take_the_intent(node: Node) -> None:
    dev, other = await device(node, 1), await device(node, 2)
    intent = await created(node, dev)
    r = await node.intents.admit([other.id], ACCESS, "PJSIP/b-1", NOW + 1000)
    assert r == AdmitResult(None, (), (other.id,))
    assert (await node.intents.admit([other.id, dev.id], ACCESS, "PJSIP/a-1", NOW + 2000)).intent == intent
    assert await noise(node) == [(other.id, "PJSIP/b-1", NOW + 1000)]


async def test_a_suspended_device_is_not_admitted(node: Node) -> None:
    dev = await device(node)
    intent = await created(node, dev)
    await node.store.update_device(dev.id, "device.suspend", "test", status="suspended")
    r = await node.intents.admit([dev.id], ACCESS, "PJSIP/a-1", NOW + 1000)
    assert not r.admitted and r.noise == (dev.id,)
    assert (await rows(node))[intent.intent_id].spent_ms is None


async def test_a_miss_writes_noise_for_every_device_of_the_number(node: Node) -> None:
    a, b = await device(node, 1), await device(node, 2)
    ia, ib = await created(node, a), await created(node, b, access=OTHER_ACCESS)
    r = await node.intents.admit([b.id, a.id, 999], "+12025550199", "PJSIP/x-1", NOW + 1000)
    assert r.noise == (a.id, b.id)  # 999: no such device, nothing written for it
    assert sorted(c.intent_id for c in r.conflicts) == sorted([ia.intent_id, ib.intent_id])
    assert await noise(node) == [(a.id, "PJSIP/x-1", NOW + 1000), (b.id, "PJSIP/x-1", NOW + 1000)]
    assert await node.intents.admit([], ACCESS, "PJSIP/y-1", NOW) == AdmitResult(None)
    assert await node.intents.admit([999], ACCESS, "PJSIP/y-1", NOW) == AdmitResult(None)
    assert len(await noise(node)) == 2


async def test_clear_noise_deletes_the_record_that_call_wrote(node: Node) -> None:
    dev = await device(node)
    await node.intents.admit([dev.id], ACCESS, "PJSIP/a-1", NOW)
    await node.intents.admit([dev.id], ACCESS, "PJSIP/a-2", NOW + 1000)
    assert (await create(node, dev, at=NOW + 2000)).outcome is CreateOutcome.USE_DTMF
    assert await node.intents.clear_noise(dev.id, "PJSIP/a-1") == 1  # admitted by DTMF
    assert await node.intents.clear_noise(dev.id + 1, "PJSIP/a-2") == 0  # another device's: none
    assert await noise(node) == [(dev.id, "PJSIP/a-2", NOW + 1000)]
    assert (await create(node, dev, at=NOW + 2000)).outcome is CreateOutcome.USE_DTMF  # the other call's stays
    assert await node.intents.clear_noise(dev.id, "PJSIP/a-2") == 1
    assert (await create(node, dev, at=NOW + 2000)).outcome is CreateOutcome.CREATED


async def test_purge(node: Node) -> None:
    dev, other, third = await device(node, 1), await device(node, 2), await device(node, 3)
    await created(node, dev)
    await node.intents.admit([dev.id], OTHER_ACCESS, "PJSIP/n-1", NOW + 1000)  # noise, and cancels it
    await node.intents.admit([other.id], OTHER_ACCESS, "PJSIP/n-2", NOW + 30_000)
    # at NOW + 59 999 the intent expired but is within the rate limit's minute: kept
    assert await node.intents.purge(NOW + 59_999, QUIET) == {"intents": 0, "noise": 0}
    at = NOW + 1000 + QUIET * 1000
    live = await created(node, third, at=at - 10_000)
    assert await node.intents.purge(at, QUIET) == {"intents": 1, "noise": 1}
    assert set(await rows(node)) == {live.intent_id}
    assert await noise(node) == [(other.id, "PJSIP/n-2", NOW + 30_000)]
    assert await node.intents.purge(at, 0) == {"intents": 0, "noise": 1}  # a shorter window: every record goes
    assert await noise(node) == [] and set(await rows(node)) == {live.intent_id}  # a live intent stays
    assert await node.intents.purge(live.created_ms + RATE_WINDOW_MS, 0) == {"intents": 1, "noise": 0}
    assert await rows(node) == {}


# -- several nodes ----------------------------------------------------------------------------------------------
ROUNDS = 20


async def test_two_nodes_racing_one_intent_admit_exactly_one(two: tuple[Node, Node]) -> None:
    a, b = two
    dev = await device(a)
    for k in range(ROUNDS):
        at = NOW + k * RATE_WINDOW_MS
        intent = await created(a, dev, at=at, quiet_s=0)
        ra, rb = await asyncio.gather(
            a.intents.admit([dev.id], ACCESS, f"PJSIP/a-{k}", at + 1000),
            b.intents.admit([dev.id], ACCESS, f"PJSIP/b-{k}", at + 1000),
        )
        assert [ra.admitted, rb.admitted].count(True) == 1, f"round {k}: {ra} {rb}"
        won, lost = (ra, rb) if ra.admitted else (rb, ra)
        winner = f"PJSIP/{'a' if ra.admitted else 'b'}-{k}"
        assert won.intent == intent
        assert [c.spent_channel for c in lost.raced] == [winner]  # the loser sees the race and names the winner
        assert (await rows(a))[intent.intent_id].spent_channel == winner


async def test_two_nodes_creating_at_once_leave_one_live_intent_and_keep_the_limit(two: tuple[Node, Node]) -> None:
    a, b = two
    dev = await device(a)
    results = await asyncio.gather(*(n.intents.create(dev.id, ACCESS, "2001", NOW + i, TTL, None, quiet_s=QUIET)
                                     for i, n in enumerate((a, b) * 6)))  # fmt: skip
    outcomes = [r.outcome for r in results]
    assert outcomes.count(CreateOutcome.CREATED) == 10 and outcomes.count(CreateOutcome.RATE_LIMITED) == 2
    live = [r for r in (await rows(a)).values() if r.cancelled_ms is None]
    assert len(live) == 1
    r = await b.intents.admit([dev.id], ACCESS, "PJSIP/a-1", NOW + 1000)
    assert r.intent is not None and r.intent.intent_id == live[0].id


async def test_two_nodes_with_one_idempotency_key_make_one_intent(two: tuple[Node, Node]) -> None:
    a, b = two
    dev = await device(a)
    results = await asyncio.gather(*(n.intents.create(dev.id, ACCESS, "2001", NOW, TTL, "same", quiet_s=QUIET)
                                     for n in (a, b, a, b)))  # fmt: skip
    assert len({r.intent for r in results}) == 1
    assert sorted(r.outcome for r in results) == sorted([CreateOutcome.CREATED] + [CreateOutcome.REPEATED] * 3)
    assert len(await rows(a)) == 1


def _process_racer(url: str, device_id: int, name: str, barrier: Any, out: Any) -> None:
    """One node in its own process: node-a creates each round's intent before the start line, then both admit."""

    async def go() -> list[tuple[bool, list[str | None]]]:
        n = Node(url)
        results = []
        try:
            async with n.store.engine.connect():  # warm the connection before the start line
                pass
            for k in range(ROUNDS):
                at = NOW + k * RATE_WINDOW_MS
                if name == "a":
                    await n.intents.create(device_id, ACCESS, "2001", at, TTL, None, quiet_s=0)
                barrier.wait()
                r = await n.intents.admit([device_id], ACCESS, f"PJSIP/{name}-{k}", at + 1000)
                results.append((r.admitted, [c.spent_channel for c in r.raced]))
                barrier.wait()  # both done before the next round's intent
        finally:
            await n.close()
        return results

    out.put((name, asyncio.run(go())))


async def test_two_processes_racing_one_intent_admit_exactly_one(node: Node, db_url: str) -> None:
    import multiprocessing as mp

    dev = await device(node)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    out = ctx.Queue()
    procs = [ctx.Process(target=_process_racer, args=(db_url, dev.id, n, barrier, out)) for n in ("a", "b")]
    for p in procs:
        p.start()
    results = dict(await asyncio.to_thread(lambda: [out.get(timeout=120) for _ in procs]))
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    for k in range(ROUNDS):
        (won_a, raced_a), (won_b, raced_b) = results["a"][k], results["b"][k]
        assert won_a != won_b, f"round {k}: a={won_a} b={won_b}"
        assert (raced_b if won_a else raced_a) == [f"PJSIP/{'a' if won_a else 'b'}-{k}"]
