"""The Stasis and FastAGI handlers on a real SQLite store (channels recorded, not Asterisk): admission and
registration."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from support.agi import agi_env as wire_env
from support.agi import answer_commands
from support.clock import T
from support.dialplan import contexts
from support.fakes import Channels
from support.keys import MASTER
from support.services import make_service

from asterisk_securelink import config
from asterisk_securelink.asterisk.agi import PEER_KEY
from asterisk_securelink.calling.onward import Admitted
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret
from asterisk_securelink.dialplan import DEVICE_VAR, MODE_VAR, RESULT_VAR
from asterisk_securelink.inbound.handlers import Handlers
from asterisk_securelink.notifier import Notifier
from asterisk_securelink.runner import agi_server
from asterisk_securelink.stasis import CallInfo
from asterisk_securelink.store.store import Store


async def registration_setup(store: Store, tmp_path: Path) -> tuple[Handlers, Channels, int]:
    cfg = config.build({}, {}, tmp_path)
    svc = make_service(cfg, store, clock_ms=lambda: T, device_sync_interval=0)
    d = await store.add_device("New", "15550001", None, "kid-n", "t")  # provisioned: limited until registered
    await svc.start()
    channels = Channels()
    handlers = Handlers(cfg, svc, channels, Notifier())
    key = derive_key(device_secret(MASTER, d.key_id), Direction.INBOUND, T // 30_000, cfg.inbound_fmt)
    await handlers.stasis_start(CallInfo("ch1", "PJSIP/x", key, "100", ("inbound", "ani")))
    assert channels.calls == [("continue", "ch1", "securelink-verdict")]  # one request: the hand-off
    h = channels.handoffs["ch1"]
    assert (h.kind, h.verdict, h.device, h.mode, h.next_context, h.emit_verdict) == ("u", "unregistered", d.id,
                                                                                    "ani", "", True)  # fmt: skip
    return handlers, channels, d.id


async def test_first_verified_call_registers_the_device(store: Store, tmp_path: Path) -> None:
    handlers, channels, device_id = await registration_setup(store, tmp_path)
    await handlers.stasis_start(CallInfo("ch1", "PJSIP/x", "", "100", ("register",)))
    assert ("var", "ch1", "SECURELINK_RESULT", "admitted") in channels.calls
    dev = await store.get_device(device_id)
    assert dev is not None and dev.status == "registered"
    await handlers.service.audit.drain()


async def test_a_device_revoked_meanwhile_is_not_registered_nor_admitted(store: Store, tmp_path: Path) -> None:
    handlers, channels, device_id = await registration_setup(store, tmp_path)
    await store.update_device(device_id, "device.revoke", "t", status="revoked")
    await handlers.stasis_start(CallInfo("ch1", "PJSIP/x", "", "100", ("register",)))
    assert ("hangup", "ch1", "rejected") in channels.calls
    assert ("var", "ch1", "SECURELINK_RESULT", "admitted") not in channels.calls
    dev = await store.get_device(device_id)
    assert dev is not None and dev.status == "revoked"
    await handlers.service.audit.drain()


async def test_register_without_a_verified_call_is_rejected(store: Store, tmp_path: Path) -> None:
    handlers, channels, device_id = await registration_setup(store, tmp_path)
    await handlers.stasis_start(CallInfo("other", "PJSIP/x", "", "100", ("register",)))
    assert ("hangup", "other", "rejected") in channels.calls
    dev = await store.get_device(device_id)
    assert dev is not None and dev.status == "provisioned"
    await handlers.service.audit.drain()


async def admission_setup(store: Store, tmp_path: Path, channels: Channels) -> tuple[Handlers, str]:
    cfg = config.build({"inbound": {"admitted_context": "in-ok"}}, {}, tmp_path)
    svc = make_service(cfg, store, clock_ms=lambda: T, device_sync_interval=0)
    d = await store.add_device("A", "15550002", None, "kid-a", "t")
    await store.update_device(d.id, "device.register", "t", status="registered")
    await svc.start()
    key = derive_key(device_secret(MASTER, d.key_id), Direction.INBOUND, T // 30_000, cfg.inbound_fmt)
    return Handlers(cfg, svc, channels, Notifier()), key


async def test_admitted_call_gets_its_variables_then_continues_in_the_admitted_context(
    store: Store, tmp_path: Path
) -> None:
    channels = Channels()
    handlers, key = await admission_setup(store, tmp_path, channels)
    await handlers.stasis_start(CallInfo("ch1", "PJSIP/carrier-00000001", key, "100", ("inbound", "ani")))
    assert set(channels.calls[:3]) == {
        ("var", "ch1", "SECURELINK_RESULT", "admitted"),
        ("var", "ch1", "SECURELINK_DEVICE", "1"),
        ("var", "ch1", "SECURELINK_MODE", "ani"),
    }
    assert channels.calls[3:] == [("continue", "ch1", "in-ok")]
    await handlers.service.audit.drain()


class OnwardSeen:
    """Stands in for `calling.onward.Onward` (tested on its own): which admitted calls were handed to it."""

    def __init__(self) -> None:
        self.went: list[tuple[str, int]] = []

    async def go(self, call: CallInfo, admitted: Admitted) -> None:
        self.went.append((call.channel_id, admitted.device_id))


async def test_one_log_line_per_call_an_admitted_call_routed_on_is_logged_by_the_onward_path(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    channels = Channels()
    handlers, key = await admission_setup(store, tmp_path, channels)
    onward = OnwardSeen()
    handlers.onward = onward  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger="asterisk_securelink.inbound.handlers"):
        await handlers.stasis_start(CallInfo("ch1", "PJSIP/carrier-00000001", key, "100", ("inbound", "ani")))
        await handlers.stasis_start(CallInfo("ch2", "PJSIP/carrier-00000002", "15550002", "100", ("inbound", "ani")))
    assert onward.went == [("ch1", 1)]
    lines = [r.getMessage() for r in caplog.records if r.name == "asterisk_securelink.inbound.handlers"]
    assert lines == ["stasis ch2: mismatch device=None mode=ani"]  # ch1's line is the onward path's
    await handlers.service.audit.drain()


async def test_a_forged_number_is_rejected_after_its_verdict_is_set(store: Store, tmp_path: Path) -> None:
    channels = Channels()
    handlers, _key = await admission_setup(store, tmp_path, channels)
    await handlers.stasis_start(CallInfo("ch2", "PJSIP/carrier-00000002", "15550002", "100", ("inbound", "ani")))
    # one ARI request: the dialplan sets SECURELINK_RESULT=mismatch, publishes it and hangs up (cause 21)
    assert channels.calls == [("continue", "ch2", "securelink-verdict")]
    h = channels.handoffs["ch2"]
    assert (h.kind, h.verdict, h.device, h.mode, h.emit_verdict) == ("r", "mismatch", None, "ani", True)
    await handlers.service.audit.drain()


async def test_a_number_that_could_steer_the_dialplan_is_not_handed_on(store: Store, tmp_path: Path) -> None:
    channels = Channels()
    handlers, _key = await admission_setup(store, tmp_path, channels)
    await handlers.stasis_start(CallInfo("ch5", "PJSIP/carrier-00000005", "15550002", "1(:ctx,5", ("inbound", "ani")))
    assert channels.calls == [("hangup", "ch5", "rejected")] and "ch5" not in channels.handoffs
    await handlers.service.audit.drain()


async def test_a_hand_off_that_fails_rejects_the_call(store: Store, tmp_path: Path) -> None:
    channels = Channels(fail_on="continue")  # ARI fails on the hand-off: the call is hung up, never left waiting
    handlers, _key = await admission_setup(store, tmp_path, channels)
    await handlers.stasis_start(CallInfo("ch4", "PJSIP/carrier-00000004", "15550002", "100", ("inbound", "ani")))
    assert channels.calls == [("hangup", "ch4", "rejected")]
    await handlers.service.audit.drain()


async def test_a_verdict_that_cannot_be_set_rejects_the_call(store: Store, tmp_path: Path) -> None:
    channels = Channels(fail_on="var")  # ARI fails while the variables are set: never continue unverified
    handlers, key = await admission_setup(store, tmp_path, channels)
    await handlers.stasis_start(CallInfo("ch3", "PJSIP/carrier-00000003", key, "100", ("inbound", "ani")))
    assert channels.calls == [("hangup", "ch3", "rejected")]
    await handlers.service.audit.drain()


async def test_the_same_call_is_node_plus_uniqueid_never_the_sip_call_id(store: Store, tmp_path: Path) -> None:
    """A second Stasis entry of the same channel is not a replay; the same uniqueid on another node is."""
    from asterisk_securelink.core.slk1 import Direction as D

    channels = Channels()
    handlers, key = await admission_setup(store, tmp_path, channels)
    handlers.service.node = "pbx-a"
    call = CallInfo("1790000000.42", "PJSIP/carrier-0000002a", key, "100", ("inbound", "ani"))
    await handlers.stasis_start(call)
    await handlers.stasis_start(call)  # the same channel entering Stasis again
    assert channels.calls.count(("continue", "1790000000.42", "in-ok")) == 2
    row = await store.key_epoch(1, D.INBOUND)
    assert row is not None and row.last_call_id == "pbx-a/1790000000.42"
    handlers.service.node = "pbx-b"  # another Asterisk whose uniqueid happens to be the same
    await handlers.stasis_start(call)
    assert channels.handoffs["1790000000.42"].verdict == "replayed"
    await handlers.service.audit.drain()


# -- FastAGI: the same admission and registration, through the AGI routes ---------------------------------------
def agi_env(
    uniqueid: str, caller: str, channel: str = "PJSIP/carrier-0000002a", peer: str = "127.0.0.1"
) -> dict[str, str]:
    return {
        "agi_uniqueid": uniqueid,
        "agi_channel": channel,
        "agi_callerid": caller,
        "agi_extension": "100",
        PEER_KEY: peer,
    }


async def test_agi_first_verified_call_registers_the_device(store: Store, tmp_path: Path) -> None:
    """[securelink-after-agi] sends `unregistered` to [securelink-register-agi], whose AGI(.../register) registers
    the device of the channel verified moments before (same uniqueid, same peer), once."""
    cfg = config.build({}, {}, tmp_path)
    svc = make_service(cfg, store, clock_ms=lambda: T, device_sync_interval=0)
    d = await store.add_device("New", "15550001", None, "kid-n", "t")
    await svc.start()
    channels = Channels()
    handlers = Handlers(cfg, svc, channels, Notifier())
    key = derive_key(device_secret(MASTER, d.key_id), Direction.INBOUND, T // 30_000, cfg.inbound_fmt)
    verdict = await handlers.agi_verify(agi_env("1790000000.7", key), ["ani"])
    assert verdict == {RESULT_VAR: "unregistered", DEVICE_VAR: str(d.id), MODE_VAR: "ani"}
    assert await handlers.agi_register(agi_env("1790000000.8", ""), []) == {RESULT_VAR: "error"}  # another channel
    assert await handlers.agi_register(agi_env("1790000000.7", "", peer="127.0.0.9"), []) == {RESULT_VAR: "error"}
    dev = await store.get_device(d.id)
    assert dev is not None and dev.status == "provisioned"
    assert await handlers.agi_register(agi_env("1790000000.7", ""), []) == {RESULT_VAR: "admitted"}
    dev = await store.get_device(d.id)
    assert dev is not None and dev.status == "registered"
    assert await handlers.agi_register(agi_env("1790000000.7", ""), []) == {RESULT_VAR: "error"}  # only once
    assert channels.calls == []  # FastAGI never drives channels: the dialplan decides from the variables
    await handlers.service.audit.drain()


async def test_agi_device_revoked_meanwhile_is_not_registered(store: Store, tmp_path: Path) -> None:
    cfg = config.build({}, {}, tmp_path)
    svc = make_service(cfg, store, clock_ms=lambda: T, device_sync_interval=0)
    d = await store.add_device("New", "15550001", None, "kid-n", "t")
    await svc.start()
    handlers = Handlers(cfg, svc, Channels(), Notifier())
    key = derive_key(device_secret(MASTER, d.key_id), Direction.INBOUND, T // 30_000, cfg.inbound_fmt)
    assert (await handlers.agi_verify(agi_env("u1", key), ["ani"]))[RESULT_VAR] == "unregistered"
    await store.update_device(d.id, "device.revoke", "t", status="revoked")
    assert await handlers.agi_register(agi_env("u1", ""), []) == {RESULT_VAR: "revoked"}
    dev = await store.get_device(d.id)
    assert dev is not None and dev.status == "revoked"
    await handlers.service.audit.drain()


async def test_agi_lockout_source_is_a_channel_name_or_the_peer_address(store: Store, tmp_path: Path) -> None:
    """A forged `agi_channel` cannot name someone else's trunk's source nor spread guesses over fresh sources: only
    a value shaped like an Asterisk channel name is used; anything else counts against the peer's address."""
    handlers, _key = await admission_setup(store, tmp_path, Channels())
    wrong = derive_key(
        device_secret(MASTER, "kid-a"), Direction.INBOUND, T // 30_000 - 100, handlers.config.inbound_fmt
    )
    channels = ["PJSIP/carrier-0000002a", "PJSIP/carrier\r\nx", "random-1", "", "PJSIP/trunk a-00000001"]
    for i, channel in enumerate(channels):
        await handlers.agi_verify(agi_env(f"u{i}", wrong, channel, peer="127.0.0.5"), ["ani"])
    await handlers.service.audit.drain()
    rows = await store.list_audit(action="verify")
    assert [r.source for r in rows] == ["PJSIP/carrier"] + ["agi:127.0.0.5"] * 4


