"""The device API's store (`store.api_store.ApiStore`) on SQLite and PostgreSQL: single-use codes under concurrency,
nonces shared by two nodes, vouchers released once, the claim window, purges, and no secret at rest."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from support.deviceapi_fakes import PARAMS
from support.driver import generic_path_forbidden, not_run
from support.keys import MASTER
from support.services import api_store as make_api_store

from asterisk_securelink.callkeys import store as voucher_store
from asterisk_securelink.callkeys.vouchers import RowIdentity, VoucherError, VoucherKeys
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.slk1 import device_secret
from asterisk_securelink.deviceapi.codes import code_hash, new_code
from asterisk_securelink.deviceapi.ports import ClaimOutcome
from asterisk_securelink.deviceapi.signing import NONCE_KEEP
from asterisk_securelink.store import driver, lanes, statements
from asterisk_securelink.store.api_models import CallVoucher
from asterisk_securelink.store.api_store import CLOCK_MARGIN_S, ApiStore, add_code, expire_codes, fork_set_by
from asterisk_securelink.store.models import Device
from asterisk_securelink.store.store import DeviceRow, Store

NOW = 1_790_000_000_000
KEY = bytes(range(200, 232))
OUT_FMT = NumberFormat("+1NXXNXXXXXX")


@pytest.fixture(autouse=True, params=["fast", "generic"])
def statement_path(request: pytest.FixtureRequest, db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a hot statement runs (`store.statements`): on SQLite straight on the driver's thread, whose use is
    proven by taking the generic path away, and the generic path on a lane (PostgreSQL's only one)."""
    if request.param == "generic":
        monkeypatch.setattr(statements, "run_on_driver", not_run)
        monkeypatch.setattr(statements, "run_together", not_run)
    elif db_url.startswith("sqlite"):
        forbidden = generic_path_forbidden("a hot statement on SQLite")
        monkeypatch.setattr(statements, "_rows_on_lane", forbidden)
        monkeypatch.setattr(statements, "_write_on_lane", forbidden)
    return str(request.param)


class Node:
    """One API node: its own engine on the shared database."""

    def __init__(self, store: Store, clock: list[float]) -> None:
        self.events: list[dict[str, Any]] = []
        self.api = make_api_store(store, MASTER, PARAMS, audit=self.events.append, clock_s=lambda: clock[0])


@pytest.fixture
async def nodes(db_url: str) -> AsyncIterator[tuple[Node, Node, list[float]]]:
    clock = [NOW / 1000]
    a, b = Store.from_url(db_url), Store.from_url(db_url)
    try:
        yield Node(a, clock), Node(b, clock), clock
    finally:
        await a.close()
        await b.close()


async def device(api: ApiStore, n: int = 1) -> DeviceRow:
    return await api.store.add_device(f"Dev {n}", f"+1555000000{n}", None, f"dev-000{n}", "test")


async def voucher(api: ApiStore, dev: DeviceRow, presented: str = "+12677638475", *, call: str = "call-1",
                  key_id: str = "ck-1", at: int = NOW, ttl: int = 90) -> None:  # fmt: skip
    p = api.vouchers.keys.of_key(dev.id, OUT_FMT, presented)
    await api.vouchers.add(key_id, call, dev.id, "outbound", p, KEY, at, ttl)


# -- activation codes ------------------------------------------------------------------------------------------
async def test_a_code_redeems_once_even_when_two_nodes_race(nodes: tuple[Node, Node, list[float]]) -> None:
    a, b, _ = nodes
    dev = await device(a.api)
    code = new_code()
    await add_code(a.api.store, dev.id, dev.key_id, code_hash(code), NOW, 900, "cli")
    tries = [n.api.redeem_code(code_hash(code), NOW + 1000) for n in (a, b) * 5]
    results = await asyncio.gather(*tries)
    won = [r for r in results if r is not None]
    assert len(won) == 1
    (r,) = won
    assert (r.device_id, r.key_id, r.secret) == (dev.id, dev.key_id, device_secret(MASTER, dev.key_id))
    assert "secret=<hidden>" in repr(r)
    assert await a.api.redeem_code(code_hash(code), NOW + 2000) is None  # used


