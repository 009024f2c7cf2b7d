"""The verification service end to end on a real database (no Asterisk): every verdict of the fixed set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from support.clock import Clock, S, T
from support.keys import MASTER
from support.services import cfg, key, make_service, registered, verify

from asterisk_securelink.audit import AuditWriter
from asterisk_securelink.config import Config
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret
from asterisk_securelink.core.verdicts import Mode, Verdict
from asterisk_securelink.inbound.service import VerificationService, VerifyRequest
from asterisk_securelink.store.store import DeviceRow, Store


@pytest.fixture
async def svc(store: Store, tmp_path: Path) -> AsyncIterator[VerificationService]:
    s = make_service(cfg(tmp_path), store, clock_ms=Clock(T), device_sync_interval=0)
    await s.start()
    yield s
    await s.audit.drain()  # the background audit writer finishes before the store closes


async def test_current_previous_and_old_windows(store: Store, svc: VerificationService) -> None:
    d = await registered(store, "A", "15550001", "kid-a")
    c = svc.config
    assert await verify(svc, key(d, T - 30 * S, c), call_id="c0") is Verdict.ADMITTED  # previous window
    assert await verify(svc, key(d, T, c), call_id="c1") is Verdict.ADMITTED  # current window
    d2 = await registered(store, "B", "15550002", "kid-b")
    assert await verify(svc, key(d2, T - 60 * S, c), call_id="c2") is Verdict.MISMATCH  # two windows old
    assert await verify(svc, key(d2, T + 60 * S, c), call_id="c3") is Verdict.MISMATCH  # beyond look_ahead 1
    assert await verify(svc, key(d2, T, c, Direction.OUTBOUND), call_id="c4") is Verdict.MISMATCH


async def test_once_only_but_same_call_again_is_fine(store: Store, svc: VerificationService) -> None:
    d = await registered(store, "A", "15550001", "kid-a")
    k = key(d, T, svc.config)
    assert await verify(svc, k, call_id="call-1") is Verdict.ADMITTED
    assert await verify(svc, k, call_id="call-1") is Verdict.ADMITTED  # retransmission / second Stasis entry
    assert await verify(svc, k, call_id="call-2") is Verdict.REPLAYED
    # the previous window's key is spent too, once the current one was used
    assert await verify(svc, key(d, T - 30 * S, svc.config), call_id="call-3") is Verdict.REPLAYED


async def test_status_verdicts(store: Store, svc: VerificationService) -> None:
    new = await store.add_device("New", "15550003", None, "kid-new", "test")
    susp = await registered(store, "S", "15550004", "kid-s")
    await store.update_device(susp.id, "device.suspend", "test", status="suspended")
    rev = await registered(store, "R", "15550005", "kid-r")
    await store.update_device(rev.id, "device.revoke", "test", status="revoked", revoke_reason="lost")
    out = await svc.verify(VerifyRequest(presented=key(new, T, svc.config), call_id="n"))
    assert (out.verdict, out.device_id) == (Verdict.UNREGISTERED, new.id)
    # a suspended or revoked device's valid key gets what a wrong key gets (no oracle; docs/decisions.md)
    assert await verify(svc, key(susp, T, svc.config)) is Verdict.MISMATCH
    assert await verify(svc, key(rev, T, svc.config)) is Verdict.MISMATCH


async def test_revocation_takes_effect_immediately(store: Store, svc: VerificationService) -> None:
    d = await registered(store, "A", "15550001", "kid-a")
    await svc.keys.sync_devices()  # indexed: the revocation below reaches the index only at the next sync
    await store.update_device(d.id, "device.revoke", "test", status="revoked")
    assert await verify(svc, key(d, T, svc.config)) is Verdict.MISMATCH  # the status read with the spend stops it


async def test_rotated_device_old_key_stops_working(store: Store, svc: VerificationService) -> None:
    d = await registered(store, "A", "15550001", "kid-a")
    old = key(d, T, svc.config)
    d = await store.update_device(d.id, "device.rotate", "test", key_id="kid-a2")
    svc.clock_ms.t += S  # type: ignore[attr-defined]
    assert await verify(svc, old, call_id="x") is Verdict.MISMATCH
    assert await verify(svc, key(d, T, svc.config), call_id="y") is Verdict.ADMITTED


@pytest.mark.parametrize(
    ("raw", "verdict"),
    [
        (None, Verdict.ANONYMOUS),
        ("", Verdict.ANONYMOUS),
        ("anonymous", Verdict.ANONYMOUS),
        ("Restricted", Verdict.ANONYMOUS),
        ("abc", Verdict.MALFORMED),
        ("9" * 64, Verdict.MALFORMED),
        ("'; DROP TABLE devices; --", Verdict.MALFORMED),
        ("١٢٣٤٥٦٧٨٩٠", Verdict.MALFORMED),
        ("12", Verdict.MALFORMED),
    ],
)
async def test_anonymous_and_malformed(svc: VerificationService, raw: str | None, verdict: Verdict) -> None:
    assert await verify(svc, raw) is verdict


async def _colliding_pair(store: Store, c: Config) -> tuple[DeviceRow, DeviceRow]:
    """Two devices whose keys collide in the current epoch of a 10^6 format (searched deterministically)."""
    seen: dict[str, str] = {}
    epoch = T // (c.keys.period * S)
    for i in range(20000):
        kid = f"coll-{i}"
        k = derive_key(device_secret(MASTER, kid), Direction.INBOUND, epoch, c.inbound_fmt)
        if k in seen:
            a = await registered(store, "A", "15550001", seen[k])
            b = await registered(store, "B", "15550002", kid)
            return a, b
        seen[k] = kid
    raise AssertionError("no collision found")


async def test_collision_is_ambiguous_unless_the_caller_number_narrows_it(store: Store, tmp_path: Path) -> None:
    c = cfg(tmp_path, keys={"inbound_format": "XXXXXX"})
    a, b = await _colliding_pair(store, c)
    svc = make_service(c, store, clock_ms=Clock(T), device_sync_interval=0)
    await svc.start()
    k = key(a, T, c)
    assert k == key(b, T, c)
    out = await svc.verify(VerifyRequest(presented=k, call_id="x"))
    assert (out.verdict, out.device_id) == (Verdict.AMBIGUOUS, None)
    out = await svc.verify(VerifyRequest(presented=k, mode=Mode.DNIS, caller="+1 555 0002", call_id="y"))
    assert (out.verdict, out.device_id) == (Verdict.ADMITTED, b.id)


async def test_two_factor_checks_only_the_callers_device(store: Store, tmp_path: Path) -> None:
    c = cfg(tmp_path, inbound={"require_registered_number": True})
    svc = make_service(c, store, clock_ms=Clock(T), device_sync_interval=0)
    a = await registered(store, "A", "15550001", "kid-a")
    await registered(store, "B", "15550002", "kid-b")
    await svc.start()
    k = key(a, T, c)
    assert await verify(svc, k, mode=Mode.DNIS, caller="15550002", call_id="1") is Verdict.MISMATCH
    assert await verify(svc, k, mode=Mode.DNIS, caller="15550001", call_id="2") is Verdict.ADMITTED
    k2 = key(a, T + 30 * S, c)
    svc.clock_ms.t += 30 * S  # type: ignore[attr-defined]
    for caller in (None, "anonymous", ""):  # no caller number: nothing picks the device, so no admission
        assert await verify(svc, k2, mode=Mode.DNIS, caller=caller, call_id=f"n{caller}") is Verdict.MISMATCH
    assert await verify(svc, k2, mode=Mode.DNIS, caller="15550001", call_id="3") is Verdict.ADMITTED  # not spent
    await svc.audit.drain()


async def test_two_factor_leaves_ani_mode_alone(store: Store, tmp_path: Path) -> None:
    c = cfg(tmp_path, inbound={"require_registered_number": True})
    svc = make_service(c, store, clock_ms=Clock(T), device_sync_interval=0)
    a = await registered(store, "A", "15550001", "kid-a")
    await svc.start()
    assert await verify(svc, key(a, T, c), mode=Mode.ANI, call_id="1") is Verdict.ADMITTED
    await svc.audit.drain()


async def test_audit_subject_is_never_the_presented_key(store: Store, svc: VerificationService) -> None:
    d = await registered(store, "A", "15550001", "kid-a")
    k = key(d, T, svc.config)
    await verify(svc, k, mode=Mode.ANI, caller=k, call_id="1")
    await verify(svc, "12345", mode=Mode.EITHER, caller=k, dialed="12345", call_id="2")
    await svc.audit.drain()
    rows = await store.list_audit(action="verify")
    assert len(rows) == 2 and all(r.subject is None for r in rows)


async def test_either_mode_prefers_the_dialed_number(store: Store, svc: VerificationService) -> None:
    d = await registered(store, "A", "15550001", "kid-a")
    out = await svc.verify(
        VerifyRequest(presented="15550001", dialed=key(d, T, svc.config), mode=Mode.EITHER, caller="15550001")
    )
    assert (out.verdict, out.mode) == (Verdict.ADMITTED, Mode.DNIS)


async def test_device_added_after_start_is_found(store: Store, svc: VerificationService) -> None:
    d = await registered(store, "Late", "15550009", "kid-late")
    assert await verify(svc, key(d, T, svc.config), call_id="z") is Verdict.ADMITTED


async def test_epoch_roll_refreshes_the_index(store: Store, svc: VerificationService) -> None:
    d = await registered(store, "A", "15550001", "kid-a")
    svc.clock_ms.t += 3600 * S  # type: ignore[attr-defined]
    assert await verify(svc, key(d, T + 3600 * S, svc.config), call_id="r") is Verdict.ADMITTED
    assert svc.keys.index.current == (T + 3600 * S) // (30 * S)


async def test_every_verdict_is_audited_without_the_key(store: Store, svc: VerificationService) -> None:
    d = await registered(store, "A", "15550001", "kid-a")
    k = key(d, T, svc.config)
    await verify(svc, k, call_id="a1", channel="PJSIP/carrier-1")
    await verify(svc, "abc")
    assert await svc.audit.drain()
    events = await store.list_audit(action="verify")
    assert [e.result for e in events] == ["admitted", "malformed"]
    assert events[0].device_id == d.id and events[0].call_id == "a1" and events[0].channel == "PJSIP/carrier-1"
    for e in await store.list_audit():
        assert k not in " ".join(str(v) for v in vars(e).values())


async def test_database_down_is_error_and_audit_is_kept(store: Store, tmp_path: Path) -> None:
    svc = make_service(cfg(tmp_path), store, clock_ms=Clock(T), device_sync_interval=0)
    d = await registered(store, "A", "15550001", "kid-a")
    await svc.start()
    good_engine = store.engine
    store.engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/missing-dir/x.sqlite3")
    store.sessions.configure(bind=store.engine)
    out = await svc.verify(VerifyRequest(presented=key(d, T, svc.config), call_id="down"))
    assert out.verdict is Verdict.ERROR
    assert not await svc.audit.drain()  # cannot be written now ...
    assert svc.audit.pending == 1  # ... so it is kept
    await store.engine.dispose()
    store.engine = good_engine
    store.sessions.configure(bind=good_engine)
    assert await verify(svc, "abc") is Verdict.MALFORMED
    assert await svc.audit.drain()
    assert svc.audit.pending == 0
    assert [e.result for e in await store.list_audit(action="verify")] == ["error", "malformed"]


async def test_concurrent_verifications_write_exactly_one_audit_row_each(
    store: Store, svc: VerificationService
) -> None:
    import asyncio

    devices = [await registered(store, f"C{i}", f"1555100{i:04d}", f"kid-c{i}") for i in range(10)]
    before = len(await store.list_audit(action="verify", limit=10_000))
    c = svc.config
    numbers = [key(d, T, c) for d in devices] + [f"99999{i:05d}" for i in range(10)]
    got = await asyncio.gather(*(verify(svc, n, call_id=f"cc{i}") for i, n in enumerate(numbers)))
    assert await svc.audit.drain()
    assert got.count(Verdict.ADMITTED) == 10
    rows = await store.list_audit(action="verify", limit=10_000)
    assert len(rows) - before == 20  # twenty calls, twenty rows: none lost, none written twice
    assert svc.audit.pending == 0


async def test_the_verdict_does_not_wait_for_the_audit_write(store: Store, svc: VerificationService) -> None:
    import asyncio

    gate = asyncio.Event()
    real = store.audit_many

    async def slow(events: list[dict[str, object]]) -> None:
        await gate.wait()  # the audit database is stuck
        await real(events)

    svc.audit = AuditWriter(slow)
    d = await registered(store, "S", "15550009", "kid-s")
    out = await asyncio.wait_for(svc.verify(VerifyRequest(presented=key(d, T, svc.config), call_id="s1")), 2)
    assert out.verdict is Verdict.ADMITTED  # decided while the audit write still hangs
    assert await store.list_audit(action="verify") == []
    gate.set()
    assert await svc.audit.drain()
    assert [e.result for e in await store.list_audit(action="verify")] == ["admitted"]


async def test_outbound_key_is_slk1_outbound_for_the_device(store: Store, tmp_path: Path) -> None:
    c = cfg(tmp_path, keys={"outbound_format": "+1NXXNXXXXXX"})
    svc = make_service(c, store, clock_ms=Clock(T))
    want = derive_key(device_secret(MASTER, "kid-o"), Direction.OUTBOUND, 59666667, c.outbound_fmt)
    assert svc.keys.outbound_key("kid-o", 59666667) == want
    assert want != derive_key(device_secret(MASTER, "kid-o"), Direction.INBOUND, 59666667, c.outbound_fmt)
