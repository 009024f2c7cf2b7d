"""`calling.onward.Onward` on a real store (SQLite and PostgreSQL) with a recording stand-in for ARI: what an admitted
call gets (the contract's variables, the CDR fields, the time limit, the subscription, `continue`), each refusal
(`no_route`, `denied`, `rate_limited`, no dial tone by intent), the app's dial tone, and the end of a followed call
(lease released, record written). Plus the routing identity's order of places (`calling.identity`)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from asterisk_securelink.asterisk.ari.events import Channel, ChannelDestroyed, ChannelDtmfReceived
from asterisk_securelink.calling.guard import RouteGuard
from asterisk_securelink.calling.identity import RoutingIdentity
from asterisk_securelink.calling.onward import WITHHELD, Admitted, Onward, recorded_caller
from asterisk_securelink.config import Config, RoutingConfig
from asterisk_securelink.core.handoff import IN_VARIABLE, Handoff, decode
from asterisk_securelink.core.verdicts import Method
from asterisk_securelink.dialplan import HANDOFF_VAR, VERDICT_CONTEXT
from asterisk_securelink.notifier import Notifier, VerdictNote
from asterisk_securelink.stasis import CallInfo
from asterisk_securelink.store.ends import CallEndWriter
from asterisk_securelink.store.routes import RouteLeases
from asterisk_securelink.store.spend import SpendDevice
from asterisk_securelink.store.store import DeviceRow, Store

DESK = {"context": "from-desk", "callerid": '"Alice" <1001>'}


class Endpoints:
    def __init__(self, fields: dict[str, str] | None = DESK, fail: bool = False) -> None:
        self.fields, self.fail, self.asked = fields, fail, 0

    async def get_config_object(self, config_class: str, object_type: str, object_id: str) -> dict[str, str] | None:
        self.asked += 1
        if self.fail:
            raise OSError("ARI down")
        return self.fields if object_id == "1001" else None


class Ari:
    """Records what Onward asks of ARI; `fail_cdr`: the PBX has CDRs off."""

    def __init__(self) -> None:
        self.vars: dict[str, str] = {}  # set by the app, and by [securelink-verdict] from the hand-off
        self.calls: list[tuple[Any, ...]] = []
        self.handoff: Handoff | None = None

    async def set_channel_var(self, channel_id: str, name: str, value: str) -> None:
        self.calls.append(("var", channel_id, name))
        self.vars[name] = value

    async def continue_in_dialplan(self, channel_id: str, context: str | None = None, extension: str | None = None,
                                   priority: int | None = None) -> None:  # fmt: skip
        self.calls.append(("continue", channel_id, context, extension))
        if context == VERDICT_CONTEXT:
            self.handoff = decode(self.vars[HANDOFF_VAR] if extension == IN_VARIABLE else extension or "")
            self.vars.update(self.handoff.variables())

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
        self.calls.append(("hangup", channel_id, reason))
        return True

    async def answer(self, channel_id: str) -> None:
        self.calls.append(("answer", channel_id))

    async def play(self, channel_id: str, media: str, playback_id: str) -> None:
        self.calls.append(("play", channel_id, media))

    async def stop_playback(self, playback_id: str) -> bool:
        return True

    async def subscribe_channel(self, channel_id: str) -> None:
        self.calls.append(("subscribe", channel_id))

    def did(self, what: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == what]


class Records(CallEndWriter):
    """The real writer, keeping what Onward handed it."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.engine)
        self.records: list[dict[str, Any]] = []
        self.ended_calls: list[str] = []

    async def end(self, call_id: str, record: dict[str, Any] | None, *, release: bool) -> None:
        assert record is not None
        self.records.append(record)
        self.ended_calls.append(call_id)
        await super().end(call_id, record, release=release)


class Rig:
    def __init__(self, store: Store, routing: RoutingConfig, endpoints: Endpoints, ari: Ari) -> None:
        self.store, self.ari, self.records = store, ari, Records(store)
        self.audit: list[dict[str, Any]] = []
        self.cfg = replace(Config(), routing=routing)
        self.leases = RouteLeases(store, "node-a")
        notifier = Notifier(self.audit.append)
        identity, guard = RoutingIdentity(routing, endpoints), RouteGuard(routing, self.leases)
        self.onward = Onward(self.cfg, store, identity, guard, ari, notifier, self.records, node="node-a",
                             clock_ms=lambda: 1_790_000_000_000)  # fmt: skip

    async def go(self, admitted: Admitted, call: CallInfo | None = None) -> CallInfo:
        call = call or CallInfo("ch-1", "PJSIP/carrier-00000001", "+15550001111", "+12155550400")
        await self.onward.go(call, admitted)
        await self.onward.close(5)
        return call

    def results(self) -> list[str | None]:
        return [a["result"] for a in self.audit if a["action"] == "route"]


