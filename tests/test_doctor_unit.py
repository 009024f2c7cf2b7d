"""The doctor's readings of AMI answers (pure): transports in pjsip.conf, and which contexts route to securelink."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

from asterisk_securelink import config, doctor
from asterisk_securelink.cli.service import cmd_doctor
from asterisk_securelink.doctor import Check, entry_routes, transports_in
from asterisk_securelink.store.store import Store


def test_transports_are_categories_of_type_transport() -> None:
    answer = {
        "Response": "Success",
        "Category-000000": "global",
        "Category-000001": "transport-udp",
        "Category-000002": "carrier",
        "Line-000000-000000": "type=global",
        "Line-000001-000000": "type=transport",
        "Line-000001-000001": "protocol=udp",
        "Line-000002-000000": "type = endpoint",
        "Line-000002-000001": "transport=transport-udp",
    }
    assert transports_in(answer) == ["transport-udp"]
    assert transports_in({"Category-000000": "global", "Line-000000-000000": "type=global"}) == []


def test_entry_routes_name_the_admins_contexts_that_reach_an_entry_context() -> None:
    events = [
        {"Context": "from-carrier", "Application": "Goto", "AppData": "securelink-inbound,${EXTEN},1"},
        {"Context": "from-carrier2", "Application": "Goto", "AppData": "securelink-inbound-dnis,${EXTEN:4},1"},
        {"Context": "other", "Application": "Dial", "AppData": "PJSIP/1001"},
        {"Context": "lookalike", "Application": "Goto", "AppData": "securelink-inbound-extra,s,1"},
        {"Context": "securelink-inbound", "Application": "Stasis", "AppData": "securelink,inbound,ani"},
        {"Context": "includer", "IncludeContext": "securelink-inbound-agi"},
    ]
    assert entry_routes(events) == ["from-carrier", "from-carrier2", "includer"]
    assert entry_routes([events[2], events[3], events[4]]) == []


def test_a_warning_passes_but_says_so() -> None:
    w = Check("SIP transport", False, "none", "add one", warn=True)
    assert w.passed and w.line().startswith("[warn]") and "fix: add one" in w.line()
    assert not Check("database", False, "x").passed


def _fails(exc: Exception) -> Callable[..., NoReturn]:
    def check(cfg: config.Config, *store: object) -> NoReturn:
        raise exc

    return check


def _afails(exc: Exception) -> Callable[..., Awaitable[NoReturn]]:
    async def check(cfg: config.Config, *store: object) -> NoReturn:
        raise exc

    return check


async def test_an_unexpected_exception_in_a_check_is_a_fail_line_never_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each check that raises becomes FAIL naming the exception type, never its text (it may hold a secret), and the
    checks after it still run."""
    monkeypatch.setattr(doctor, "master_key_check", _fails(ValueError("s3cret in a message")))
    monkeypatch.setattr(doctor, "database_check", _afails(RuntimeError("s3cret")))
    monkeypatch.setattr(doctor, "key_checks", _afails(KeyError("s3cret")))
    monkeypatch.setattr(doctor, "ari_checks", _afails(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "s3cret")))
    monkeypatch.setattr(doctor, "ami_checks", _afails(AssertionError("s3cret")))
    monkeypatch.setattr(doctor, "routing_checks", _afails(LookupError("s3cret")))
    cfg = config.build({}, {}, tmp_path)
    checks = await doctor.run_checks(cfg)
    assert [(c.name, c.ok, c.warn) for c in checks] == [
        ("master key", False, False),
        ("database", False, False),
        ("keys", False, False),
        ("ARI", False, False),
        ("AMI", False, False),
        ("routing", False, False),
    ]
    types = ["ValueError", "RuntimeError", "KeyError", "UnicodeDecodeError", "AssertionError", "LookupError"]
    assert all(f"({t})" in c.detail for c, t in zip(checks, types, strict=True))
    assert await cmd_doctor(argparse.Namespace(json=False), cfg) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and "s3cret" not in out.out + out.err
    assert all(line.startswith(("[FAIL]", "        fix:")) for line in out.out.splitlines())


