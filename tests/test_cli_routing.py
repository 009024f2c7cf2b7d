"""`securelink device add|set --context --callerid --home`, `device show`'s sources of each routing value (the desk
endpoint read over a fake ARI, or not), and `calls list` of both directions with its filters, JSON and CSV."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support.cli import run

from asterisk_securelink import config
from asterisk_securelink.callkeys.book import CallBook
from asterisk_securelink.cli import devices
from asterisk_securelink.store.migrations import upgrade
from asterisk_securelink.store.store import Store


@pytest.fixture
def home(tmp_path: Path) -> Path:
    run(tmp_path, "init")
    return tmp_path


def add(home: Path, *extra: str, number: str = "+15550100001") -> dict[str, Any]:
    out = json.loads(run(home, "device", "add", "Alice", "--number", number, *extra, "--json").stdout)
    assert isinstance(out, dict)
    return out


def show(home: Path, device: object = 1) -> dict[str, Any]:
    out = json.loads(run(home, "device", "show", str(device), "--json").stdout)
    assert isinstance(out, dict)
    return out


def audit(home: Path, action: str) -> list[dict[str, Any]]:
    out = json.loads(run(home, "audit", "list", "--action", action, "--json").stdout)
    assert isinstance(out, list)
    return out


# -- add / set -----------------------------------------------------------------------------------------------------
def test_add_stores_the_routing_values_as_asterisk_takes_them_and_audits_them(home: Path) -> None:
    d = add(home, "--context", "from-desk", "--callerid", " Alice Smith <1001> ", "--home", "extension:*97")
    assert (d["context"], d["callerid"], d["home"]) == ("from-desk", '"Alice Smith" <1001>', "extension:*97")
    detail = {"name": "Alice", "context": "from-desk", "callerid": '"Alice Smith" <1001>', "home": "extension:*97"}
    assert audit(home, "device.add")[-1]["detail"] == detail
    plain = add(home, number="+15550100002")
    assert (plain["context"], plain["callerid"], plain["home"]) == (None, None, None)


BAD = [
    (["--context", "from desk"], "--context"),
    (["--context", "x" * 80], "--context"),
    (["--context", "a;b"], "--context"),
    (["--callerid", "Alice <10a1>"], "--callerid"),
    (["--callerid", '"Al"ice" <1001>'], "--callerid"),
    (["--callerid", "Al\x1bice <1001>"], "control characters"),
    (["--home", "voicemail"], "--home"),
    (["--home", "extension:_X."], "--home"),
]


def test_bad_routing_values_are_refused_and_change_nothing(home: Path) -> None:
    for args, message in BAD:
        p = run(home, "device", "add", "Bob", "--number", "+15550100003", *args, check=False)
        assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
    assert json.loads(run(home, "device", "list", "--json").stdout) == []
    add(home)
    before = show(home)
    for args, message in BAD[::3]:
        p = run(home, "device", "set", "1", *args, check=False)
        assert p.returncode == 2 and message in p.stderr, (args, p.stderr)
    assert show(home)["updated_at"] == before["updated_at"]


def test_set_changes_and_clears_each_value_and_audits_what_changed(home: Path) -> None:
    add(home, "--context", "from-desk", "--home", "hangup")
    d = json.loads(run(home, "device", "set", "1", "--callerid", "1001", "--home", "", "--json").stdout)
    assert (d["context"], d["callerid"], d["home"]) == ("from-desk", "<1001>", None)
    assert audit(home, "device.set")[-1]["detail"] == {"callerid": "<1001>", "home": None}
    d = json.loads(run(home, "device", "set", "1", "--context", "", "--desk-endpoint", "PJSIP/1001",
                       "--number", "+1 555 010 0009", "--json").stdout)  # fmt: skip
    assert (d["context"], d["desk_endpoint"], d["mobile_number"]) == (None, "PJSIP/1001", "+15550100009")
    assert json.loads(run(home, "device", "set", "1", "--desk-endpoint", "", "--json").stdout)["desk_endpoint"] is None
    nothing = run(home, "device", "set", "1", check=False)
    assert nothing.returncode == 2 and "at least one" in nothing.stderr
    bad_desk = run(home, "device", "set", "1", "--desk-endpoint", "1001", check=False)
    assert bad_desk.returncode == 2 and "--desk-endpoint" in bad_desk.stderr


def test_show_names_the_device_the_defaults_or_no_route(home: Path) -> None:
    add(home, "--callerid", "<1001>")
    r = show(home)["routing"]
    assert r["callerid"] == {"value": "<1001>", "from": "device"}
    assert r["context"] == {"value": None, "from": "none: calls get no_route"}
    assert r["home"] == {"value": "disa", "from": "[routing] home"}
    assert r["desk_endpoint_read"] == "no PJSIP desk endpoint"
    with (home / "securelink.toml").open("a") as f:
        f.write('\n[routing]\ndefault_context = "from-internal"\nhome = "hangup"\n')
    r = show(home)["routing"]
    assert r["context"] == {"value": "from-internal", "from": "[routing] default_context"}
    assert r["home"] == {"value": "hangup", "from": "[routing] home"}
    text = run(home, "device", "show", "1").stdout
    assert "context: from-internal ([routing] default_context)" in text and "callerid: <1001> (device)" in text


def test_show_without_ari_says_the_desk_endpoint_is_read_when_a_call_arrives(home: Path) -> None:
    add(home, "--desk-endpoint", "PJSIP/1001", "--context", "from-desk")
    r = show(home)["routing"]
    assert r["context"] == {"value": "from-desk", "from": "device"}
    later = "desk endpoint PJSIP/1001 when a call arrives, else none: calls get no_route"
    assert r["callerid"] == {"value": None, "from": later}
    assert "[ari] is not configured" in r["desk_endpoint_read"]


# -- show with the desk endpoint read over ARI ---------------------------------------------------------------------
class DeskAri:
    """Just `GET /ari/asterisk/config/dynamic/res_pjsip/endpoint/<name>` (Basic auth securelink / pw)."""

    def __init__(self, endpoints: dict[str, dict[str, str]]) -> None:
        self.endpoints = endpoints
        self.asked: list[str] = []
        self.app = web.Application()
        self.app.router.add_get("/ari/asterisk/config/dynamic/res_pjsip/endpoint/{name}", self.endpoint)

    async def endpoint(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Basic c2VjdXJlbGluazpwdw==":
            return web.json_response({"message": "Authentication required"}, status=401)
        name = request.match_info["name"]
        self.asked.append(name)
        if name not in self.endpoints:
            return web.json_response({"message": "not found"}, status=404)
        return web.json_response([{"attribute": k, "value": v} for k, v in self.endpoints[name].items()])


@pytest.fixture
async def desk_ari() -> AsyncIterator[tuple[DeskAri, str]]:
    fake = DeskAri({"1001": {"context": "from-desk", "callerid": '"Alice" <1001>', "transport": "t-udp"},
                    "1002": {"context": "", "callerid": "not a caller id"}})  # fmt: skip
    runner = web.AppRunner(fake.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


_KEYS = itertools.count(1000)


async def show_in_process(tmp_path: Path, ari_url: str, capsys: pytest.CaptureFixture[str], desk: str,
                          **routing: str) -> dict[str, Any]:  # fmt: skip
    data = {"database": {"url": f"sqlite:///{tmp_path / 'db.sqlite3'}"}, "ari": {"url": ari_url, "password": "pw"},
            "routing": {"default_callerid": "<100>"}}  # fmt: skip
    cfg = config.build(data, {}, tmp_path)
    await upgrade(cfg.database_url)
    store = Store.from_url(cfg.database_url)
    try:
        dev = await store.add_device("Alice", "+15550100001", desk, f"dev-{next(_KEYS)}", "t", routing)
    finally:
        await store.close()
    capsys.readouterr()
    assert await devices.cmd_device_show(argparse.Namespace(device=str(dev.id), json=True), cfg) == 0
    out = json.loads(capsys.readouterr().out)["routing"]
    assert isinstance(out, dict)
    return out


async def test_show_reads_the_desk_endpoint_over_ari(
    tmp_path: Path, desk_ari: tuple[DeskAri, str], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = desk_ari
    r = await show_in_process(tmp_path, url, capsys, "PJSIP/1001", context="own-ctx")
    assert r["context"] == {"value": "own-ctx", "from": "device"}
    assert r["callerid"] == {"value": '"Alice" <1001>', "from": "desk endpoint PJSIP/1001"}
    assert r["desk_endpoint_read"] == "read now over ARI" and fake.asked == ["1001"]


async def test_show_falls_back_past_an_unusable_or_missing_desk_endpoint(
    tmp_path: Path, desk_ari: tuple[DeskAri, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _fake, url = desk_ari
    r = await show_in_process(tmp_path, url, capsys, "PJSIP/1002")  # empty context, a caller ID Asterisk refuses
    assert r["context"] == {"value": None, "from": "none: calls get no_route"}
    assert r["callerid"] == {"value": "<100>", "from": "[routing] default_callerid"}
    r = await show_in_process(tmp_path, url, capsys, "PJSIP/9999")
    assert r["desk_endpoint_read"] == "endpoint 9999 not found in Asterisk"
    assert r["callerid"] == {"value": "<100>", "from": "[routing] default_callerid"}


async def test_show_says_when_ari_is_unreachable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens there now
    r = await show_in_process(tmp_path, f"http://127.0.0.1:{port}", capsys, "PJSIP/1001")
    assert r["desk_endpoint_read"].startswith("not read: ARI unreachable now")
    later = "desk endpoint PJSIP/1001 when a call arrives, else <100> ([routing] default_callerid)"
    assert r["callerid"] == {"value": None, "from": later}


# -- calls list ----------------------------------------------------------------------------------------------------
T0 = datetime.now(UTC) - timedelta(hours=2)


def record(call_id: str, device_id: int | None, direction: str, started: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "call_id": call_id, "device_id": device_id, "direction": direction, "verdict": "admitted",
        "legs": [{"endpoint": "PJSIP/mobile", "channel": "c1", "role": "mobile", "outcome": "answered"}],
        "started_at": started, "answered_at": started + timedelta(seconds=2),
        "ended_at": started + timedelta(minutes=1), "hangup_cause": "normal_clearing", **extra,
    }  # fmt: skip


def write_records(home: Path, *records: dict[str, Any]) -> None:
    async def go() -> None:
        cfg = config.load(home / "securelink.toml", env={})
        store = Store.from_url(cfg.database_url)
        try:
            for r in records:
                await CallBook(cfg, store).record(r)
        finally:
            await store.close()

    asyncio.run(go())


def test_calls_list_shows_both_directions_with_filters_json_and_csv(home: Path) -> None:
    a, b = add(home)["id"], add(home, number="+15550100002")["id"]
    write_records(
        home,
        record("old", a, "inbound", T0 - timedelta(days=2), method="dtmf", caller="+15550100001", destination="2001"),
        record("through", a, "inbound", T0, method="dtmf", caller="withheld", destination="2001", node="pbx-a"),
        record("cb", a, "outbound", T0 + timedelta(minutes=5), method="callback", destination="2002"),
        record("b-in", b, "inbound", T0 + timedelta(minutes=6), method="intent", caller="=HYPERLINK(1)"),
    )

    def ids(*args: str) -> list[str]:
        return [r["call_id"] for r in json.loads(run(home, "calls", "list", *args, "--json").stdout)]

    assert ids() == ["old", "through", "cb", "b-in"]
    assert ids("--device", str(a)) == ["old", "through", "cb"]
    assert ids("--device", add(home, number="+15550100003")["key_id"]) == []  # by key_id
    assert ids("--direction", "outbound") == ["cb"]
    assert ids("--since=-24h") == ["through", "cb", "b-in"] == ids("--since", "24h")
    assert ids("--since", (T0 + timedelta(minutes=1)).isoformat(), "--direction", "inbound") == ["b-in"]
    listed = json.loads(run(home, "calls", "list", "--device", str(a), "--json").stdout)
    assert [(r["method"], r["caller"], r["destination"]) for r in listed] == [
        ("dtmf", "+15550100001", "2001"), ("dtmf", "withheld", "2001"), ("callback", None, "2002")]  # fmt: skip

    rows = list(csv.reader(io.StringIO(run(home, "calls", "list", "--csv").stdout)))
    assert rows[0] == ["started", "device", "direction", "method", "caller", "destination", "answered", "ended",
                       "cause", "legs"]  # fmt: skip
    by_call = dict(zip(["old", "through", "cb", "b-in"], rows[1:], strict=True))
    assert by_call["through"][2:6] == ["inbound", "dtmf", "withheld", "2001"]
    assert by_call["old"][4] == "+15550100001"  # a number stays a number
    assert by_call["b-in"][4] == "'=HYPERLINK(1)"  # a formula does not run in a spreadsheet
    assert by_call["cb"][8:] == ["normal_clearing", "PJSIP/mobile=answered"]

    text = run(home, "calls", "list", "--direction", "inbound").stdout
    assert "caller=withheld" in text and "dest=2001" in text and "cause=normal_clearing" in text
    both = run(home, "calls", "list", "--json", "--csv", check=False)
    assert both.returncode == 2 and "--csv" in both.stderr
    assert run(home, "calls", "list", "--device", "nobody", check=False).returncode == 2


async def test_a_desk_endpoint_asterisk_does_not_know_is_accepted_with_a_warning(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from asterisk_securelink.cli import devices
    from asterisk_securelink.store.store import DeviceRow

    async def not_found(cfg: object, device: DeviceRow) -> tuple[tuple[None, None], str]:
        return (None, None), f"endpoint {device.desk_endpoint} not found in Asterisk"

    monkeypatch.setattr(devices.routing, "read_desk", not_found)
    now = datetime.now(UTC)
    dev = DeviceRow(1, "A", "+15550000001", "PJSIP/1099", "k", "registered", None, True, now, now, None, None)
    await devices._warn_desk(config.build({}, {}, Path.cwd()), dev)
    assert "warning: endpoint PJSIP/1099 not found in Asterisk" in capsys.readouterr().err