async def device(store: Store, desk: str | None = "PJSIP/1001", **routing: str) -> DeviceRow:
    key_id = f"dev-{len(routing)}-{(desk or 'none').replace('/', '.')}"
    return await store.add_device("Alice", "+15550001111", desk, key_id, "test", routing)


def rig(store: Store, routing: RoutingConfig | None = None, endpoints: Endpoints | None = None,
        ari: Ari | None = None) -> Rig:  # fmt: skip
    return Rig(store, routing or RoutingConfig(), endpoints or Endpoints(), ari or Ari())


async def test_an_admitted_call_goes_to_its_destination_in_the_desks_context(store: Store) -> None:
    r = rig(store)
    dev = await device(store)
    await r.go(Admitted(dev.id, Method.DTMF, "2001", "+15550001111", answered=True, variables={"X": "1"}))
    assert r.ari.vars["SECURELINK_CONTEXT"] == "from-desk" and r.ari.vars["SECURELINK_CALLERID"] == '"Alice" <1001>'
    assert (r.ari.vars["SECURELINK_METHOD"], r.ari.vars["SECURELINK_DESTINATION"]) == ("dtmf", "2001")
    assert (r.ari.vars["CDR(securelink_device)"], r.ari.vars["CDR(securelink_method)"]) == (str(dev.id), "dtmf")
    assert r.ari.vars["TIMEOUT(absolute)"] == "3600" and r.ari.vars["X"] == "1"
    assert r.ari.handoff is not None and r.ari.handoff.next_context == ""  # on into [securelink-admitted]
    assert r.ari.did("subscribe") and r.ari.did("continue") == [("continue", "ch-1", "securelink-verdict",
                                                                 r.ari.handoff.encode())]  # fmt: skip
    assert await r.leases.live(dev.id, "through", 1_790_000_000_000) == 1  # held until the call ends
    # the end: the lease back, the record written, the vouchers ended
    destroyed = ChannelDestroyed(type="ChannelDestroyed", channel=Channel("ch-1"), cause=16, cause_txt="Normal")
    assert await r.onward.on_event(destroyed)
    assert await r.leases.live(dev.id, "through", 1_790_000_000_000) == 0
    [rec] = r.records.records
    assert (rec["direction"], rec["method"], rec["destination"], rec["caller"]) == ("inbound", "dtmf", "2001",
                                                                                   "+15550001111")  # fmt: skip
    assert rec["hangup_cause"] == "Normal" and rec["answered_at"] is not None and r.records.ended_calls == ["ch-1"]
    [row] = await store.list_call_records()
    assert (row.call_id, row.device_id, row.method, row.destination, row.verdict) == ("ch-1", dev.id, "dtmf", "2001",
                                                                                      "admitted")  # fmt: skip
    assert not await r.onward.on_event(destroyed)  # once


async def test_the_devices_own_values_win_and_the_desk_is_not_read(store: Store) -> None:
    endpoints = Endpoints()
    r = rig(store, endpoints=endpoints)
    dev = await device(store, context="mobile-ctx", callerid='"Al" <2222>', home="extension:*97")
    await r.go(Admitted(dev.id, Method.ANI))
    assert (r.ari.vars["SECURELINK_CONTEXT"], r.ari.vars["SECURELINK_CALLERID"]) == ("mobile-ctx", '"Al" <2222>')
    assert (r.ari.vars["SECURELINK_DESTINATION"], r.ari.vars["SECURELINK_HOME"]) == ("", "*97")
    assert endpoints.asked == 0


