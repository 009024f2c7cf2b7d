"""The Stasis event router (`runner.StasisRunner`): which feature gets a call, and the re-sync after a reconnect."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

from asterisk_securelink import config
from asterisk_securelink.asterisk.ari.events import Channel, StasisStart, parse_event
from asterisk_securelink.runner import StasisRunner
from asterisk_securelink.stasis import CallInfo, waiting_call


class Feature:
    """Stands in for inbound `Handlers` and the outbound controller: records the calls it is given."""

    def __init__(self, kinds: tuple[str, ...] = ()) -> None:
        self.kinds = kinds
        self.started: list[CallInfo] = []
        self.events: list[Any] = []
        self.reconciled: list[set[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    def handles(self, call: CallInfo) -> bool:
        return bool(call.args) and call.args[0] in self.kinds

    async def stasis_start(self, call: CallInfo) -> None:
        self.started.append(call)
        await self.gate.wait()

    async def on_event(self, event: Any) -> None:
        self.events.append(event)

    async def reconcile(self, live: set[str]) -> None:
        self.reconciled.append(live)


class Ari:
    def __init__(self, channels: list[Channel]) -> None:
        self.channels = channels

    async def get_channels(self) -> list[Channel]:
        return self.channels


def start(channel_id: str, *args: str) -> StasisStart:
    event = parse_event(
        {
            "type": "StasisStart",
            "args": list(args),
            "channel": {"id": channel_id, "name": "PJSIP/carrier-00000001", "caller": {"number": "6141638475"}},
        }
    )
    assert isinstance(event, StasisStart)
    return event


def runner(tmp_path: Path, channels: list[Channel] | None = None) -> tuple[StasisRunner, Feature, Feature]:
    inbound, outbound = Feature(), Feature(("mobile", "fork", "leg"))
    r = StasisRunner(
        config.build({}, {}, tmp_path),
        cast(Any, Ari(channels or [])),
        cast(Any, inbound),
        cast(Any, outbound),
    )
    return r, inbound, outbound


async def test_calls_go_to_the_feature_their_stasis_arguments_name(tmp_path: Path) -> None:
    r, inbound, outbound = runner(tmp_path)
    for cid, args in [
        ("a", ("inbound", "ani")),
        ("b", ("mobile", "7")),
        ("c", ("fork", "7")),
        ("d", ("leg",)),
        ("e", ()),
    ]:
        await r.on_event(start(cid, *args))
    assert [c.channel_id for c in inbound.started] == ["a", "e"]
    assert [c.channel_id for c in outbound.started] == ["b", "c", "d"]
    assert inbound.started[0].caller == "6141638475" and inbound.started[0].args == ("inbound", "ani")


async def test_other_events_go_to_outbound_only(tmp_path: Path) -> None:
    r, inbound, outbound = runner(tmp_path)
    ev = parse_event({"type": "ChannelDestroyed", "channel": {"id": "x"}, "cause": 16})
    await r.on_event(ev)
    assert outbound.events == [ev] and inbound.started == []


async def test_a_channel_already_being_handled_is_not_handled_twice(tmp_path: Path) -> None:
    r, inbound, _ = runner(tmp_path)
    inbound.gate.clear()
    first = asyncio.create_task(r.on_event(start("a", "inbound")))
    await asyncio.sleep(0)
    await r.on_event(start("a", "inbound"))  # the same StasisStart again (re-sync racing the event)
    inbound.gate.set()
    await first
    assert [c.channel_id for c in inbound.started] == ["a"]


async def test_reconnect_picks_up_channels_waiting_in_our_app(tmp_path: Path) -> None:
    waiting = Channel(
        id="w1",
        name="PJSIP/carrier-00000009",
        caller_number="6141638475",
        exten="100",
        app_name="Stasis",
        app_data="securelink,inbound,dnis",
    )
    elsewhere = Channel(id="o1", name="PJSIP/x-1", app_name="Dial", app_data="PJSIP/1001")
    other_app = Channel(id="o2", name="PJSIP/x-2", app_name="Stasis", app_data="securelink-other")
    r, inbound, outbound = runner(tmp_path, [waiting, elsewhere, other_app])
    await r.on_connect()
    assert [(c.channel_id, c.args) for c in inbound.started] == [("w1", ("inbound", "dnis"))]
    assert outbound.reconciled == [{"w1", "o1", "o2"}]
    assert waiting_call(other_app, "securelink") is None
