"""Hypothesis over the whole verifier with arbitrary input: it always answers with a verdict of the fixed set."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.services import make_service

from asterisk_securelink import config
from asterisk_securelink.core.verdicts import Mode, Verdict
from asterisk_securelink.inbound.service import VerificationService, VerifyRequest
from asterisk_securelink.store.migrations import upgrade
from asterisk_securelink.store.store import Store

hostile = st.one_of(
    st.none(),
    st.text(max_size=80),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    st.sampled_from(
        [
            "'; DROP TABLE devices; --",
            "%00",
            "\u202e1234567890",
            "".join(map(chr, range(0xFF10, 0xFF1A))),
            "+" * 30,
            "9" * 21,
        ]
    ),
    st.text(alphabet="0123456789+-() ", min_size=1, max_size=30),
)


def test_verify_never_raises_and_never_admits_garbage(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fuzz.sqlite3'}"
    asyncio.run(upgrade(url))

    async def setup() -> VerificationService:
        store = Store.from_url(url)
        await store.add_device("A", "15550001", None, "kid-a", "t")
        svc = make_service(config.build({}, {}, tmp_path), store, clock_ms=lambda: 1_790_000_000_000)
        await svc.start()
        return svc

    loop = asyncio.new_event_loop()
    svc = loop.run_until_complete(setup())
    allowed = set(Verdict)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(presented=hostile, caller=hostile, source=hostile, mode=st.sampled_from(list(Mode)))
    def check(presented: str | None, caller: str | None, source: str | None, mode: Mode) -> None:
        out = loop.run_until_complete(
            svc.verify(VerifyRequest(presented=presented, mode=mode, caller=caller, dialed=presented, source=source))
        )
        assert out.verdict in allowed
        assert out.verdict is not Verdict.ERROR  # hostile input is a verdict, never an internal failure
        assert out.verdict not in (Verdict.ADMITTED, Verdict.UNREGISTERED)  # nothing random gets in

    try:
        check()
    finally:
        loop.run_until_complete(svc.audit.drain())
        loop.run_until_complete(svc.store.close())
        loop.close()