async def test_the_row_admission_read_is_routed_on_without_reading_the_device_again(store: Store) -> None:
    """`Admitted.device` (the spend's read, `store.spend.SpendDevice`) is what the call is routed on."""
    r = rig(store)
    dev = await device(store)  # its desk endpoint's from-desk and "Alice" <1001> in the store
    seen = SpendDevice(dev.id, dev.key_id, dev.status, None, "mobile-ctx", '"Al" <2222>', "extension:*97")
    await r.go(Admitted(dev.id, Method.ANI, device=seen))
    assert (r.ari.vars["SECURELINK_CONTEXT"], r.ari.vars["SECURELINK_CALLERID"]) == ("mobile-ctx", '"Al" <2222>')
    assert r.ari.vars["SECURELINK_HOME"] == "*97"


async def test_without_any_identity_the_verdict_is_no_route(store: Store) -> None:
    r = rig(store, endpoints=Endpoints(fields=None))
    dev = await device(store)
    await r.go(Admitted(dev.id, Method.ANI))
    assert r.results() == ["no_route"] and r.ari.did("hangup") == [("hangup", "ch-1", "rejected")]
    assert not r.ari.did("continue") and r.records.records[0]["verdict"] == "no_route"


async def test_the_defaults_fill_what_the_desk_lacks_and_a_desk_that_cannot_be_read_fails_closed(store: Store) -> None:
    routing = RoutingConfig(default_context="from-internal", default_callerid="<1000>", home="extension:8000")
    r = rig(store, routing, Endpoints(fields={"context": "from-desk", "callerid": ""}))
    dev = await device(store)
    await r.go(Admitted(dev.id, Method.ANI))
    assert (r.ari.vars["SECURELINK_CONTEXT"], r.ari.vars["SECURELINK_CALLERID"]) == ("from-desk", "<1000>")
    broken = rig(store, routing, Endpoints(fail=True))
    await broken.go(Admitted(dev.id, Method.ANI))
    assert broken.results() == ["error"] and not broken.ari.did("continue")


@pytest.mark.parametrize(("dest", "reason"), [("911", "emergency"), ("0044207946000", "denied_pattern"),
                                              ("12125551234", "not_allowed")])  # fmt: skip
async def test_the_guard_refuses_before_the_dialplan_sees_the_call(store: Store, dest: str, reason: str) -> None:
    r = rig(store)
    dev = await device(store)
    await r.go(Admitted(dev.id, Method.DTMF, dest, answered=True))
    assert r.results() == ["denied"] and not r.ari.did("continue")
    assert next(a["detail"] for a in r.audit if a["action"] == "route").count(reason) == 1
    assert await r.leases.live(dev.id, "through", 1_790_000_000_000) == 0


async def test_a_third_call_at_once_is_rate_limited(store: Store) -> None:
    r = rig(store)
    dev = await device(store)
    for i in range(3):
        await r.go(Admitted(dev.id, Method.DTMF, "2001", answered=True), CallInfo(f"ch-{i}", "x", None, "400"))
    assert r.results() == ["rate_limited"] and len(r.ari.did("continue")) == 2


async def test_no_dial_tone_by_intent(store: Store) -> None:
    r = rig(store)
    dev = await device(store)
    await r.go(Admitted(dev.id, Method.INTENT))
    assert r.results() == ["denied"] and not r.ari.did("answer")


async def test_dial_tone_collects_the_number_then_the_guard_decides(store: Store) -> None:
    r = rig(store)
    dev = await device(store)
    call = CallInfo("ch-9", "PJSIP/carrier-9", "+15550001111", "100")
    pending = VerdictNote("admitted", "inbound", "ani", dev.id, call.name, call.channel_id)
    await r.onward.go(call, Admitted(dev.id, Method.ANI, pending=pending))
    await asyncio.sleep(0.05)
    assert r.ari.did("answer") and ("play", "ch-9", "tone:dial") in r.ari.calls
    for d in "20*2002#":  # `*` clears what was typed
        await r.onward.on_event(ChannelDtmfReceived(type="ChannelDtmfReceived", channel=Channel("ch-9"), digit=d))
    await r.onward.close(5)
    assert r.ari.vars["SECURELINK_DESTINATION"] == "2002" and r.ari.did("continue")
    assert r.ari.handoff is not None and not r.ari.handoff.emit_verdict  # published before the tone, not twice


def test_a_call_record_never_holds_the_key_and_says_withheld() -> None:
    assert recorded_caller("8005551234", Method.ANI) is None  # the caller number was the key
    assert recorded_caller("anonymous", Method.DTMF) == WITHHELD
    assert recorded_caller("+15550001111", Method.INTENT) == "+15550001111"


