"""Issue 22, M4: whatever listens on the FastAGI port while `securelink agi` is down cannot admit a call. The testbed's
`2XX` route runs `[securelink-inbound-agi]` (`AGI(agi://127.0.0.1:4573/verify,ani)`); here an impostor holds that
port and answers "admitted" with every variable the dialplan reads. Without the install's `agi.result_token` the
call is rejected (403); the same answer with the token is put through (200), so the token is what decides. The real
`securelink agi`, which knows the token, admits keyed calls in `test_inbound.py` / `test_ami_agi.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping

import pytest
from harness import AGI_PORT, AGI_TOKEN, Home, new_home, start_app, stop_app
from sipp import run_uac

from asterisk_securelink.asterisk.agi import FastAgiServer

ADMITTED = {
    "SECURELINK_RESULT": "admitted",
    "SECURELINK_DEVICE": "1",
    "SECURELINK_METHOD": "ani",
    "SECURELINK_CONTEXT": "testbed-routed",
    "SECURELINK_CALLERID": "<1000>",
    "SECURELINK_HOME": "answer",
}


@pytest.fixture(scope="module")
def stasis_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """`securelink run` without `securelink agi`: the AGI port is free for the impostor."""
    home = new_home(tmp_path_factory.mktemp("impostor"))
    run, _ = start_app(home, agi=False)
    yield home
    stop_app(home, run)


async def call_with_impostor(answer: Mapping[str, str]) -> int | None:
    async def impostor(env: Mapping[str, str], args: list[str]) -> Mapping[str, str]:
        return answer

    server = FastAgiServer(impostor)
    await server.serve("127.0.0.1", AGI_PORT)
    try:
        [result] = await asyncio.to_thread(run_uac, [("15559990001", "200")], timeout=30)
    finally:
        await server.stop()
    return result.status_code


async def test_an_impostor_on_the_agi_port_cannot_admit(stasis_only: Home) -> None:
    assert await call_with_impostor(ADMITTED) == 403


async def test_the_token_is_what_the_dialplan_believes(stasis_only: Home) -> None:
    assert await call_with_impostor({**ADMITTED, "SECURELINK_AGI_TOKEN": AGI_TOKEN}) == 200