async def test_guesses_through_dahdi_iax2_and_local_channels_spend_one_budget(store: Store, tmp_path: Path) -> None:
    """H1 (issue 22): the caller number, the dialed number or a call counter in the channel name made each guess a
    fresh source (300 guesses: 300 `mismatch`). Now each trunk has one budget (10 here), by Stasis and by FastAGI,
    and `SECURELINK_SOURCE` (third Stasis argument, second AGI argument) names one across technologies."""
    cfg = config.build({"lockout": {"max_guess_probability": 3e-9}}, {}, tmp_path)
    svc = make_service(cfg, store, clock_ms=lambda: T, device_sync_interval=0)
    await store.add_device("A", "15550002", None, "kid-a", "t")
    await svc.start()
    handlers = Handlers(cfg, svc, Channels(), Notifier())
    assert svc.guard.budget() == 10
    names = {
        "DAHDI": lambda i, g: f"DAHDI/i1/{g}-{i:x}",
        "IAX2": lambda i, g: f"IAX2/192.0.2.7:{4569 + i}-{i}",
        "Local": lambda i, g: f"Local/{g}@from-trunk-{i:08x};2",
    }
    for tech, name in names.items():
        got = []
        for i in range(30):
            g = f"55{i:08d}"
            if i % 2:
                env = agi_env(f"{tech}{i}", g, name(i, g))
                got.append((await handlers.agi_verify(env, ["ani"]))[RESULT_VAR])
            else:
                call = CallInfo(f"{tech}{i}", name(i, g), g, "100", ("inbound", "ani"))
                got.append((await handlers.decide(call, "ani", "stasis")).verdict.value)
        assert got == ["mismatch"] * 10 + ["locked_out"] * 20, tech
    named = []
    for i, g in enumerate(f"56{i:08d}" for i in range(12)):  # one source named by the dialplan, any technology
        channel = list(names.values())[i % 3](i, g)
        if i % 2:
            named.append((await handlers.agi_verify(agi_env(f"n{i}", g, channel), ["ani", "pri-a"]))[RESULT_VAR])
        else:
            call = CallInfo(f"n{i}", channel, g, "100", ("inbound", "ani", "pri-a"))
            named.append((await handlers.decide(call, "ani", "stasis")).verdict.value)
    assert named == ["mismatch"] * 10 + ["locked_out"] * 2
    await svc.audit.drain()
    sources = {r.source for r in await store.list_audit(action="verify")}
    assert sources == {"DAHDI/i1", "IAX2/192.0.2.7", "Local/@from-trunk", "pri-a"}


