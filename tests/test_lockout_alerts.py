"""The lockout's edges: its `[lockout]` settings, `doctor`'s budget line, the AMI `SecureLinkLockout` event and the
`securelink_lockouts_total` metric."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support.ami import FakeAmi, publisher_for

from asterisk_securelink import config
from asterisk_securelink.config import ConfigError
from asterisk_securelink.core.lockout import LockoutEvent
from asterisk_securelink.doctor import budget_check
from asterisk_securelink.metrics import Metrics
from asterisk_securelink.notifier import Notifier


def test_lockout_settings(tmp_path: Path) -> None:
    lo = config.build({}, {}, tmp_path).lockout
    assert (lo.enabled, lo.max_guess_probability, lo.max_total_guess_probability) == (True, 1e-6, 1e-5)
    env = {"SECURELINK_LOCKOUT_MAX_GUESS_PROBABILITY": "2.5e-7"}
    lo = config.build({"lockout": {"max_total_guess_probability": 1e-4}}, env, tmp_path).lockout
    assert (lo.max_guess_probability, lo.max_total_guess_probability) == (2.5e-7, 1e-4)
    assert config.build({"lockout": {"max_guess_probability": 1}}, {}, tmp_path).lockout.max_guess_probability == 1.0


@pytest.mark.parametrize(
    ("lockout", "message"),
    [
        ({"max_guess_probability": 0}, "must be > 0 and <= 1"),
        ({"max_guess_probability": 1.5}, "must be > 0 and <= 1"),
        ({"max_guess_probability": "often"}, "must be a number"),
        ({"max_guess_probability": float("nan")}, "must be a number"),
        ({"max_guess_probability": True}, "must be a number"),
        ({"max_total_guess_probability": 0}, "lockout.max_total_guess_probability: must be > 0 and <= 1"),
        ({"max_failures": 5}, "lockout.max_failures: removed: .*max_guess_probability"),
        ({"backoff": 30}, "lockout.backoff: removed"),
        ({"cooldown": 900}, "lockout.cooldown: removed"),
        ({"source_max_failures": 50}, "lockout.source_max_failures: removed: .*max_guess_probability"),
        ({"window": 300}, "lockout.window: removed"),
    ],
)
def test_lockout_settings_errors_say_what_to_do(tmp_path: Path, lockout: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.build({"lockout": lockout}, {}, tmp_path)


def test_the_config_skeleton_is_valid(tmp_path: Path) -> None:
    import tomllib

    data = tomllib.loads(config.SKELETON)
    built = config.build(data, {}, tmp_path)
    assert built.lockout == config.LockoutConfig()
    # H2 (issue 22): a new installation is two-factor; key alone (34 calls a day lock a trunk of 100 devices) is opt-in
    assert built.inbound.require_registered_number is True
    assert config.InboundConfig().require_registered_number is False  # an existing config keeps what it had


def test_doctor_prints_the_budget(tmp_path: Path) -> None:
    check = budget_check(config.build({}, {}, tmp_path), 100)
    # H2 (issue 22): the figure, how many failed calls a day lock key alone
    assert check.ok and "key alone is on" in check.detail
    assert "34 failed calls a day from one source (trunk), or 334 from every source together" in check.detail
    assert "each registered number may fail 3333 of them in any 24 h (~2^-19.9 per device a day)" in check.detail
    none_left = budget_check(config.build({}, {}, tmp_path), 5000)
    assert not none_left.passed and "every key-alone call is refused" in none_left.detail
    assert "two-factor" in none_left.fix
    two_factor = budget_check(config.build({"inbound": {"require_registered_number": True}}, {}, tmp_path), 5000)
    assert two_factor.warn  # key-alone routes are refused, two-factor calls are not
    off = budget_check(config.build({"lockout": {"enabled": False}}, {}, tmp_path), 5)
    assert off.warn and "not limited" in off.detail


async def test_publish_lockout_sends_one_sanitized_user_event(fake_ami: FakeAmi) -> None:
    async with publisher_for(fake_ami) as pub:
        assert await pub.wait_logged_in(2)
        assert await pub.publish_lockout("source", "PJSIP/carrier\r\nAction: Originate", "", 166, 166, 0)
        assert await pub.publish_lockout("caller", "", "12", 5, 5, 30)
    source, caller = [a for a in fake_ami.actions if a.get("userevent") == "SecureLinkLockout"]
    assert (source["kind"], source["source"], source["count"], source["limit"]) == (
        "source", "PJSIP/carrierAction: Originate", "166", "166"
    )  # fmt: skip
    assert (caller["kind"], caller["device"], caller["count"], caller["seconds"]) == ("caller", "12", "5", "30")
    assert sum(a.get("action") == "Originate" for a in fake_ami.actions) == 0


async def test_publish_lockout_never_raises_without_ami() -> None:
    from asterisk_securelink.asterisk.ami import AmiPublisher

    assert await AmiPublisher().publish_lockout("source", "PJSIP/x", "", 1, 1, 0) is False  # never started


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[object, ...]] = []

    async def publish_lockout(self, kind: str, source: str, device: str, count: int, limit: int, seconds: int) -> bool:
        self.sent.append((kind, source, device, count, limit, seconds))
        return True


async def test_alerts_count_and_publish_every_event() -> None:
    metrics, rec = Metrics(30), Recorder()
    notifier = Notifier(None, metrics, rec)  # type: ignore[arg-type] - only the lockout half of the publisher
    notifier.lockout(LockoutEvent("source", "PJSIP/carrier", None, 10, 10, 0))
    notifier.lockout(LockoutEvent("caller", None, 7, 5, 5, 30))
    await notifier.drain()
    await asyncio.sleep(0)
    assert rec.sent == [("source", "PJSIP/carrier", "", 10, 10, 0), ("caller", "", "7", 5, 5, 30)]
    text = metrics.exposition().decode()
    assert 'securelink_lockouts_total{kind="source"} 1.0' in text
    assert 'securelink_lockouts_total{kind="caller"} 1.0' in text
    Notifier().lockout(LockoutEvent("caller", None, 7, 5, 5, 30))  # neither configured: nothing to do