async def test_unknown_expired_rotated_and_revoked_codes_do_not_redeem(store: Store) -> None:
    api = make_api_store(store, MASTER, PARAMS, audit=lambda e: None)
    dev = await device(api)
    codes = [new_code() for _ in range(4)]
    for c in codes:
        await add_code(api.store, dev.id, dev.key_id, code_hash(c), NOW, 60, "cli")
    assert await api.redeem_code(code_hash(new_code()), NOW) is None  # unknown
    assert await api.redeem_code(code_hash(codes[0]), NOW + 60_000) is None  # expired at exactly the TTL
    assert await expire_codes(api.store, dev.id, NOW + 1) == 4
    assert await api.redeem_code(code_hash(codes[1]), NOW + 2) is None  # a re-enrollment expired it
    fresh = new_code()
    await add_code(api.store, dev.id, dev.key_id, code_hash(fresh), NOW, 60, "cli")
    await store.update_device(dev.id, "device.rotate", "test", key_id="dev-0099")
    assert await api.redeem_code(code_hash(fresh), NOW + 3) is None  # made for the old key_id
    revoked = new_code()
    await add_code(api.store, dev.id, "dev-0099", code_hash(revoked), NOW, 60, "cli")
    await store.update_device(dev.id, "device.revoke", "test", status="revoked")
    assert await api.redeem_code(code_hash(revoked), NOW + 4) is None
    audit = [e.action for e in await store.list_audit()]
    assert audit.count("device.activation") == 6


# -- nonces ----------------------------------------------------------------------------------------------------
async def test_a_nonce_replayed_to_another_node_is_refused_until_it_expires(
    nodes: tuple[Node, Node, list[float]],
) -> None:
    a, b, clock = nodes
    expires = int(NOW / 1000) + 61
    assert await a.api.nonce_insert_if_absent("dev-0001", "nonce-0000000001", expires)
    assert not await b.api.nonce_insert_if_absent("dev-0001", "nonce-0000000001", expires)
    assert not await a.api.nonce_insert_if_absent("dev-0001", "nonce-0000000001", expires)
    assert await b.api.nonce_insert_if_absent("dev-0002", "nonce-0000000001", expires)  # per key_id
    results = await asyncio.gather(*(n.api.nonce_insert_if_absent("dev-0001", "race-00000000001", expires)
                                     for n in (a, b) * 4))  # fmt: skip
    assert results.count(True) == 1
    clock[0] = expires + CLOCK_MARGIN_S  # past its time, but not by the margin yet: still refused
    assert not await b.api.nonce_insert_if_absent("dev-0001", "nonce-0000000001", expires + 70)
    clock[0] = expires + CLOCK_MARGIN_S + 1  # past its time and the margin, before any purge: usable again
    assert await b.api.nonce_insert_if_absent("dev-0001", "nonce-0000000001", expires + 70)
    assert not await a.api.nonce_insert_if_absent("dev-0001", "nonce-0000000001", expires + 70)


async def test_a_node_whose_clock_runs_ahead_frees_no_nonce_another_node_still_accepts(db_url: str) -> None:
    """L1 (issue 22): a node 35 s ahead purged the nonce of a request signed at TS, and a replay at TS + 30 was
    accepted by a node with the right time. Now neither its purge nor its takeover frees it in time."""
    ts = NOW // 1000
    right, ahead = [ts + 1.0], [ts + 1.0 + 35]
    a, b = Store.from_url(db_url), Store.from_url(db_url)
    try:
        good, fast = Node(a, right), Node(b, ahead)
        expires = ts + NONCE_KEEP
        assert await good.api.nonce_insert_if_absent("dev-0001", "nonce-0000000001", expires)
        right[0], ahead[0] = ts + 30, ts + 30 + 35  # TS + 30: the fast node thinks it is TS + 65
        assert (await fast.api.purge(int(ahead[0] * 1000)))["nonces"] == 0
        assert not await fast.api.nonce_insert_if_absent("dev-0001", "nonce-0000000001", expires + 70)
        assert not await good.api.nonce_insert_if_absent("dev-0001", "nonce-0000000001", expires)  # the replay
        right[0], ahead[0] = ts + 65, ts + 65 + 35
        await fast.api.purge(int(ahead[0] * 1000))
        assert not await good.api.nonce_insert_if_absent("dev-0001", "nonce-0000000001", expires)  # kept: margin
    finally:
        await a.close()
        await b.close()


