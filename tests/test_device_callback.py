"""The reference client's callback (CALLING.md, "Callback"): `securelink-device callback DEST` against a real
loopback TLS server with an in-memory directory and a fake Stasis app: the call_id, the confirmation by claiming
`{"call_id"}` once the PBX has made the voucher, refusals; `confirm` giving up after its window."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.api_server import SKEW_MS, Server, cli
from support.deviceapi_fakes import ACCESS, PARAMS, PARAMS_1_2, MemoryDirectory, self_signed

from asterisk_securelink.core.provisioning import Offer
from asterisk_securelink.core.slk1 import now_ms
from asterisk_securelink.device.callback_cli import confirm
from asterisk_securelink.deviceapi.codes import enrollment_uri
from asterisk_securelink.deviceapi.ports import CallbackOutcome, CallbackResult, IntentSettings
from asterisk_securelink.deviceapi.server import DeviceApi, DeviceApiServer
from asterisk_securelink.deviceapi.tls import server_context


@dataclass
class Pbx:
    """The Stasis app's side: places the call and, `ring_after` s later, makes its voucher (the phone rings)."""

    server: Server | None = None
    answer: CallbackOutcome = CallbackOutcome.PLACED
    ring_after: float | None = 0.8
    requests: list[tuple[int, str]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def request(self, device_id: int, destination: str, now_ms: int) -> CallbackResult:
        self.requests.append((device_id, destination))
        if self.answer is not CallbackOutcome.PLACED:
            return CallbackResult(self.answer, retry_after_s=9)
        if self.ring_after is not None:
            self.tasks.add(asyncio.create_task(self._ring("slk-cb-1")))
        return CallbackResult(CallbackOutcome.PLACED, "slk-cb-1")

    async def _ring(self, call_id: str) -> None:
        assert self.ring_after is not None and self.server is not None
        await asyncio.sleep(self.ring_after)
        self.server.voucher("+12677638475", call=call_id)


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[tuple[Server, Pbx]]:
    cert, key = self_signed(tmp_path)
    directory = MemoryDirectory(offer=Offer(PARAMS, PARAMS_1_2), intents=IntentSettings((ACCESS,), on=True))
    directory.add("dev-0001", 1)
    fake = Pbx()
    api = DeviceApi(directory, public_host="pending", clock=lambda: now_ms() + SKEW_MS, callbacks=fake)
    srv = DeviceApiServer(api, "127.0.0.1", 0, server_context(cert, key))
    await srv.start()
    api.public_host = f"127.0.0.1:{srv.bound_port}"
    server = Server(directory, f"https://{api.public_host}", cert, api)
    fake.server = server
    try:
        yield server, fake
    finally:
        await srv.close()


async def enrolled(server: Server, home: Path) -> None:
    code, _, err = await cli("enroll", enrollment_uri(server.url, server.code()), "--ca", str(server.ca), home=home)
    assert code == 0, err


async def test_callback_prints_the_call_id_then_confirms_by_claiming_it(pbx: tuple[Server, Pbx], tmp_path: Path
                                                                        ) -> None:  # fmt: skip
    server, fake = pbx
    await enrolled(server, tmp_path)
    code, out, err = await cli("callback", "2001", "--json", home=tmp_path)
    assert code == 0, err
    first, last = (json.loads(line) for line in out.splitlines())
    assert first == {"call_id": "slk-cb-1"}
    assert last == {"call_id": "slk-cb-1", "confirmed": True, "call_key_id": "ck-slk-cb-1"}
    assert fake.requests == [(1, "2001")]
    claims = [e for e in server.directory.events if e.action == "voucher.claim"]
    assert [e.result for e in claims][-1] == "released" and len(claims) >= 2  # 404 until the phone rang
    assert {e.detail.get("by") for e in claims} == {"call_id"}
    assert server.directory.vouchers[0].released


async def test_callback_refusals_are_told(pbx: tuple[Server, Pbx], tmp_path: Path) -> None:
    server, fake = pbx
    await enrolled(server, tmp_path)
    fake.answer = CallbackOutcome.BUSY
    code, out, err = await cli("callback", "2001", home=tmp_path)
    assert (code, out) == (1, "") and "already in progress" in err
    fake.answer = CallbackOutcome.RATE_LIMITED
    code, out, err = await cli("callback", "2001", home=tmp_path)
    assert (code, out) == (1, "") and "retry after 9 s" in err
    code, _, err = await cli("callback", "20#1", home=tmp_path)
    assert code == 2 and "DEST" in err
    assert len(fake.requests) == 2


async def test_confirm_gives_up_after_its_window(pbx: tuple[Server, Pbx]) -> None:
    server, _ = pbx
    async with server.client() as client:
        assert await confirm(client, "slk-cb-9", poll_s=0.05, window_s=0.3) is None
        server.voucher("+12677638475", call="slk-cb-9")
        key = await confirm(client, "slk-cb-9", poll_s=0.05, window_s=0.3)
    assert key is not None and key.call_id == "slk-cb-9"
    tries = [e for e in server.directory.events if e.action == "voucher.claim"]
    assert 4 <= len(tries) <= 9 and tries[-1].result == "released"
