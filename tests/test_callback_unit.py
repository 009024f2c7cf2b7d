"""`calling.callback.CallbackCalls` with fakes (ARI, guard, leases, the shared store's release): what a request
decides, and what the call does after: confirmation by claim or by `1`, `unconfirmed`, the destination dialled with
the device's caller ID and bridged with `TIMEOUT(absolute)`, the clean-up (hang-ups, bridge, lease, record) and
failing closed. (The real Asterisk: the lead's e2e.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from support.fakes import RecordingAri

from asterisk_securelink.asterisk.ari.client import AriClient
from asterisk_securelink.asterisk.ari.events import Channel, ChannelDestroyed, ChannelDtmfReceived
from asterisk_securelink.calling.callback import CallbackCalls
from asterisk_securelink.calling.callback_ports import CallbackChannels, Guard, Resolve, Timing
from asterisk_securelink.calling.guard import Decision, RouteGuard
from asterisk_securelink.calling.identity import RoutingIdentity
from asterisk_securelink.core.verdicts import Verdict
from asterisk_securelink.deviceapi.ports import CallbackOutcome
from asterisk_securelink.notifier import Notifier
from asterisk_securelink.stasis import CallInfo
from asterisk_securelink.store.store import DeviceRow

NOW = 1_790_000_000_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)
FAST = Timing(mobile_ring_s=1, confirm_s=0.3, poll_s=0.01, dest_ring_s=1, backstop_s=0.2)


def _typed(ari: AriClient, identity: RoutingIdentity, guard: RouteGuard) -> tuple[CallbackChannels, Resolve, Guard]:
    return ari, identity.resolve, guard  # mypy: the real client and resolver are what the protocols describe


@dataclass(frozen=True)
class Ident:
    context: str = "office"
    callerid: str = '"Alice" <1001>'


def Decided(verdict: Verdict | None = None, reason: str = "", retry_after_s: int = 0) -> Decision:
    return Decision(verdict, {"reason": reason} if reason else {}, retry_after_s)


@dataclass
class Routing:
    """The guard, the leases and the identity resolver at once."""

    identity: Ident | None = field(default_factory=Ident)
    decision: Decision = field(default_factory=Decided)
    live_leases: int = 0
    admitted: list[tuple[int, str, str, str, int]] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    async def resolve(self, device: DeviceRow) -> Ident | None:
        return self.identity

    async def admit(self, device_id: int, call_id: str, destination: str | None, kind: str, now_ms: int) -> Decision:
        self.admitted.append((device_id, call_id, destination, kind, now_ms))
        return self.decision

    async def release(self, call_id: str) -> bool:
        self.released.append(call_id)
        return True

    async def live(self, device_id: int, kind: str, now_ms: int) -> int:
        return self.live_leases


class Ari(RecordingAri):
    async def play(self, channel_id: str, media: str, playback_id: str) -> None:
        self.calls.append(("play", channel_id, media))

    async def stop_playback(self, playback_id: str) -> bool:
        self.calls.append(("stop",))
        return True


@dataclass
class Store:
    released: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)
    devices: dict[int, DeviceRow] = field(default_factory=dict)

    async def get_device(self, ref: str | int) -> DeviceRow | None:
        return self.devices.get(int(ref))

    async def record(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    async def claimed(self, call_id: str) -> bool:
        return self.released


@dataclass
class Rig:
    calls: CallbackCalls
    ari: Ari
    routing: Routing
    store: Store
    audit: list[dict[str, Any]]

    def verdicts(self) -> list[tuple[str, str]]:
        return [(a["action"], a["result"]) for a in self.audit]


def _device(status: str = "registered") -> DeviceRow:
    return DeviceRow(7, "Alice", "+12155550100", "PJSIP/1001", "dev-0007", status, None, True, T0, T0, T0, None)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    ari, routing, audit = Ari(), Routing(), []
    store = Store(devices={7: _device()})

    class Confirm:
        async def released(self, call_id: str) -> bool:
            return await store.claimed(call_id)

    calls = CallbackCalls("securelink", store, ari, routing.resolve, routing, routing, Confirm(),
                          Notifier(audit=audit.append), records=store, max_call_seconds=3600, timing=FAST,
                          clock_ms=lambda: NOW, clock=lambda: T0)  # fmt: skip
    try:
        yield Rig(calls, ari, routing, store, audit)
    finally:
        await calls.close(0.1)


async def until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


def _info(kind: str, call_id: str, channel: str) -> CallInfo:
    return CallInfo(channel, f"Local/x-{channel};1", None, None, (kind, call_id))


async def _placed(rig: Rig) -> str:
    r = await rig.calls.request(7, "2001", NOW)
    assert (r.outcome, r.reason) == (CallbackOutcome.PLACED, "")
    return r.call_id


async def _answer_mobile(rig: Rig, call_id: str) -> None:
    await rig.calls.stasis_start(_info("callback", call_id, f"m-{call_id}"))


async def _gone(rig: Rig, channel: str) -> None:
    assert await rig.calls.on_event(ChannelDestroyed(type="ChannelDestroyed", channel=Channel(channel), cause=16))


# -- the request ----------------------------------------------------------------------------------------------------
async def test_a_placed_callback_rings_the_mobile_through_the_outbound_context(rig: Rig) -> None:
    call_id = await _placed(rig)
    assert call_id.startswith("slk-cb-") and rig.calls.active == 1
    assert rig.routing.admitted == [(7, call_id, "2001", "callback", NOW)]
    ((_, endpoint, kw),) = rig.ari.of("originate")
    assert endpoint == "Local/7@securelink-mobile"
    assert kw == {"app": "securelink", "app_args": f"callback,{call_id}", "timeout": 1,
                  "channel_id": f"m-{call_id}", "other_channel_id": call_id}  # fmt: skip


async def test_no_identity_is_no_route_and_nothing_is_reserved(rig: Rig) -> None:
    rig.routing.identity = None
    r = await rig.calls.request(7, "2001", NOW)
    assert r.outcome is CallbackOutcome.NO_ROUTE
    assert rig.routing.admitted == [] and rig.ari.calls == []
    assert rig.verdicts() == [("callback", "no_route")]


async def test_a_live_callback_lease_is_busy(rig: Rig) -> None:
    rig.routing.live_leases = 1
    r = await rig.calls.request(7, "2001", NOW)
    assert r.outcome is CallbackOutcome.BUSY
    assert rig.routing.admitted == [] and rig.ari.calls == []


@pytest.mark.parametrize(
    ("decision", "outcome", "retry"),
    [(Decided(Verdict.DENIED, "international"), CallbackOutcome.DENIED, 0),
     (Decided(Verdict.RATE_LIMITED, "daily", 120), CallbackOutcome.RATE_LIMITED, 120)],
)  # fmt: skip
async def test_the_guard_refuses(rig: Rig, decision: Decision, outcome: CallbackOutcome, retry: int) -> None:
    rig.routing.decision = decision
    r = await rig.calls.request(7, "00441234567", NOW)
    assert (r.outcome, r.reason, r.retry_after_s) == (outcome, decision.detail["reason"], retry)
    assert rig.ari.calls == []
    assert rig.verdicts() == [("callback", str(decision.verdict))]


async def test_an_unknown_or_revoked_device_is_unavailable(rig: Rig) -> None:
    assert (await rig.calls.request(8, "2001", NOW)).outcome is CallbackOutcome.UNAVAILABLE
    rig.store.devices[7] = _device("revoked")
    assert (await rig.calls.request(7, "2001", NOW)).outcome is CallbackOutcome.UNAVAILABLE
    assert rig.routing.admitted == [] and rig.ari.calls == []


async def test_an_originate_that_fails_gives_the_lease_back(rig: Rig) -> None:
    rig.ari.fail_originate = {"Local/7@securelink-mobile"}
    r = await rig.calls.request(7, "2001", NOW)
    assert (r.outcome, r.reason) == (CallbackOutcome.UNAVAILABLE, "originate_failed")
    assert rig.routing.released == [r.call_id]
    assert rig.calls.active == 0


# -- the call -------------------------------------------------------------------------------------------------------
async def test_confirmed_by_the_claim_then_dialled_bridged_and_cleaned_up(rig: Rig) -> None:
    call_id = await _placed(rig)
    mobile, dest = f"m-{call_id}", f"d-{call_id}"
    rig.store.released = True  # the phone claimed {"call_id"} (on any node)
    await _answer_mobile(rig, call_id)
    await until(lambda: len(rig.ari.of("originate")) == 2)
    _, endpoint, kw = rig.ari.of("originate")[1]
    assert endpoint == "Local/2001@office"
    assert kw == {"app": "securelink", "app_args": f"callback-dest,{call_id}", "caller_id": '"Alice" <1001>',
                  "timeout": 1, "channel_id": dest}  # fmt: skip
    assert ("play", mobile, "tone:ring") in rig.ari.calls
    await rig.calls.stasis_start(_info("callback-dest", call_id, dest))
    await until(lambda: bool(rig.ari.of("add")))
    assert rig.ari.of("add") == [("add", "b1", (mobile, dest), {})]
    for cid in (mobile, dest):
        assert ("var", cid, "TIMEOUT(absolute)", "3600") in rig.ari.calls
        assert ("var", cid, "CDR(securelink_method)", "callback") in rig.ari.calls
    assert rig.routing.released == []  # still talking
    await _gone(rig, dest)
    await until(lambda: bool(rig.store.records))
    assert ("hangup", mobile, "normal") in rig.ari.calls and ("hangup", dest, "normal") not in rig.ari.calls
    assert rig.ari.of("destroy") == [("destroy", "b1")]
    assert rig.routing.released == [call_id]
    (record,) = rig.store.records
    expected = {"call_id": mobile, "device_id": 7, "direction": "outbound", "method": "callback", "caller": None,
                "destination": "2001", "verdict": "admitted", "answered_by": "Local/2001@office",
                "hangup_cause": "normal"}  # fmt: skip
    assert {k: record[k] for k in expected} == expected
    assert [leg["outcome"] for leg in record["legs"]] == ["answered", "answered"]
    assert rig.verdicts() == [("callback", "admitted")]
    assert rig.calls.active == 0
    assert not await rig.calls.on_event(ChannelDestroyed(type="ChannelDestroyed", channel=Channel(mobile)))


async def test_confirmed_by_pressing_1_but_not_by_another_digit(rig: Rig) -> None:
    call_id = await _placed(rig)
    mobile = f"m-{call_id}"
    await _answer_mobile(rig, call_id)
    await until(lambda: ("play", mobile, "sound:beep") in rig.ari.calls)
    for digit in ("2", "1"):
        await rig.calls.on_event(ChannelDtmfReceived(type="ChannelDtmfReceived", channel=Channel(mobile), digit=digit))
    await until(lambda: len(rig.ari.of("originate")) == 2)
    assert rig.ari.of("stop")  # the prompt stopped


async def test_a_2_alone_does_not_confirm(rig: Rig) -> None:
    call_id = await _placed(rig)
    mobile = f"m-{call_id}"
    await _answer_mobile(rig, call_id)
    await rig.calls.on_event(ChannelDtmfReceived(type="ChannelDtmfReceived", channel=Channel(mobile), digit="2"))
    await until(lambda: bool(rig.store.records))
    assert len(rig.ari.of("originate")) == 1
    assert rig.store.records[0]["verdict"] == "unconfirmed"


async def test_no_confirmation_in_time_is_unconfirmed_and_nothing_is_dialled(rig: Rig) -> None:
    call_id = await _placed(rig)
    mobile = f"m-{call_id}"
    await _answer_mobile(rig, call_id)
    await until(lambda: bool(rig.store.records))
    assert len(rig.ari.of("originate")) == 1  # the destination was never dialled
    assert ("hangup", mobile, "normal") in rig.ari.calls
    assert rig.routing.released == [call_id]
    assert rig.verdicts() == [("callback", "unconfirmed")]
    audit = rig.audit[0]
    assert (audit["call_id"], audit["device_id"], audit["mode"], audit["direction"]) == (call_id, 7, "callback",
                                                                                        "outbound")  # fmt: skip
    record = rig.store.records[0]
    assert (record["verdict"], record["hangup_cause"], record["answered_at"]) == ("unconfirmed", "unconfirmed", None)
    assert [leg["outcome"] for leg in record["legs"]] == ["answered", "not_dialed"]


async def test_the_phone_hanging_up_while_asked_is_not_unconfirmed(rig: Rig) -> None:
    call_id = await _placed(rig)
    await _answer_mobile(rig, call_id)
    await _gone(rig, f"m-{call_id}")
    await until(lambda: bool(rig.store.records))
    assert rig.verdicts() == []
    assert rig.store.records[0]["hangup_cause"] == "hung_up"
    assert rig.ari.of("hangup") == [] and rig.routing.released == [call_id]


async def test_a_mobile_that_never_answers_ends_the_callback(rig: Rig) -> None:
    call_id = await _placed(rig)
    await until(lambda: bool(rig.store.records))  # 1 s ring + 0.2 s backstop
    assert ("hangup", f"m-{call_id}", "no_answer") in rig.ari.calls
    assert rig.routing.released == [call_id]
    assert rig.store.records[0]["hangup_cause"] == "no_answer"
    assert [leg["outcome"] for leg in rig.store.records[0]["legs"]] == ["unanswered", "not_dialed"]


async def test_a_destination_that_does_not_answer_hangs_both_up(rig: Rig) -> None:
    call_id = await _placed(rig)
    rig.store.released = True
    await _answer_mobile(rig, call_id)
    await until(lambda: bool(rig.store.records))
    assert ("hangup", f"m-{call_id}", "normal") in rig.ari.calls
    assert ("hangup", f"d-{call_id}", "normal") in rig.ari.calls
    assert rig.store.records[0]["hangup_cause"] == "destination_unanswered"
    assert rig.ari.of("bridge") == []


async def test_fail_closed_when_the_destination_cannot_be_dialled(rig: Rig) -> None:
    rig.ari.fail_originate = {"Local/2001@office"}
    call_id = await _placed(rig)
    rig.store.released = True
    await _answer_mobile(rig, call_id)
    await until(lambda: bool(rig.store.records))
    assert ("hangup", f"m-{call_id}", "normal") in rig.ari.calls
    assert rig.routing.released == [call_id]
    assert rig.store.records[0]["hangup_cause"] == "error"
    json.dumps(rig.store.records[0], default=str)  # a record the book can write


async def test_a_channel_of_an_unknown_callback_is_hung_up(rig: Rig) -> None:
    await rig.calls.stasis_start(_info("callback", "slk-cb-nope", "slk-cb-nope-cb"))
    assert rig.ari.calls == [("hangup", "slk-cb-nope-cb", "normal")]
    call_id = await _placed(rig)
    await rig.calls.stasis_start(_info("callback", call_id, "someone-else"))  # not the channel we originated
    assert ("hangup", "someone-else", "normal") in rig.ari.calls


def test_it_handles_its_two_stasis_kinds_only() -> None:
    assert CallbackCalls.handles(_info("callback", "x", "y"))
    assert CallbackCalls.handles(_info("callback-dest", "x", "y"))
    assert not CallbackCalls.handles(_info("leg", "x", "y"))
