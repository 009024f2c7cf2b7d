"""The guard's daily cap across two nodes sharing PostgreSQL (CALLING.md, "Several nodes"): node 1 is `securelink`
(the testbed's `4XX`), node 2 a second `securelink run` as Stasis app `securelink2` (the testbed's `0` + `4XX`), on one
database and one master key. With `max_per_day = 2`, one call through each node uses the device's day, and a third
call, on either node, is `rate_limited` and never reaches its destination.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from harness import Home, ami_monitor, new_home, next_window, no_channels_left, start_app, stop_app, wait_until
from sipp import dtmf_steps, run_dtmf_call, uas
from support.pg import empty_pg_database

ROUTED = "TestbedRouted"
NODE2 = "securelink2"
ROUTING = """[routing]
home = "extension:8000"
allowed = ["_X."]
max_per_day = 2
max_call_seconds = 10
"""


def with_routing(h: Home) -> Home:
    config = h.path / "securelink.toml"
    text = config.read_text()
    config.write_text(text[: text.index("[routing]")] + ROUTING)
    return h


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with empty_pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[tuple[Home, Home]]:
    one = with_routing(new_home(tmp_path_factory.mktemp("node1"), db_url=pg_url))
    two_path = tmp_path_factory.mktemp("node2")
    shutil.copy2(one.path / "master.key", two_path / "master.key")
    two = with_routing(new_home(two_path, db_url=pg_url, app=NODE2))
    run1, _ = start_app(one, agi=False)
    run2, _ = start_app(two, name=NODE2, agi=False)
    try:
        yield one, two
    finally:
        stop_app(one, run1)
        stop_app(two, run2)


async def through(home: Home, dev: dict[str, Any], node: int) -> None:
    """One DTMF call-through to 2041 on node 1 (`400`) or node 2 (`0400`), with the key of a fresh window."""
    await asyncio.to_thread(next_window)
    steps = dtmf_steps(home.key(dev) + "#2041#", first_ms=800, gap_ms=200)
    called = "400" if node == 1 else "0400"
    await asyncio.to_thread(run_dtmf_call, dev["mobile_number"].lstrip("+"), called, steps, hold_ms=8_000)


async def test_the_daily_cap_holds_across_two_nodes(nodes: tuple[Home, Home]) -> None:
    one, _node2 = nodes  # node 2 is reached through the testbed's 0 + 4XX
    dev = json.loads(one.cli("device", "add", "Capped", "--number", "+15556000001", "--desk-endpoint", "PJSIP/1001",
                             "--json").stdout)  # fmt: skip
    one.cli("device", "register", str(dev["id"]))
    await asyncio.sleep(1.5)  # node 2 learns the device from the shared database (its index refresh)
    with uas(5070) as colleague:
        async with ami_monitor(ROUTED) as routed:
            await through(one, dev, 1)
            await through(one, dev, 2)
            await through(one, dev, 1)
            await asyncio.sleep(1)
            reached = [e for e in routed.events if e.get("Dest") == "2041"]
        assert [i.from_user for i in colleague.invites_to("2041")] == ["1001", "1001"]
    assert len(reached) == 2  # the destination's dialplan ran for two calls, not three
    no_channels_left(20)
    rows = [r for r in one.audit("route") if r.get("device") == dev["id"]]
    assert [(r["result"], r["detail"]["reason"]) for r in rows] == [("rate_limited", "max_per_day")]
    wait_until(lambda: len(json.loads(one.cli("calls", "list", "--json").stdout)) >= 3, 10, "three call records")
    nodes_seen = {r["node"] for r in json.loads(one.cli("calls", "list", "--json").stdout)}
    assert len(nodes_seen) == 2  # each node wrote the records of its own calls
