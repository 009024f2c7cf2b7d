"""Outbound keyed calls without Asterisk: the pure decisions (`outbound.state`: `CallState`, cause mapping, leg plans)
and the controller (`outbound.controller.Outbound`) against a fake ARI, a fake store and a list-backed audit sink."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from support.fakes import RecordingAri
from support.keys import MASTER
from support.outbound import FakeStore, Hooks, caller, device, keyer_for

from asterisk_securelink.asterisk.ari.events import Channel, ChannelDestroyed, StasisEnd
from asterisk_securelink.config import Config, OutboundConfig
from asterisk_securelink.core.formats import NumberFormat
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret
from asterisk_securelink.core.verdicts import Verdict
from asterisk_securelink.metrics import Metrics
from asterisk_securelink.notifier import Notifier
from asterisk_securelink.outbound import controller as ob
from asterisk_securelink.outbound.controller import Outbound
from asterisk_securelink.outbound.state import (
    Bridge,
    CallState,
    Hangup,
    LegExtras,
    LegOutcome,
    LegPlan,
    Phase,
    caller_reason,
    leg_outcome,
    plan_legs,
    reject_reason,
)
from asterisk_securelink.stasis import CallInfo
from asterisk_securelink.store.store import DeviceRow

T = datetime(2026, 1, 1, tzinfo=UTC)


# ------------------------------------------------------------------------------------------- pure decisions
def test_reject_reasons() -> None:
    assert reject_reason(Verdict.RATE_LIMITED) == "congestion"
    for v in (Verdict.REVOKED, Verdict.UNREGISTERED, Verdict.ERROR):
        assert reject_reason(v) == "rejected"


@pytest.mark.parametrize(
    ("cause", "outcome"),
    [(17, LegOutcome.BUSY), (18, LegOutcome.NOANSWER), (19, LegOutcome.NOANSWER), (21, LegOutcome.DECLINED),
     (34, LegOutcome.FAILED), (16, LegOutcome.FAILED), (None, LegOutcome.FAILED), (0, LegOutcome.FAILED)],
)  # fmt: skip
def test_leg_outcome(cause: int | None, outcome: LegOutcome) -> None:
    assert leg_outcome(cause) is outcome


def test_caller_reason_priority() -> None:
    assert caller_reason([LegOutcome.BUSY]) == "busy"
    assert caller_reason([LegOutcome.DECLINED]) == "busy"
    assert caller_reason([LegOutcome.NOANSWER]) == "no_answer"
    assert caller_reason([LegOutcome.FAILED]) == "congestion"
    assert caller_reason([]) == "congestion"
    assert caller_reason([LegOutcome.NOANSWER, LegOutcome.BUSY]) == "busy"
    assert caller_reason([LegOutcome.FAILED, LegOutcome.NOANSWER]) == "no_answer"


def test_plan_legs() -> None:
    fmt = "PJSIP/{number}@carrier"
    mobile = LegPlan("mobile", "PJSIP/15550001111@carrier", "KEY")
    assert plan_legs("mobile", device(), fmt, "KEY", "100") == [mobile]
    assert plan_legs("fork", device(), fmt, "KEY", "100") == [mobile, LegPlan("desk", "PJSIP/desk1001", "100")]
    assert plan_legs("fork", device(fork=False), fmt, "KEY", "100") == [mobile]  # forking off: mobile only
    assert plan_legs("fork", device(desk=None), fmt, "KEY", "100") == [mobile]  # no desk: mobile only
    assert plan_legs("fork", device(), fmt, "KEY", None)[1].caller_id is None  # the desk never sees the key


def test_keyer_matches_spec_vector() -> None:
    # SLK1.md test vectors: outbound, epoch 1, XXXXXXXXXX -> 5575039342 (secret = bytes 0..31)
    assert derive_key(bytes(range(32)), Direction.OUTBOUND, 1, NumberFormat("XXXXXXXXXX")) == "5575039342"
    key = keyer_for(MASTER, NumberFormat("XXXXXXXXXX"))
    expected = derive_key(device_secret(MASTER, "dev-0001"), Direction.OUTBOUND, 5, NumberFormat("XXXXXXXXXX"))
    assert key("dev-0001", 5) == expected
    assert key("dev-0001", 5) != derive_key(
        device_secret(MASTER, "dev-0001"), Direction.INBOUND, 5, NumberFormat("XXXXXXXXXX")
    )


def fork_state() -> CallState:
    st = CallState("c1", "c1", 7, "fork", Verdict.ADMITTED, T)
    st.add_leg(LegPlan("mobile", "PJSIP/m@carrier", "KEY"), "m")
    st.add_leg(LegPlan("desk", "PJSIP/desk1001", "100"), "d")
    return st


def test_first_answer_wins_and_cancels_the_other() -> None:
    st = fork_state()
    assert st.leg_answered("d", T) == [Bridge("d"), Hangup("m", "answered_elsewhere")]
    assert st.phase is Phase.BRIDGED and st.winner == "d"
    # both answered at once: the second one is hung up, never bridged
    assert st.leg_answered("m", T) == [Hangup("m", "answered_elsewhere")]
    assert st.winner == "d"
    assert st.legs["m"].outcome is LegOutcome.ANSWERED_ELSEWHERE


def test_exactly_one_bridge_whatever_the_order() -> None:
    for order in (["m", "d"], ["d", "m"], ["m", "m", "d"]):
        st = fork_state()
        cmds = [c for leg in order for c in st.leg_answered(leg, T)]
        assert sum(isinstance(c, Bridge) for c in cmds) == 1


def test_failed_legs_then_the_caller_gets_the_cause() -> None:
    st = fork_state()
    assert st.leg_gone("d", 17, T) == []  # the desk is busy, the mobile still rings
    assert st.phase is Phase.DIALING
    assert st.leg_gone("m", 19, T) == [Hangup("c1", "busy")]  # busy beats no answer
    assert st.cause == "busy" and st.phase.value == "ended"


def test_single_leg_failures() -> None:
    for cause, reason in ((17, "busy"), (19, "no_answer"), (34, "congestion"), (21, "busy")):
        st = CallState("c1", "c1", 7, "mobile", Verdict.ADMITTED, T)
        st.add_leg(LegPlan("mobile", "PJSIP/m@carrier", "KEY"), "m")
        assert st.leg_gone("m", cause, T) == [Hangup("c1", reason)]


def test_timeout_cancels_ringing_legs() -> None:
    st = fork_state()
    st.leg_gone("d", 34, T)
    assert st.timed_out(T) == [Hangup("m", "normal"), Hangup("c1", "no_answer")]
    assert st.legs["m"].outcome is LegOutcome.NOANSWER and st.cause == "no_answer"
    assert st.timed_out(T) == []  # once
    assert st.leg_answered("m", T) == [Hangup("m", "normal")]  # answered just too late: never bridged


def test_timeout_after_bridge_does_nothing() -> None:
    st = fork_state()
    st.leg_answered("m", T)
    assert st.timed_out(T) == []


def test_caller_hangs_up_first_cancels_legs() -> None:
    st = fork_state()
    assert st.caller_left(T) == [Hangup("m", "normal"), Hangup("d", "normal")]
    assert st.cause == "caller_cancelled"
    assert {leg.outcome for leg in st.legs.values()} == {LegOutcome.CANCELLED}
    assert st.leg_answered("m", T) == [Hangup("m", "normal")]  # a leg answering now is not bridged
    assert st.leg_gone("m", 16, T) == [] and st.leg_gone("d", 16, T) == []
    assert st.finished


def test_bridged_hangups_both_ways() -> None:
    st = fork_state()
    st.leg_answered("m", T)
    st.leg_gone("d", 26, T)
    assert st.leg_gone("m", 16, T) == [Hangup("c1", "normal")]  # mobile hangs up: caller too
    assert st.caller_left(T) == []
    assert st.finished
    st = fork_state()
    st.leg_answered("m", T)
    assert st.caller_left(T) == [Hangup("m", "normal")]  # caller hangs up: mobile too


def test_abort_tears_everything_down() -> None:
    st = fork_state()
    st.leg_answered("m", T)
    assert st.abort(T) == [Hangup("m", "normal"), Hangup("d", "normal"), Hangup("c1", "congestion")]
    assert st.phase is Phase.ENDED and st.cause == "error"


def test_record() -> None:
    st = fork_state()
    st.leg_answered("d", T)
    st.leg_gone("m", 26, T)
    st.caller_left(T)
    st.leg_gone("d", 16, T)
    rec = st.record()
    assert rec["direction"] == "outbound" and rec["answered_by"] == "PJSIP/desk1001"
    assert rec["legs"] == [
        {"endpoint": "PJSIP/m@carrier", "channel": "m", "role": "mobile", "outcome": "answered_elsewhere"},
        {"endpoint": "PJSIP/desk1001", "channel": "d", "role": "desk", "outcome": "answered"},
    ]
    assert rec["verdict"] == "admitted" and rec["hangup_cause"] == "normal"
    assert all(rec[k] is not None and rec[k].tzinfo is not None for k in ("started_at", "answered_at", "ended_at"))


def test_rejected_state() -> None:
    st, cmds = CallState.rejected("c1", "c1", 7, "mobile", Verdict.RATE_LIMITED, T)
    assert cmds == [Hangup("c1", "congestion")] and st.phase is Phase.ENDED
    st.caller_left(T)
    assert st.finished and st.record()["legs"] == []


# ------------------------------------------------------------------------------------------------ controller
_made: list[Outbound] = []


@pytest.fixture(autouse=True)
async def _close_outbounds() -> Any:
    """Calls a test leaves up keep their supervisor waiting: stop them so the event loop can close."""
    yield
    while _made:
        await _made.pop().close(0)


def make(
    dev: DeviceRow | None = None,
    ring_timeout: int = 5,
    audit: Callable[[dict[str, Any]], None] | None = None,
    metrics: Metrics | None = None,
    **ari_kw: Any,
) -> tuple[Outbound, RecordingAri, Hooks]:
    cfg = replace(Config(), outbound=OutboundConfig(ring_timeout=ring_timeout))
    ari = RecordingAri(**ari_kw)
    hooks = Hooks()
    out = Outbound(cfg, FakeStore(dev if dev is not None else device()), ari, keyer_for(MASTER, cfg.outbound_fmt),
                   lambda: 100, notifier=Notifier(audit, metrics), hooks=hooks)  # fmt: skip
    _made.append(out)
    return out, ari, hooks


def leg_ids(ari: RecordingAri) -> dict[str, str]:
    return {c[2]["channel_id"].rsplit("-", 1)[1]: c[2]["channel_id"] for c in ari.of("originate")}


async def destroyed(out: Outbound, cid: str, cause: int = 16) -> None:
    await out.on_event(ChannelDestroyed(type="ChannelDestroyed", channel=Channel(cid), cause=cause))


async def test_mobile_call_presents_the_key_and_bridges_on_answer() -> None:
    out, ari, hooks = make()
    await out.stasis_start(caller())
    (orig,) = ari.of("originate")
    expected = derive_key(device_secret(MASTER, "key-7"), Direction.OUTBOUND, 100, NumberFormat("XXXXXXXXXX"))
    assert orig[1] == "PJSIP/15550001111@carrier"
    assert orig[2]["caller_id"] == expected and orig[2]["app_args"] == "leg,c1" and orig[2]["app"] == "securelink"
    assert ("ring", "c1") in ari.calls and not ari.of("answer")  # ringback, not answered yet
    assert ("var", "c1", "SECURELINK_RESULT", "admitted") in ari.calls
    leg = orig[2]["channel_id"]
    await out.stasis_start(CallInfo(leg, "PJSIP/carrier-2", expected, "s", ("leg", "c1")))
    assert ari.of("answer") == [("answer", "c1")]
    assert ari.of("add") == [("add", "b1", ("c1", leg), {"inhibit_connected_line_updates": True})]
    await destroyed(out, leg)
    assert ("hangup", "c1", "normal") in ari.calls
    await destroyed(out, "c1")
    await asyncio.wait_for(hooks.done.wait(), 2)
    assert hooks.finished[0]["answered_by"] == "PJSIP/15550001111@carrier"
    assert ari.of("destroy") == [("destroy", "b1")]
    assert out.active == 0


async def test_third_call_in_a_period_is_rate_limited() -> None:
    out, ari, _hooks = make()
    for cid in ("c1", "c2", "c3"):
        await out.stasis_start(caller(cid=cid))
    assert len(ari.of("originate")) == 2
    assert ("var", "c3", "SECURELINK_RESULT", "rate_limited") in ari.calls
    assert ("hangup", "c3", "congestion") in ari.calls
    keys = [c[2]["caller_id"] for c in ari.of("originate")]
    assert len(set(keys)) == 2  # epochs 100 and 101: never the same key twice


@pytest.mark.parametrize(
    ("dev", "ref", "verdict"),
    [(device("revoked"), "7", "revoked"), (device("provisioned"), "7", "unregistered"), (device(), "8", "error"),
     (device(), "x; DROP", "error")],
)  # fmt: skip
async def test_refused_devices_get_no_leg(dev: DeviceRow, ref: str, verdict: str) -> None:
    out, ari, hooks = make(dev)
    await out.stasis_start(caller(dev=ref))
    assert ari.of("originate") == []
    assert ("var", "c1", "SECURELINK_RESULT", verdict) in ari.calls
    assert ("hangup", "c1", "rejected") in ari.calls
    await out.on_event(StasisEnd(type="StasisEnd", channel=Channel("c1")))
    await asyncio.wait_for(hooks.done.wait(), 2)
    assert hooks.finished[0]["verdict"] == verdict and hooks.finished[0]["legs"] == []


async def test_fork_rings_both_and_first_wins() -> None:
    out, ari, _hooks = make()
    await out.stasis_start(caller("fork"))
    legs = leg_ids(ari)
    assert set(legs) == {"mobile", "desk"}
    desk_orig = next(c for c in ari.of("originate") if c[1] == "PJSIP/desk1001")
    assert desk_orig[2]["caller_id"] == "100"  # the desk sees the real caller, not the key
    await asyncio.gather(
        out.stasis_start(CallInfo(legs["desk"], "d", "", "", ("leg", "c1"))),
        out.stasis_start(CallInfo(legs["mobile"], "m", "", "", ("leg", "c1"))),
    )
    assert ari.bridges == 1
    hangups = ari.of("hangup")
    assert len([h for h in hangups if h[2] == "answered_elsewhere"]) >= 1
    assert all(h[1] != "c1" for h in hangups)


async def test_ring_timeout_gives_noanswer() -> None:
    out, ari, hooks = make(ring_timeout=5)
    out.ring_timeout = 0.05
    await out.stasis_start(caller())
    leg = leg_ids(ari)["mobile"]
    await asyncio.sleep(0.2)
    assert ("hangup", leg, "normal") in ari.calls and ("hangup", "c1", "no_answer") in ari.calls
    await destroyed(out, leg, 16)
    await destroyed(out, "c1", 19)
    await asyncio.wait_for(hooks.done.wait(), 2)
    assert hooks.finished[0]["hangup_cause"] == "no_answer"
    assert hooks.finished[0]["legs"][0]["outcome"] == "no_answer"


async def test_originate_failure_gives_congestion() -> None:
    out, ari, _hooks = make(fail_originate=["PJSIP/15550001111@carrier"])
    await out.stasis_start(caller())
    assert ("hangup", "c1", "congestion") in ari.calls


async def test_unknown_leg_is_hung_up() -> None:
    out, ari, _hooks = make()
    await out.stasis_start(CallInfo("stray", "x", "", "", ("leg", "nope")))
    assert ari.of("hangup") == [("hangup", "stray", "normal")]


async def test_reconcile_treats_vanished_channels_as_gone() -> None:
    out, _ari, hooks = make()
    await out.stasis_start(caller())
    await out.reconcile(set())
    await asyncio.wait_for(hooks.done.wait(), 2)
    assert hooks.finished[0]["hangup_cause"] == "caller_cancelled"
    assert out.active == 0


async def test_hook_failure_does_not_break_the_call() -> None:
    out, ari, hooks = make()
    failed = asyncio.Event()

    async def boom(record: dict[str, Any]) -> None:
        failed.set()
        raise RuntimeError("call records down")

    hooks.on_finished = boom  # type: ignore[method-assign]
    await out.stasis_start(caller())
    leg = leg_ids(ari)["mobile"]
    await out.stasis_start(CallInfo(leg, "m", "", "", ("leg", "c1")))
    assert ari.bridges == 1 and ("hangup", "c1", "congestion") not in ari.calls
    await destroyed(out, leg)
    await destroyed(out, "c1")
    await asyncio.wait_for(failed.wait(), 2)
    for _ in range(100):  # the supervisor logs the failure and forgets the call
        if out.active == 0:
            break
        await asyncio.sleep(0.01)
    assert out.active == 0 and ari.of("destroy") == [("destroy", "b1")]


async def test_the_verdict_is_queued_for_audit_synchronously_and_never_carries_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit: list[dict[str, Any]] = []
    legs_when_queued: list[int] = []

    def sink(event: dict[str, Any]) -> None:  # a plain function: the controller cannot await it
        legs_when_queued.append(len(ari.of("originate")))
        audit.append(event)

    out, ari, _hooks = make(audit=sink)
    await out.stasis_start(caller())
    (orig,) = ari.of("originate")
    [event] = audit
    assert legs_when_queued == [0]  # queued before the legs rang
    assert (event["action"], event["result"], event["actor"]) == ("outbound", "admitted", "asterisk")
    assert (event["device_id"], event["direction"], event["mode"], event["call_id"]) == (7, "outbound", "mobile", "c1")
    assert orig[2]["caller_id"] not in repr(event)  # only the epoch drift, never the key
    await out.stasis_start(caller(dev="8", cid="c2"))
    assert [e["result"] for e in audit] == ["admitted", "error"]
    assert "not queued" not in caplog.text  # called, not awaited


async def test_outbound_verdicts_are_counted_in_metrics_with_their_direction_and_method() -> None:
    metrics = Metrics(30)
    out, _ari, _hooks = make(metrics=metrics)
    await out.stasis_start(caller())  # device 7: registered, admitted
    await out.stasis_start(caller(dev="8", cid="c2"))  # device 8: unknown, error
    text = metrics.exposition().decode()
    assert 'securelink_verdicts_total{direction="outbound",mode="mobile",result="admitted"} 1.0' in text
    assert 'securelink_verdicts_total{direction="outbound",mode="mobile",result="error"} 1.0' in text
    assert 'direction="inbound"' not in text


async def test_an_audit_sink_that_raises_does_not_stop_the_call() -> None:
    def broken(event: dict[str, Any]) -> None:
        raise RuntimeError("queue gone")

    out, ari, _hooks = make(audit=broken)
    await out.stasis_start(caller())
    assert len(ari.of("originate")) == 1 and ("hangup", "c1", "congestion") not in ari.calls


def test_handles() -> None:
    assert Outbound.handles(caller("mobile")) and Outbound.handles(caller("fork")) and Outbound.handles(caller("leg"))
    assert not Outbound.handles(CallInfo("x", "", None, None, ("inbound", "ani")))
    assert not Outbound.handles(CallInfo("x", "", None, None, ()))
    assert ob.CALL_KINDS == {"mobile", "fork"}


async def test_per_call_key_id_on_the_caller_and_every_leg_header_only_where_the_hooks_put_it() -> None:
    out, ari, hooks = make()
    header = "PJSIP_HEADER(add,X-SecureLink-Call-Key)"
    hooks.extras = LegExtras("ck-1", {"PJSIP/15550001111@carrier": {header: "secret"}})
    await out.stasis_start(caller("fork"))
    assert hooks.before == [("c1", 7, ["PJSIP/15550001111@carrier", "PJSIP/desk1001"])]
    assert ("var", "c1", "SECURELINK_CALL_KEY_ID", "ck-1") in ari.calls
    by_endpoint = {c[1]: c[2]["variables"] for c in ari.of("originate")}
    assert by_endpoint["PJSIP/15550001111@carrier"] == {header: "secret", "SECURELINK_CALL_KEY_ID": "ck-1"}
    assert by_endpoint["PJSIP/desk1001"] == {"SECURELINK_CALL_KEY_ID": "ck-1"}  # no header on that leg
    assert "secret" not in repr(hooks.extras)


async def test_a_failing_before_legs_hook_rings_the_legs_without_a_per_call_key() -> None:
    out, ari, hooks = make()

    async def boom(*_a: Any) -> LegExtras:
        raise RuntimeError("escrow store down")

    hooks.before_legs = boom  # type: ignore[method-assign]
    await out.stasis_start(caller())
    (orig,) = ari.of("originate")
    assert orig[2]["variables"] is None
    assert not [c for c in ari.calls if c[0] == "var" and c[2] == "SECURELINK_CALL_KEY_ID"]