# -- vouchers --------------------------------------------------------------------------------------------------
async def test_a_voucher_is_released_once_then_409_and_repeats_with_its_idempotency_key(
    nodes: tuple[Node, Node, list[float]],
) -> None:
    a, b, _ = nodes
    dev = await device(a.api)
    await voucher(a.api, dev)
    results = await asyncio.gather(*(n.api.claim(dev.id, "+12677638475", NOW + 500, "idem-1") for n in (a, b) * 3))
    outcomes = sorted(r.outcome.value for r in results)
    assert outcomes.count("released") == 1
    assert set(outcomes) <= {"released", "repeated"}  # the same Idempotency-Key: the same answer
    for r in results:
        assert (r.call_id, r.call_key_id, r.call_key) == ("call-1", "ck-1", KEY)
    again = await b.api.claim(dev.id, "+12677638475", NOW + 600, "idem-1")
    assert again.outcome is ClaimOutcome.REPEATED and again.call_key == KEY
    other = await a.api.claim(dev.id, "+12677638475", NOW + 700, "idem-2")
    assert other.outcome is ClaimOutcome.ALREADY_CLAIMED and other.call_key is None
    assert (await a.api.claim(dev.id, "+12677638475", NOW + 800, None)).outcome is ClaimOutcome.ALREADY_CLAIMED
    assert "KEY" not in repr(again) and KEY.hex() not in repr(again)