async def test_agi_routes_over_a_socket_register_a_device(store: Store, tmp_path: Path) -> None:
    """The server as `securelink agi` builds it (runner.agi_server): verify, then register, on one channel."""

    cfg = config.build({}, {}, tmp_path)
    svc = make_service(cfg, store, clock_ms=lambda: T, device_sync_interval=0)
    d = await store.add_device("New", "15550001", None, "kid-n", "t")
    await svc.start()
    handlers = Handlers(cfg, svc, Channels(), Notifier())
    key = derive_key(device_secret(MASTER, d.key_id), Direction.INBOUND, T // 30_000, cfg.inbound_fmt)
    server = agi_server(cfg, handlers)
    await server.serve("127.0.0.1", 0)
    try:
        sent = []
        for script, args in (("verify", ("ani",)), ("register", ())):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(wire_env(script, *args, agi_callerid=key, agi_uniqueid="1790000000.9"))
            sent.append(await answer_commands(reader, writer))
    finally:
        await server.stop()
    assert sent[0][0] == 'SET VARIABLE SECURELINK_RESULT "unregistered"'
    assert sent[1] == ['SET VARIABLE SECURELINK_RESULT "admitted"']
    dev = await store.get_device(d.id)
    assert dev is not None and dev.status == "registered"
    await handlers.service.audit.drain()


def test_dialplan_sends_unregistered_agi_calls_to_the_agi_registration_context() -> None:
    ctx = contexts()
    after_agi = "\n".join(ctx["securelink-after-agi"])
    assert '"${SECURELINK_RESULT}" = "unregistered"]?securelink-register-agi,${EXTEN},1)' in after_agi
    register = ctx["securelink-register-agi"]
    assert register[1] == " same => n,AGI(agi://127.0.0.1:4573/register,${SECURELINK_MODE})"
    assert register[2] == ' same => n,GotoIf($["${AGISTATUS}" != "SUCCESS"]?reject)'
    token_check = ' same => n,GotoIf($["${SECURELINK_AGI_TOKEN}" != "@AGI_TOKEN@"]?reject)'  # M4: a squatter is
    assert register[3] == token_check and token_check in after_agi.splitlines()[:2]  # believed in neither
    assert register[5] == ' same => n,GotoIf($["${SECURELINK_RESULT}" = "admitted"]?securelink-admitted,${EXTEN},1)'
    assert register[-1] == " same => n,Hangup(21)"  # anything else: rejected


class HeldChannels(Channels):
    """Channels whose variable requests wait for `release`: admissions stay in flight until the test lets them go."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def set_channel_var(self, channel_id: str, name: str, value: str) -> None:
        await self.release.wait()
        await super().set_channel_var(channel_id, name, value)


async def test_past_max_in_flight_a_call_is_turned_away_at_once_never_admitted(store: Store, tmp_path: Path) -> None:
    from asterisk_securelink.metrics import Metrics

    channels = HeldChannels()
    cfg = config.build({"inbound": {"admitted_context": "in-ok", "max_in_flight": 1}}, {}, tmp_path)
    svc = make_service(cfg, store, clock_ms=lambda: T, device_sync_interval=0)
    devices = [await store.add_device(f"D{i}", f"1555000{i}", None, f"kid-o{i}", "t") for i in range(3)]
    for d in devices:
        await store.update_device(d.id, "device.register", "t", status="registered")
    await svc.start()
    metrics = Metrics(period=30)
    handlers = Handlers(cfg, svc, channels, Notifier(svc.audit.record, metrics=metrics))
    keys = [
        derive_key(device_secret(MASTER, d.key_id), Direction.INBOUND, T // 30_000, cfg.inbound_fmt) for d in devices
    ]
    first = asyncio.create_task(handlers.stasis_start(CallInfo("ch1", "PJSIP/t-1", keys[0], "100", ("inbound",))))
    while handlers._in_flight == 0:
        await asyncio.sleep(0.001)
    # a genuine key, but the one admission slot is taken: turned away unverified, with congestion (SIP 503)
    await handlers.stasis_start(CallInfo("ch2", "PJSIP/t-2", keys[1], "100", ("inbound",)))
    assert channels.calls == [("hangup", "ch2", "congestion")]
    channels.release.set()
    await first
    assert ("continue", "ch1", "in-ok") in channels.calls  # the call in flight was admitted all the same
    await handlers.stasis_start(CallInfo("ch3", "PJSIP/t-3", keys[2], "100", ("inbound",)))
    assert ("continue", "ch3", "in-ok") in channels.calls  # the slot is free again
    assert not [c for c in channels.calls if c[1] == "ch2" and c[0] != "hangup"]
    text = metrics.exposition().decode()
    assert "securelink_overload_total 1.0" in text
    assert 'securelink_verdicts_total{direction="inbound",mode="ani",result="error"} 1.0' in text
    await svc.audit.drain()
    # no audit row of its own: one `verify.overload` row sums up each second of overload
    assert [e for e in await store.list_audit(action="verify") if e.call_id == "ch2"] == []
    handlers.flush_overload()
    await svc.audit.drain()
    [summary] = await store.list_audit(action="verify.overload")
    assert (summary.result, json.loads(summary.detail or "{}")) == ("error", {"reason": "overload", "calls": 1,
                                                                              "max_in_flight": 1})  # fmt: skip


async def test_agi_answers_carry_the_install_token_the_dialplan_checks(store: Store, tmp_path: Path) -> None:
    """M4: with `agi.result_token` every FastAGI answer carries it (the dialplan rejects an answer without it, so a
    process squatting the AGI port cannot admit a call); without one, answers carry none (the dialplan then
    rejects every AGI verdict: fail closed until `asterisk install` writes it)."""
    token = "t0k-" + "x" * 28
    cfg = config.build({"agi": {"result_token": token}}, {}, tmp_path)
    svc = make_service(cfg, store, clock_ms=lambda: T, device_sync_interval=0)
    d = await store.add_device("New", "15550001", None, "kid-n", "t")
    await svc.start()
    handlers = Handlers(cfg, svc, Channels(), Notifier())
    key = derive_key(device_secret(MASTER, d.key_id), Direction.INBOUND, T // 30_000, cfg.inbound_fmt)
    assert (await handlers.agi_verify(agi_env("u7", key), ["ani"]))["SECURELINK_AGI_TOKEN"] == token
    assert (await handlers.agi_register(agi_env("u7", ""), []))["SECURELINK_AGI_TOKEN"] == token
    plain = Handlers(config.build({}, {}, tmp_path), svc, Channels(), Notifier())
    assert "SECURELINK_AGI_TOKEN" not in await plain.agi_verify(agi_env("u8", key), ["ani"])
    with pytest.raises(config.ConfigError, match=r"agi\.result_token"):
        config.build({"agi": {"result_token": 'has "quotes" in it'}}, {}, tmp_path)
    await handlers.service.audit.drain()