async def test_with_ends_reported_by_the_dialplan_an_admitted_call_takes_one_ari_request(store: Store) -> None:
    """Issue 24: the hand-off is the only request (no variables, no subscription); the end comes from
    [securelink-end] over AMI (`Onward.ended`) and does what ChannelDestroyed did."""
    from datetime import UTC, datetime

    r = rig(store)
    r.onward.ends_by_ami = lambda: True
    dev = await device(store, context="mobile-ctx", callerid='"Al" <2222>', home="extension:answer")
    pending = VerdictNote("admitted", "inbound", "ani", dev.id, "PJSIP/carrier-00000001", "ch-1")
    await r.go(Admitted(dev.id, Method.ANI, variables={"SECURELINK_CALL_KEY_ID": "77"}, pending=pending))
    h = r.ari.handoff
    assert h is not None and r.ari.calls == [("continue", "ch-1", "securelink-verdict", h.encode())]
    assert (h.kind, h.callerid, h.call_key_id, h.home, h.emit_verdict, h.report_end) == (
        "a", '"Al" <2222>', "77", "answer", True, True)  # fmt: skip
    answered = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
    assert await r.onward.ended("ch-1", "Normal Clearing", answered)
    [rec] = r.records.records
    assert (rec["hangup_cause"], rec["answered_at"], r.records.ended_calls) == ("Normal Clearing", answered, ["ch-1"])
    assert await r.leases.live(dev.id, "through", 1_790_000_000_000) == 0
    assert not await r.onward.ended("ch-1", "Normal Clearing", None)  # once
    # a hand-off longer than an extension (79): in SECURELINK_HANDOFF, then `v` (two requests)
    r2 = rig(store)
    r2.onward.ends_by_ami = lambda: True
    long_name = await device(store, "PJSIP/1002", context="mobile-ctx", callerid='"Al, the ~ boss of it all" <2222>',
                             home="extension:answer")  # fmt: skip
    await r2.go(Admitted(long_name.id, Method.ANI), CallInfo("ch-2", "x", None, "100"))
    expected = [("var", "ch-2", "SECURELINK_HANDOFF"), ("continue", "ch-2", "securelink-verdict")]
    assert [c[:3] for c in r2.ari.calls] == expected
    assert r2.ari.calls[1][3] == "v" and r2.ari.vars["SECURELINK_CALLERID"] == '"Al, the ~ boss of it all" <2222>'


async def test_hanging_up_in_the_dial_tone_ends_it_at_once(store: Store) -> None:
    """The app unsubscribes from a channel leaving Stasis, so a hang-up during the dial tone shows as StasisEnd."""
    from asterisk_securelink.asterisk.ari.events import StasisEnd

    r = rig(store)
    dev = await device(store)
    call = CallInfo("ch-7", "PJSIP/carrier-7", "+15550001111", "100")
    await r.onward.go(call, Admitted(dev.id, Method.ANI))
    await asyncio.sleep(0.05)
    assert await r.onward.on_event(StasisEnd(type="StasisEnd", channel=Channel("ch-7")))
    await asyncio.wait_for(r.onward.close(30), 2)  # not the 10 s of the dial tone's first digit
    [rec] = r.records.records
    assert rec["hangup_cause"] == "hung up" and rec["destination"] is None and not r.ari.did("continue")


async def test_a_call_hung_up_while_being_routed_gets_no_extra_verdict(store: Store) -> None:
    """An intent's racing spoofer gets the call the intent admitted hung up; routing it then meets a channel that is
    gone (ARI 404): that ends it quietly, with its record, not with a second verdict `error`."""
    from asterisk_securelink.asterisk.ari.errors import AriError

    class Gone(Ari):
        async def subscribe_channel(self, channel_id: str) -> None:
            raise AriError(404, "Channel not found")

    r = rig(store, ari=Gone())
    dev = await device(store)
    await r.go(Admitted(dev.id, Method.INTENT, "2001"))
    assert r.results() == [] and not r.ari.did("continue")
    [rec] = r.records.records
    assert rec["hangup_cause"] == "hung up" and await r.leases.live(dev.id, "through", 1_790_000_000_000) == 0