async def test_one_store_serves_the_whole_run_and_is_closed_at_its_end(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The database, key and guess-budget checks share one Store (not one each), closed when the run ends."""
    opened: list[Store] = []
    closed: list[Store] = []

    class Counted(Store):
        @classmethod
        def from_url(cls, url: str, **kwargs: Any) -> Store:
            opened.append(store := Store.from_url(url, **kwargs))
            real_close = store.close

            async def close() -> None:
                closed.append(store)
                await real_close()

            store.close = close  # type: ignore[method-assign]
            return store

    seen: list[Store] = []

    async def keys(cfg: config.Config, store: Store) -> list[Check]:
        seen.append(store)
        return []

    monkeypatch.setattr(doctor, "Store", Counted)
    monkeypatch.setattr(doctor, "key_checks", keys)
    monkeypatch.setattr(doctor, "budget_checks", keys)
    monkeypatch.setattr(doctor, "ari_checks", _afails(OSError("no network in a unit test")))
    monkeypatch.setattr(doctor, "ami_checks", _afails(OSError("no network in a unit test")))
    (tmp_path / "data").mkdir()
    cfg = config.build({"database": {"url": f"sqlite:///{tmp_path / 'data' / 'db.sqlite'}"}}, {}, tmp_path)
    checks = await doctor.run_checks(cfg)
    assert [c.name for c in checks][:2] == ["master key", "database"]
    assert len(opened) == 1 and seen == [opened[0], opened[0]] and closed == opened


def test_dtmf_windows_must_cover_the_call_setup(tmp_path: Path) -> None:
    from asterisk_securelink.doctor.calling import dtmf_window_check

    short = config.build({"keys": {"period": 5}, "calling": {"access_numbers": ["+12155550400"]}}, {}, tmp_path)
    check = dtmf_window_check(short)  # dtmf_setup_s 20 at period 5 needs look_behind 4
    assert not check.ok and "look_behind = 4" in check.fix and "bits" in check.fix
    fine = config.build({"keys": {"period": 30}, "calling": {"access_numbers": ["+12155550400"]}}, {}, tmp_path)
    assert dtmf_window_check(fine).ok  # 20 s within one 30 s window


def test_intent_defences_are_named(tmp_path: Path) -> None:
    from asterisk_securelink.doctor.calling import intent_defences_check

    on = config.build({"calling": {"access_numbers": ["+12155550400"]}}, {}, tmp_path)
    detail = intent_defences_check(on).detail
    assert "120 s quiet window" in detail and "cancel on conflict" in detail and "attestation off" in detail
    off = config.build({"calling": {"access_numbers": ["+12155550400"], "intent": "off"}}, {}, tmp_path)
    assert intent_defences_check(off).detail.startswith("off")


async def test_no_access_numbers_no_calling_checks(tmp_path: Path) -> None:
    from asterisk_securelink.doctor.calling import calling_checks

    assert await calling_checks(config.build({}, {}, tmp_path)) == []  # off: nothing to check, no ARI call


async def test_routing_checks_warn_of_an_open_allowed_and_of_devices_without_an_identity(
    store: Store, tmp_path: Path
) -> None:
    from dataclasses import replace

    from asterisk_securelink.config import RoutingConfig
    from asterisk_securelink.doctor.routing import guard_check, no_route_check

    cfg = config.build({}, {}, tmp_path)
    assert guard_check(cfg).ok and "allowed _XXXX" in guard_check(cfg).detail
    wide = guard_check(replace(cfg, routing=RoutingConfig(allowed=("_XXXX", "_X."))))
    assert wide.warn and not wide.ok and "_X." in wide.detail
    desk = await store.add_device("Desk", "+15550000001", "PJSIP/1001", "dev-desk", "test")
    bare = await store.add_device("Bare", "+15550000002", None, "dev-bare", "test")
    check = await no_route_check(cfg, store)
    assert check.warn and f": {bare.id}" in check.detail and str(desk.id) not in check.detail.split(":")[-1]
    defaults = replace(cfg, routing=RoutingConfig(default_context="from-internal", default_callerid="<1000>"))
    assert (await no_route_check(defaults, store)).ok
