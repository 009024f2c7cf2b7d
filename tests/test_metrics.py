"""The metrics endpoint over real HTTP on loopback: counters move with real verifications, /health flips."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from support.clock import T
from support.fakes import Channels
from support.keys import MASTER
from support.services import make_service

from asterisk_securelink import config
from asterisk_securelink.audit import AuditWriter
from asterisk_securelink.config import ConfigError
from asterisk_securelink.core.slk1 import Direction, derive_key, device_secret
from asterisk_securelink.inbound.handlers import Handlers
from asterisk_securelink.metrics import Metrics, MetricsServer, parse_listen
from asterisk_securelink.notifier import Notifier
from asterisk_securelink.stasis import CallInfo
from asterisk_securelink.store.store import Store


@pytest.mark.parametrize(
    ("listen", "remote", "error"),
    [
        ("127.0.0.1:9466", False, None),
        ("[::1]:9466", False, None),
        ("localhost:9466", False, None),
        ("0.0.0.0:9466", False, "not a loopback address"),
        ("0.0.0.0:9466", True, None),
        ("9466", False, "host:port"),
        ("127.0.0.1:99999", False, "1..65535"),
        ("127.0.0.1:abc", False, "1..65535"),
    ],
)
def test_listen_addresses(listen: str, remote: bool, error: str | None, tmp_path: Path) -> None:
    raw = {"metrics": {"listen": listen, "allow_remote": remote}}
    if error is None:
        assert parse_listen(listen, remote)[1] == 9466
        assert config.build(raw, {}, tmp_path).metrics.listen == listen
    else:
        with pytest.raises(ConfigError, match=f"metrics.listen: .*{error}"):
            config.build(raw, {}, tmp_path)


@pytest.fixture
async def served(store: Store) -> AsyncIterator[tuple[Metrics, MetricsServer, str]]:
    metrics = Metrics(period=30)
    metrics.needs_ari = True
    server = MetricsServer(metrics, "127.0.0.1", 0, count_escrow=store.count_call_keys, pending_audit=lambda: 7)
    await server.start()
    while metrics.health()[1]["database"] is None:  # the poller's first count, which would race the tests' own
        await asyncio.sleep(0.01)
    yield metrics, server, f"http://127.0.0.1:{server.bound_port}"
    await server.close()


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.text()


def sample(text: str, name: str) -> float:
    """The value of one unlabelled sample in a Prometheus text exposition."""
    for line in text.splitlines():
        metric, _, value = line.rpartition(" ")
        if not line.startswith("#") and metric == name:
            return float(value)
    raise AssertionError(f"{name} not in the exposition")


async def test_real_verifications_move_the_counters(
    store: Store, tmp_path: Path, served: tuple[Metrics, MetricsServer, str]
) -> None:
    metrics, server, base = served
    cfg = config.build({}, {}, tmp_path)
    audit = AuditWriter(store.audit_many, on_database_state=metrics.database)
    svc = make_service(cfg, store, clock_ms=lambda: T, device_sync_interval=0, metrics=metrics, audit=audit)
    d = await store.add_device("A", "15550001", None, "kid-a", "t")
    d = await store.update_device(d.id, "device.register", "t", status="registered")
    await svc.start()
    handlers = Handlers(cfg, svc, Channels(), Notifier(metrics=metrics))
    key = derive_key(device_secret(MASTER, d.key_id), Direction.INBOUND, T // 30_000, cfg.inbound_fmt)
    for i, number in enumerate([key, key, "12345", "anonymous"]):
        await handlers.stasis_start(CallInfo(f"ch{i}", "PJSIP/x", number, "100", ("inbound", "ani")))
    await svc.audit.drain()
    await server.poll_once()
    status, text = await get(base + "/metrics")
    assert status == 200
    want = {"admitted": 1, "replayed": 1, "mismatch": 1, "anonymous": 1}
    for result, n in want.items():
        assert f'securelink_verdicts_total{{direction="inbound",mode="ani",result="{result}"}} {n}.0' in text
    assert sample(text, "securelink_admission_seconds_count") == 4.0
    assert sample(text, "securelink_index_devices") == 1.0
    assert sample(text, "securelink_escrow_rows") == 0.0
    assert sample(text, "securelink_audit_buffered") == 7.0
    # SLK1.md: log2(S / (W*D)), W = look_behind 1 + look_ahead 1 + 1 = 3, one device, 10^10 keys
    assert sample(text, "securelink_key_strength_bits") == pytest.approx(math.log2(10**10 / 3))
    assert key not in text  # never a key in the metrics


async def test_health_follows_ari_database_and_index(served: tuple[Metrics, MetricsServer, str]) -> None:
    metrics, _server, base = served
    status, _ = await get(base + "/health")
    assert status == 503  # no index yet, ARI not connected
    metrics.index_refreshed(0.01, 3)
    metrics.ari_state(True)
    metrics.database(True)
    status, text = await get(base + "/health")
    assert status == 200 and '"status": "ok"' in text
    metrics.ari_state(False)
    status, text = await get(base + "/health")
    assert status == 503 and "ARI not connected" in text
    metrics.ari_state(True)
    metrics.database(False)
    status, text = await get(base + "/health")
    assert status == 503 and "database not answering" in text
    metrics.database(True)
    _, text = await get(base + "/metrics")
    assert sample(text, "securelink_ari_reconnects_total") == 1.0  # connected, dropped, connected again
    assert sample(text, "securelink_ari_connected") == 1.0


async def test_escrow_count_failure_marks_the_database_unhealthy(store: Store) -> None:
    async def broken() -> int:
        raise ConnectionError("database gone")

    metrics = Metrics(period=30)
    metrics.index_refreshed(0.0, 0)
    server = MetricsServer(metrics, "127.0.0.1", 0, count_escrow=broken)
    await server.poll_once()
    healthy, body = metrics.health()
    assert not healthy and body["database"] is False