async def test_a_release_lost_to_another_node_between_read_and_update_reads_again(
    nodes: tuple[Node, Node, list[float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window between a claim's read and its conditional UPDATE: node b releases (or the call hangs up) there;
    node a's UPDATE then changes nothing, and a fresh read decides: repeat, already claimed, or ended."""
    a, b, _ = nodes
    dev = await device(a.api)
    real_release = voucher_store._release
    meanwhile: list[Any] = []

    async def release_after_others(c: Any, voucher_id: str, now_ms: int, idem: str | None) -> bool:
        if meanwhile:
            await meanwhile.pop()
        return await real_release(c, voucher_id, now_ms, idem)

    monkeypatch.setattr(voucher_store, "_release", release_after_others)
    await voucher(a.api, dev)
    meanwhile.append(b.api.claim(dev.id, "+12677638475", NOW + 1, "idem-1"))
    r = await a.api.claim(dev.id, "+12677638475", NOW + 2, "idem-1")
    assert (r.outcome, r.call_key_id, r.call_key) == (ClaimOutcome.REPEATED, "ck-1", KEY)
    await voucher(a.api, dev, call="call-2", key_id="ck-2", at=NOW + 10)
    meanwhile.append(b.api.claim(dev.id, "+12677638475", NOW + 11, "idem-b"))
    r = await a.api.claim(dev.id, "+12677638475", NOW + 12, "idem-a")
    assert (r.outcome, r.reason, r.call_id, r.call_key) == (ClaimOutcome.ALREADY_CLAIMED, "released_before",
                                                            "call-2", None)  # fmt: skip
    assert await a.api.vouchers.end_call("call-1") == 1 and await a.api.vouchers.end_call("call-2") == 1
    await voucher(a.api, dev, call="call-3", key_id="ck-3", at=NOW + 20)
    meanwhile.append(b.api.vouchers.end_call("call-3"))
    r = await a.api.claim(dev.id, "+12677638475", NOW + 21, "idem-a")
    assert (r.outcome, r.reason, r.call_key) == (ClaimOutcome.NOT_FOUND, "ended", None)


async def test_a_suspension_revocation_or_rotation_holds_from_the_next_request(store: Store) -> None:
    """No cache of devices: `by_key_id` reads the row on every request."""
    api = make_api_store(store, MASTER, PARAMS, audit=lambda e: None)
    dev = await device(api)
    view = await api.by_key_id(dev.key_id)
    assert view is not None and (view.device_id, view.status, view.fork) == (dev.id, "provisioned", True)
    await store.update_device(dev.id, "device.suspend", "test", status="suspended")
    view = await api.by_key_id(dev.key_id)
    assert view is not None and view.status == "suspended"
    await store.update_device(dev.id, "device.rotate", "test", key_id="dev-0077")
    assert await api.by_key_id(dev.key_id) is None
    await store.update_device(dev.id, "device.revoke", "test", status="revoked")
    view = await api.by_key_id("dev-0077")
    assert view is not None and (view.key_id, view.status) == ("dev-0077", "revoked")


async def test_a_key_id_a_rotation_retired_is_told_apart_from_an_unknown_one(store: Store) -> None:
    """Revision 2 (403 `rotated`): the key_ids' tombstones say which key_id a rotation retired."""
    api = make_api_store(store, MASTER, PARAMS, audit=lambda e: None)
    dev = await device(api)
    assert not await api.retired(dev.key_id)  # current
    assert not await api.retired("dev-never-issued")
    await store.update_device(dev.id, "device.rotate", "test", key_id="dev-0077")
    await store.update_device(dev.id, "device.rotate", "test", key_id="dev-0078")
    assert await api.retired(dev.key_id) and await api.retired("dev-0077")
    assert not await api.retired("dev-0078") and await api.by_key_id("dev-0078") is not None


async def test_the_kept_connections_close_with_the_store_even_without_close(db_url: str) -> None:
    store = Store.from_url(db_url)
    api = make_api_store(store, MASTER, PARAMS, audit=lambda e: None)
    await asyncio.gather(*(api.by_key_id(f"dev-000{n}") for n in range(8)))
    kept = set(api._lanes._open)
    assert len(kept) == (lanes.PG_LANES if db_url.startswith("postgresql") else 0)
    await store.close()  # no api.close(): the engine's dispose closes them (an open aiosqlite thread blocks exit)
    assert not api._lanes._open and all(c.invalidated or c.closed for c in kept)


async def test_a_claim_matches_by_slk1_1_1_with_the_device_trunk_prefixes(store: Store) -> None:
    api = make_api_store(store, MASTER, PARAMS, audit=lambda e: None)  # PARAMS.trunk = ("0", "00")
    dev, other = await device(api, 1), await device(api, 2)
    for n, shown in enumerate(("2677638475", "12677638475", "012677638475", "0012677638475")):
        await voucher(api, dev, call=f"c{n}", key_id=f"k{n}")
        r = await api.claim(dev.id, shown, NOW + 1, None)
        assert r.outcome is ClaimOutcome.RELEASED, shown
    await voucher(api, dev, call="c9", key_id="k9")
    for wrong in ("92677638475", "2677638476", "677638475", "anonymous", "+1 267 763 847x"):
        r = await api.claim(dev.id, wrong, NOW + 1, None)
        assert (r.outcome, r.reason) == (ClaimOutcome.NOT_FOUND, "wrong_number"), wrong
    r = await api.claim(other.id, "+12677638475", NOW + 1, None)  # another device's claim
    assert (r.outcome, r.reason) == (ClaimOutcome.NOT_FOUND, "no_call")


async def test_the_claim_window_ends_at_the_ttl_or_at_hangup_and_purges_delete_the_sealed_copy(store: Store) -> None:
    api = make_api_store(store, MASTER, PARAMS, audit=lambda e: None)
    dev = await device(api)
    await voucher(api, dev, ttl=90)
    r = await api.claim(dev.id, "+12677638475", NOW + 90_000, None)
    assert (r.outcome, r.reason) == (ClaimOutcome.NOT_FOUND, "expired")
    assert (await api.purge(NOW + 90_000))["vouchers"] == 0  # expired, but kept CLOCK_MARGIN_S for other nodes
    after = NOW + 90_000 + CLOCK_MARGIN_S * 1000
    assert await api.purge(after) == {"vouchers": 1, "nonces": 0, "codes": 0, "enroll_limits": 0}
    assert (await api.claim(dev.id, "+12677638475", NOW + 1, None)).reason == "no_call"
    await voucher(api, dev, call="call-2", key_id="ck-2")
    assert await api.vouchers.end_call("call-2") == 1
    assert (await api.claim(dev.id, "+12677638475", NOW + 1, None)).outcome is ClaimOutcome.NOT_FOUND


async def test_a_call_named_to_its_phone_is_claimed_by_call_id_on_any_node(
    nodes: tuple[Node, Node, list[float]],
) -> None:
    """`{"call_id"}` (an intent's or a callback's call): released once across two nodes, repeated with its
    Idempotency-Key; another device's call and an ended or expired one are not found; `released` tells the node that
    placed the call, whichever node took the claim."""
    a, b, _ = nodes
    dev, other = await device(a.api, 1), await device(a.api, 2)
    await voucher(a.api, dev, call="cb-1", key_id="ck-cb")
    assert not await a.api.vouchers.released("cb-1")
    r = await b.api.claim_by_call_id(other.id, "cb-1", NOW + 1, None)  # not its call: as if it did not exist
    assert (r.outcome, r.reason, r.call_id) == (ClaimOutcome.NOT_FOUND, "no_call", None)
    assert not await a.api.vouchers.released("cb-1")
    results = await asyncio.gather(*(n.api.claim_by_call_id(dev.id, "cb-1", NOW + 2, "idem-1") for n in (a, b) * 3))
    outcomes = sorted(r.outcome.value for r in results)
    assert outcomes == ["released"] + ["repeated"] * 5
    assert {(r.call_id, r.call_key_id, r.call_key) for r in results} == {("cb-1", "ck-cb", KEY)}
    assert await a.api.vouchers.released("cb-1")
    r = await a.api.claim_by_call_id(dev.id, "cb-1", NOW + 3, "idem-2")
    assert (r.outcome, r.reason) == (ClaimOutcome.ALREADY_CLAIMED, "released_before")
    assert (await a.api.claim_by_call_id(dev.id, "cb-2", NOW + 3, None)).reason == "no_call"
    await voucher(a.api, dev, call="cb-3", key_id="ck-3", ttl=90)
    r = await b.api.claim_by_call_id(dev.id, "cb-3", NOW + 90_000, None)
    assert (r.outcome, r.reason) == (ClaimOutcome.NOT_FOUND, "expired")
    assert await a.api.vouchers.end_call("cb-1") == 1
    assert (await b.api.claim_by_call_id(dev.id, "cb-1", NOW + 4, "idem-1")).outcome is ClaimOutcome.NOT_FOUND
    assert not await b.api.vouchers.released("cb-1")


async def test_number_mode_and_inbound_presentations(store: Store) -> None:
    api = make_api_store(store, MASTER, PARAMS, audit=lambda e: None)
    dev = await device(api)
    shown = api.vouchers.keys.of_number(dev.id, "+12155550100")
    await api.vouchers.add("n1", "c-n", dev.id, "outbound", shown, KEY, NOW, 90)
    assert (await api.claim(dev.id, "2155550100", NOW + 1, None)).outcome is ClaimOutcome.RELEASED
    inbound = api.vouchers.keys.of_delivered(dev.id, NumberFormat("+1NXXNXXXXXX"), "12677638475")
    await api.vouchers.add("i1", "c-i", dev.id, "inbound", inbound, KEY, NOW, 90)
    assert (await api.claim(dev.id, "+12677638475", NOW + 1, None)).call_key_id == "i1"


async def test_no_call_key_or_code_at_rest_and_a_sealed_copy_is_bound_to_its_row(db_url: str, store: Store) -> None:
    api = make_api_store(store, MASTER, PARAMS, audit=lambda e: None)
    dev = await device(api)
    code = new_code()
    await add_code(api.store, dev.id, dev.key_id, code_hash(code), NOW, 900, "cli")
    await voucher(api, dev)
    async with store.sessions() as s:
        row = await s.get(CallVoucher, "ck-1")
    assert row is not None and KEY not in row.sealed and "2677638475" not in row.match_tag
    assert (row.call_id, row.device_id, row.direction, row.created_ms, row.expires_ms) == (
        "call-1", dev.id, "outbound", NOW, NOW + 90_000)  # fmt: skip
    assert row.released_ms is None and row.idempotency_key is None
    if db_url.startswith("sqlite"):
        raw = open(db_url.split("///", 1)[1], "rb").read()  # noqa: ASYNC230 - a test reading its own file
        for secret in (KEY, KEY.hex().encode(), code.encode(), b"2677638475"):
            assert secret not in raw
    keys = VoucherKeys(MASTER)
    ident = RowIdentity("ck-1", "call-1", dev.id, "outbound", NOW)
    assert keys.open(row.sealed, ident) == KEY
    for moved in (RowIdentity("ck-2", "call-1", dev.id, "outbound", NOW), RowIdentity("ck-1", "call-1", 99,
                  "outbound", NOW), RowIdentity("ck-1", "call-1", dev.id, "inbound", NOW)):  # fmt: skip
        with pytest.raises(VoucherError):
            keys.open(row.sealed, moved)
    with pytest.raises(VoucherError):
        VoucherKeys(bytes(32)).open(row.sealed, ident)


async def test_set_fork_is_audited_with_its_actor_and_read_back(store: Store) -> None:
    api = make_api_store(store, MASTER, PARAMS, audit=lambda e: None)
    dev = await device(api)
    assert await fork_set_by(store, dev.id) is None
    await api.set_fork(dev.id, False, "device")
    view = await api.by_key_id(dev.key_id)
    assert view is not None and view.fork is False and view.status == "provisioned"
    found = await fork_set_by(store, dev.id)
    assert found is not None and found[0] == "device"
    await store.update_device(dev.id, "device.fork", "cli", detail={"fork": "on"}, fork_enabled=True)
    found = await fork_set_by(store, dev.id)
    assert found is not None and found[0] == "cli"
    assert await api.by_key_id("dev-nope") is None


async def sqlalchemy_rows(api: ApiStore, stmt: Any, values: dict[str, Any]) -> list[Any]:
    async with api._lanes.connection() as c:
        return list(await c.execute(stmt, values))


async def test_a_hot_read_gives_the_rows_sqlalchemy_gives(store: Store) -> None:
    """`store.statements.rows` on either path: the same values, by the same column names, converted by the column
    types (a Boolean is a bool, not SQLite's 0/1)."""
    api = make_api_store(store, MASTER, PARAMS, audit=lambda e: None)
    dev = await device(api)
    await voucher(api, dev)
    await store.update_device(dev.id, "device.fork", "test", fork_enabled=False)
    by_key = select(Device.id, Device.key_id, Device.fork_enabled, Device.home).where(Device.key_id == bindparam("k"))
    (row,) = await statements.rows(api._lanes, by_key, {"k": dev.key_id})
    (generic,) = await sqlalchemy_rows(api, by_key, {"k": dev.key_id})
    assert tuple(row) == tuple(generic) == (dev.id, dev.key_id, False, None)
    assert row.fork_enabled is False and row.key_id == dev.key_id
    of_device = select(CallVoucher.id, CallVoucher.sealed, CallVoucher.released_ms).where(
        CallVoucher.device_id == bindparam("d")
    )
    (v,) = await statements.rows(api._lanes, of_device, {"d": dev.id})
    (g,) = await sqlalchemy_rows(api, of_device, {"d": dev.id})
    assert tuple(v) == tuple(g) and v.id == "ck-1" and isinstance(v.sealed, bytes) and v.released_ms is None
    assert await statements.first(api._lanes, of_device, {"d": dev.id + 1}) is None


async def test_a_failed_hot_write_raises_what_sqlalchemy_raises(store: Store, statement_path: str) -> None:
    """A voucher added twice (its id is the primary key): SQLAlchemy's IntegrityError on either path, on SQLite's
    fast path without the statement's parameters (the sealed key); the first voucher is still there."""
    api = make_api_store(store, MASTER, PARAMS, audit=lambda e: None)
    dev = await device(api)
    await voucher(api, dev)
    with pytest.raises(IntegrityError) as caught:
        await voucher(api, dev, call="call-2")
    if statement_path == "fast" and store.engine.dialect.name == "sqlite":
        assert caught.value.params is None and "[parameters" not in str(caught.value)
        assert isinstance(caught.value.orig, sqlite3.IntegrityError)
    claimed = await api.claim(dev.id, "+12677638475", NOW + 1, None)
    assert (claimed.outcome, claimed.call_id, claimed.call_key) == (ClaimOutcome.RELEASED, "call-1", KEY)


async def test_hot_writes_that_arrive_together_commit_together_and_one_fails_alone(
    store: Store, statement_path: str
) -> None:
    """Three vouchers added at once, the second a duplicate: on SQLite's fast path the two behind the first go
    together in one transaction (the group commit), where the duplicate's savepoint is rolled back alone."""
    api = make_api_store(store, MASTER, PARAMS, audit=lambda e: None)
    dev = await device(api)
    await voucher(api, dev)
    idle = getattr(store.engine.sync_engine, driver._IDLE, None)
    groups = idle.writes.groups if idle is not None else 0
    adds = [voucher(api, dev, call=f"call-{n}", key_id=f"ck-{n}", at=NOW + n) for n in (2, 1, 3)]
    results = await asyncio.gather(*adds, return_exceptions=True)
    assert results[0] is None and isinstance(results[1], IntegrityError) and results[2] is None
    if statement_path == "fast" and idle is not None:
        assert idle.writes.groups == groups + 1
    for call in ("call-1", "call-2", "call-3"):
        r = await api.claim_by_call_id(dev.id, call, NOW + 10, None)
        assert (r.outcome, r.call_key_id) == (ClaimOutcome.RELEASED, "ck-" + call[-1])
