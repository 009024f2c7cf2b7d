"""The audit writer's batches (`store.audit_rows.insert_audit`) on SQLite and PostgreSQL: every row as given, in
one transaction; in the driver's own terms (`store.driver`), whose use is proven by taking the generic path away,
and through the generic Core path."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from support.driver import generic_path_forbidden, not_run

from asterisk_securelink.store import audit_rows
from asterisk_securelink.store.store import Store, audit_fields


@pytest.fixture(autouse=True, params=["fast", "generic"])
def write_path(request: pytest.FixtureRequest, db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "generic":
        monkeypatch.setattr(audit_rows, "run_fast", not_run)
    else:
        monkeypatch.setattr(AsyncEngine, "begin", generic_path_forbidden("an audit batch written"))
    return str(request.param)


async def test_a_batch_is_written_row_for_row(store: Store) -> None:
    at = datetime(2026, 12, 6, 14, 0, 0, 123000, tzinfo=UTC)
    rows = [
        audit_fields("verify", "admitted", "stasis", device_id=i, call_id=f"c-{i}", channel=f"PJSIP/t-{i}",
                     source="trunk", detail={"method": "ani", "n": i}, created_at=at)
        for i in range(50)
    ]  # fmt: skip
    rows.append(audit_fields("route", "rate_limited", None, subject="+15550001111"))
    await store.audit_many(rows)
    got = await store.list_audit(limit=100)
    assert len(got) == 51
    verify = sorted((e for e in got if e.action == "verify"), key=lambda e: e.device_id or 0)
    assert [(e.device_id, e.call_id, e.channel, e.source, e.actor) for e in verify] == [
        (i, f"c-{i}", f"PJSIP/t-{i}", "trunk", "stasis") for i in range(50)
    ]
    assert [json.loads(e.detail or "") for e in verify][7] == {"method": "ani", "n": 7}
    if store.engine.dialect.name == "sqlite":  # PostgreSQL stamps created_at with its own clock (migration 0010)
        assert {e.created_at for e in verify} == {at}
    [route] = [e for e in got if e.action == "route"]
    assert (route.result, route.subject, route.detail, route.device_id) == ("rate_limited", "+15550001111", None, None)


async def test_a_batch_with_a_row_that_cannot_be_written_writes_none(store: Store) -> None:
    good = [audit_fields("verify", "admitted", "stasis", call_id=f"c-{i}") for i in range(3)]
    bad = audit_fields("verify", "admitted", "stasis")
    bad["action"] = None  # NOT NULL
    with pytest.raises(Exception) as caught:
        await store.audit_many([*good, bad])
    assert "NOT NULL" in str(caught.value).upper() or "null value" in str(caught.value)
    await store.audit_many(good)  # the connection is usable afterwards, its transaction was ended
    assert [e.call_id for e in await store.list_audit()] == ["c-0", "c-1", "c-2"]


async def test_an_empty_batch_writes_nothing(store: Store) -> None:
    await store.audit_many([])
    assert await store.list_audit() == []
