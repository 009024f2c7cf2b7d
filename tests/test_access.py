"""The access number's handler (`inbound.access.AccessHandler`) on a real store (SQLite and PostgreSQL), with the
channel recorded instead of Asterisk: DTMF admission and every refusal, intents before answer, the race."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.keys import MASTER
from support.services import make_service

from asterisk_securelink import config
from asterisk_securelink.asterisk.ari.events import Channel, ChannelDtmfReceived, PlaybackFinished, StasisEnd
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret, now_ms
from asterisk_securelink.dialplan import DESTINATION_VAR, DEVICE_VAR, METHOD_VAR, RESULT_VAR
from asterisk_securelink.inbound.access import FAILURE_SOUND, AccessHandler
from asterisk_securelink.inbound.dtmf import Timing
from asterisk_securelink.inbound.service import VerificationService
from asterisk_securelink.notifier import Notifier
from asterisk_securelink.stasis import CallInfo
from asterisk_securelink.store.intents import IntentStore
from asterisk_securelink.store.lanes import lanes_for
from asterisk_securelink.store.store import DeviceRow, Store

ACCESS = "+12155550400"
MOBILE = "+12155551234"
FAST = Timing(first_digit_ms=400, inter_digit_ms=300, total_ms=3_000)


@dataclass
class AccessChannels:
    """Records what the handler does to channels; `play` answers with a `PlaybackFinished` later (the test's)."""

    calls: list[tuple[str, ...]] = field(default_factory=list)
    played: list[tuple[str, str]] = field(default_factory=list)  # (channel, playback id)
    functions: dict[str, str] = field(default_factory=dict)  # what get_channel_var answers (STIR_SHAKEN(...))

    async def get_channel_var(self, channel_id: str, name: str) -> str:
        return self.functions.get(name, "")

    async def answer(self, channel_id: str) -> None:
        self.calls.append(("answer", channel_id))

    async def play(self, channel_id: str, media: str, playback_id: str) -> None:
        self.calls.append(("play", channel_id, media))
        self.played.append((channel_id, playback_id))

    async def stop_playback(self, playback_id: str) -> bool:
        self.calls.append(("stop", playback_id))
        return True

    async def set_channel_var(self, channel_id: str, name: str, value: str) -> None:
        self.calls.append(("var", channel_id, name, value))

    async def continue_in_dialplan(
        self, channel_id: str, context: str | None = None, extension: str | None = None, priority: int | None = None
    ) -> None:
        self.calls.append(("continue", channel_id, context or ""))

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
        self.calls.append(("hangup", channel_id, reason))
        return True

    def vars(self, channel_id: str) -> dict[str, str]:
        return {c[2]: c[3] for c in self.calls if c[0] == "var" and c[1] == channel_id}


@dataclass
class Scene:
    cfg: config.Config
    store: Store
    svc: VerificationService
    chans: AccessChannels
    handler: AccessHandler
    intents: IntentStore
    device: DeviceRow

    def key(self, t_ms: int | None = None, device: DeviceRow | None = None) -> str:
        d = device or self.device
        epoch = (now_ms() if t_ms is None else t_ms) // (self.cfg.keys.period * 1000)
        return derive_key(device_secret(MASTER, d.key_id), Direction.INBOUND, epoch, self.cfg.inbound_fmt)

    async def call(self, cid: str, caller: str | None = MOBILE, exten: str = ACCESS) -> CallInfo:
        info = CallInfo(cid, f"PJSIP/carrier-{cid}", caller, exten, ("inbound", "access"))
        await self.handler.stasis_start(info)
        await asyncio.sleep(0.05)  # the collection's task answers and starts the prompt
        return info

    async def digits(self, cid: str, digits: str, gap: float = 0.0) -> None:
        for d in digits:
            await self.handler.on_event(
                ChannelDtmfReceived(type="ChannelDtmfReceived", channel=Channel(cid), digit=d, duration_ms=100)
            )
            await asyncio.sleep(gap)

    async def finish_sounds(self) -> None:
        """Every playback started so far ends (Asterisk's `PlaybackFinished`)."""
        for cid, pid in self.chans.played:
            await self.handler.on_event(
                PlaybackFinished(type="PlaybackFinished", playback_id=pid, target_uri=f"channel:{cid}", state="done")
            )

    async def settle(self) -> None:
        for _ in range(200):
            await asyncio.sleep(0.02)
            await self.finish_sounds()
            if self.handler.sessions == 0:
                return
        raise AssertionError("the DTMF collection did not end")


@pytest.fixture
async def scene(store: Store, tmp_path: Path) -> AsyncIterator[Scene]:
    cfg = config.build({"calling": {"access_numbers": [ACCESS, "+12155550401"], "max_dtmf_sessions": 2}}, {}, tmp_path)
    svc = make_service(cfg, store, device_sync_interval=0)
    dev = await store.add_device("Alice", MOBILE, None, "kid-alice", "test")
    dev = await store.update_device(dev.id, "device.register", "test", status="registered")
    await svc.start()
    intents = IntentStore(store, lanes_for(store.engine))
    chans = AccessChannels()
    registrable: list[tuple[str, int]] = []
    handler = AccessHandler(cfg, svc, chans, Notifier(), intents=intents, timing=FAST,
                            registrable=lambda c, d: registrable.append((c, d)))  # fmt: skip
    try:
        yield Scene(cfg, store, svc, chans, handler, intents, dev)
    finally:
        await handler.close(1)
        await svc.audit.drain()


def audit_rows(rows: list[Any]) -> list[tuple[str, str | None]]:
    return [(r.result, r.mode) for r in rows if r.action == "verify"]


async def test_the_key_by_dtmf_then_a_destination_is_admitted_with_method_dtmf(scene: Scene) -> None:
    await scene.call("c1")
    assert scene.chans.calls[:2] == [("answer", "c1"), ("play", "c1", "sound:beep")]  # the prompt first
    await scene.digits("c1", scene.key() + "2001#")
    await scene.settle()
    v = scene.chans.vars("c1")
    assert (v[RESULT_VAR], v[DEVICE_VAR], v[METHOD_VAR], v[DESTINATION_VAR]) == (
        "admitted",
        str(scene.device.id),
        "dtmf",
        "2001",
    )
    assert scene.chans.calls[-1] == ("continue", "c1", "securelink-admitted")
    assert ("stop", scene.chans.played[0][1]) in scene.chans.calls  # the first digit stopped the prompt
    await scene.svc.audit.drain()
    assert audit_rows(await scene.store.list_audit()) == [("admitted", "dtmf")]


async def test_the_app_string_key_pause_destination_hands_on_the_destination(scene: Scene) -> None:
    await scene.call("c1")
    await scene.digits("c1", scene.key())
    await asyncio.sleep(0.1)  # the dialer's pause (shorter than the inter-digit limit)
    await scene.digits("c1", "2001")
    await scene.settle()  # ended by silence
    assert scene.chans.vars("c1")[DESTINATION_VAR] == "2001"


async def test_the_same_key_twice_is_replayed_and_sounds_like_any_failure(scene: Scene) -> None:
    key = scene.key()
    await scene.call("c1")
    await scene.digits("c1", key + "#")
    await scene.settle()
    await scene.call("c2")
    await scene.digits("c2", key)
    await scene.settle()
    assert ("play", "c2", f"sound:{FAILURE_SOUND}") in scene.chans.calls
    assert scene.chans.calls[-1] == ("hangup", "c2", "rejected")
    assert RESULT_VAR not in scene.chans.vars("c2")
    await scene.svc.audit.drain()
    assert audit_rows(await scene.store.list_audit()) == [("admitted", "dtmf"), ("replayed", "dtmf")]


async def test_a_wrong_key_another_devices_key_and_an_unknown_number_are_refused(scene: Scene) -> None:
    other = await scene.store.add_device("Bob", "+12155559999", None, "kid-bob", "test")
    await scene.store.update_device(other.id, "device.register", "test", status="registered")
    await scene.svc.keys.sync_devices()
    wrong = str((int(scene.key()) + 1) % 10**10).zfill(10)
    await scene.call("c1")
    await scene.digits("c1", wrong)
    await scene.settle()
    await scene.call("c2")
    await scene.digits("c2", scene.key(device=other))  # Bob's key from Alice's number
    await scene.settle()
    await scene.call("c3", caller="+12155550000")  # a number no device has: answered alike, no oracle
    assert ("answer", "c3") in scene.chans.calls
    await scene.digits("c3", scene.key())
    await scene.settle()
    for cid in ("c1", "c2", "c3"):
        assert ("hangup", cid, "rejected") in scene.chans.calls and ("play", cid, "sound:auth-incorrect") in (
            scene.chans.calls
        )
    await scene.svc.audit.drain()
    assert [r for r, _ in audit_rows(await scene.store.list_audit())] == ["mismatch", "mismatch", "mismatch"]


async def test_no_digits_in_time_is_no_key(scene: Scene) -> None:
    await scene.call("c1")
    await scene.settle()  # the first-digit timer ends it
    assert scene.chans.calls[-1] == ("hangup", "c1", "rejected")
    await scene.svc.audit.drain()
    assert audit_rows(await scene.store.list_audit()) == [("no_key", "dtmf")]


async def test_an_anonymous_caller_is_rejected_before_answer(scene: Scene) -> None:
    await scene.call("c1", caller="")
    assert scene.chans.calls == [("hangup", "c1", "rejected")]
    await scene.svc.audit.drain()
    assert audit_rows(await scene.store.list_audit()) == [("anonymous", "dtmf")]


async def test_sessions_past_the_limit_and_a_second_call_from_one_number_get_congestion(scene: Scene) -> None:
    await scene.call("c1")
    await scene.call("c2")  # the same number while c1 collects
    assert ("hangup", "c2", "congestion") in scene.chans.calls and ("answer", "c2") not in scene.chans.calls
    await scene.call("c3", caller="+12155550003")
    await scene.call("c4", caller="+12155550004")  # max_dtmf_sessions = 2
    assert ("hangup", "c4", "congestion") in scene.chans.calls
    await scene.handler.on_event(StasisEnd(type="StasisEnd", channel=Channel("c1")))
    await scene.handler.on_event(StasisEnd(type="StasisEnd", channel=Channel("c3")))
    await scene.settle()


async def test_a_live_intent_admits_before_answer_once_and_only_on_its_access_number(scene: Scene) -> None:
    made = await scene.intents.create(scene.device.id, ACCESS, "2001", now_ms(), 30, None, quiet_s=120)
    assert made.intent is not None
    await scene.call("c1")
    assert ("answer", "c1") not in scene.chans.calls  # admitted before answer
    v = scene.chans.vars("c1")
    assert (v[RESULT_VAR], v[METHOD_VAR], v[DESTINATION_VAR]) == ("admitted", "intent", "2001")
    await scene.call("c2")  # a second call on the spent intent: raced; the first call is hung up, this one to DTMF
    assert ("hangup", "c1", "rejected") in scene.chans.calls and ("answer", "c2") in scene.chans.calls
    await scene.handler.on_event(StasisEnd(type="StasisEnd", channel=Channel("c2")))
    await scene.settle()
    again = await scene.intents.create(scene.device.id, ACCESS, "2001", now_ms(), 30, None, quiet_s=120)
    assert again.outcome.value == "use_dtmf"  # the racing call left a noise record: no intent for a while
    await scene.svc.audit.drain()
    rows = audit_rows(await scene.store.list_audit())
    assert rows[:2] == [("admitted", "intent"), ("replayed", "intent")]  # the racing call gets `replayed`, then DTMF


async def test_a_device_registered_after_the_last_sync_is_admitted_by_its_intent_at_once(scene: Scene) -> None:
    # devices sync at each epoch boundary; a phone registered a moment ago asks for an intent and calls at once
    dev = await scene.store.add_device("Bob", "+12155551235", None, "kid-bob", "test")
    dev = await scene.store.update_device(dev.id, "device.register", "test", status="registered")
    assert dev.id not in scene.svc.keys.mobile_numbers  # not synced yet
    await scene.intents.create(dev.id, ACCESS, "2001", now_ms(), 30, None, quiet_s=120)
    await scene.call("c1", caller="+12155551235")
    assert ("answer", "c1") not in scene.chans.calls  # admitted before answer, not sent to DTMF
    assert scene.chans.vars("c1")[METHOD_VAR] == "intent"


async def test_an_intent_for_another_access_number_is_cancelled_and_the_call_goes_to_dtmf(scene: Scene) -> None:
    await scene.intents.create(scene.device.id, "+12155550401", None, now_ms(), 30, None, quiet_s=120)
    await scene.call("c1")  # to +12155550400
    assert ("answer", "c1") in scene.chans.calls
    await scene.handler.on_event(StasisEnd(type="StasisEnd", channel=Channel("c1")))
    await scene.settle()
    await scene.call("c2", exten="+12155550401")  # the cancelled intent no longer admits
    assert ("answer", "c2") in scene.chans.calls
    await scene.handler.on_event(StasisEnd(type="StasisEnd", channel=Channel("c2")))
    await scene.settle()


async def test_a_number_that_is_no_access_number_is_refused(scene: Scene) -> None:
    await scene.call("c1", exten="+12155550999")
    assert scene.chans.calls == [("hangup", "c1", "rejected")]


@pytest.mark.parametrize(
    ("functions", "admitted"),
    [
        ({}, False),  # no STIR/SHAKEN verification at all
        ({"STIR_SHAKEN(count)": "1", "STIR_SHAKEN(0,verify_result)": "success", "STIR_SHAKEN(0,attestation)": "B"},
         False),
        ({"STIR_SHAKEN(count)": "1", "STIR_SHAKEN(0,verify_result)": "failure", "STIR_SHAKEN(0,attestation)": "A"},
         False),
        ({"STIR_SHAKEN(count)": "1", "STIR_SHAKEN(0,verify_result)": "success", "STIR_SHAKEN(0,attestation)": "A"},
         True),
    ],
)  # fmt: skip
async def test_attestation_a_admits_by_intent_only_a_verified_a_call_and_spends_nothing_otherwise(
    scene: Scene, tmp_path: Path, functions: dict[str, str], admitted: bool
) -> None:
    cfg = config.build({"calling": {"access_numbers": [ACCESS], "intent_attestation": "A"}}, {}, tmp_path)
    chans = AccessChannels(functions=functions)
    handler = AccessHandler(cfg, scene.svc, chans, Notifier(), intents=scene.intents, timing=FAST)
    await scene.intents.create(scene.device.id, ACCESS, "2001", now_ms(), 30, None, quiet_s=120)
    info = CallInfo("a1", "PJSIP/carrier-a1", MOBILE, ACCESS, ("inbound", "access"))
    await handler.stasis_start(info)
    await asyncio.sleep(0.05)
    assert (("answer", "a1") not in chans.calls) is admitted  # admitted before answer, or to DTMF
    if not admitted:  # the intent was not spent: the phone's own call can still use it
        await handler.on_event(StasisEnd(type="StasisEnd", channel=Channel("a1")))
        await handler.close(1)
        live = await scene.intents.admit((scene.device.id,), ACCESS, "a2", now_ms())
        assert live.intent is not None
    await handler.close(1)


async def test_dtmf_key_alone_admits_a_withheld_number_on_its_own_budget(scene: Scene, tmp_path: Path) -> None:
    cfg = config.build({"calling": {"access_numbers": [ACCESS], "dtmf_key_alone": True}}, {}, tmp_path)
    svc = make_service(cfg, scene.store, device_sync_interval=0)
    await svc.start()
    chans = AccessChannels()
    handler = AccessHandler(cfg, svc, chans, Notifier(), timing=FAST)
    info = CallInfo("k1", "PJSIP/carrier-k1", "", ACCESS, ("inbound", "access"))
    await handler.stasis_start(info)
    await asyncio.sleep(0.05)
    assert ("answer", "k1") in chans.calls  # not refused before answer
    for d in scene.key() + "##":
        await handler.on_event(ChannelDtmfReceived(type="ChannelDtmfReceived", channel=Channel("k1"), digit=d))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if handler.sessions == 0:
            break
    await handler.close(1)
    await svc.audit.drain()
    rows = [r for r in await scene.store.list_audit() if r.action == "verify"]
    assert [(r.result, r.mode, r.source) for r in rows] == [("admitted", "dtmf", "dtmf")]  # the `dtmf` budget
    assert chans.calls[-1] == ("continue", "k1", "securelink-admitted")


async def test_no_key_digit_reaches_any_log(scene: Scene, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    key = scene.key()
    await scene.call("c1")
    await scene.digits("c1", key + "2001#")
    await scene.settle()
    await scene.call("c2")
    await scene.digits("c2", key + "#")  # replayed: the failure path logs too
    await scene.settle()
    assert "admitted" in caplog.text  # the handler did log its verdicts
    assert key not in caplog.text
