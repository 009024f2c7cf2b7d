"""One notifier: everything the app tells the outside world goes out from here (wazo-calld's `notifier.py`).

Verdicts (inbound and outbound), lockouts, device API events and overload refusals are told to the `Notifier`; it
queues the audit row (`AuditWriter.record` never blocks), counts it in `/metrics` when metrics are on, and publishes
the AMI `UserEvent` in the background, in one task group the app drains when it stops. Nothing here waits for the
database or for AMI, and a failing sink is logged, never raised into a call.

| told            | audit row                       | /metrics                          | AMI UserEvent        |
|-----------------|---------------------------------|-----------------------------------|----------------------|
| `verdict`       | (the verifier's own, richer)    | securelink_verdicts_total         | SecureLinkVerdict    |
| `lockout`       | -                               | securelink_lockouts_total         | SecureLinkLockout    |
| `api_event`     | the event (`device.enroll`, ...)| voucher claims                    | SecureLinkVoucher    |
| `intent_raced`  | `intent.raced`                  | -                                 | SecureLinkIntentRaced|
| `overload`      | -                               | securelink_overload_total         | -                    |
| `admission`     | -                               | securelink_admission_seconds      | -                    |
| `record`        | the fields given                | -                                 | -                    |
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from asterisk_securelink.core.lockout import LockoutEvent
from asterisk_securelink.deviceapi.ports import ACTOR, ApiEvent
from asterisk_securelink.metrics import Metrics
from asterisk_securelink.store.store import audit_fields
from asterisk_securelink.tasks import BackgroundTasks

log = logging.getLogger(__name__)

DRAIN_SECONDS = 3.0  # how long `drain` waits for events still being published when the app stops

AuditSink = Callable[[dict[str, Any]], None]  # enqueues one audit row (`AuditWriter.record`); never blocks


class Publisher(Protocol):
    """Where the events go on AMI (implemented by `asterisk.ami.AmiPublisher`); each call never raises."""

    async def publish_verdict(
        self, result: str, device: str, direction: str, mode: str, channel: str, uniqueid: str
    ) -> bool: ...

    async def publish_lockout(
        self, kind: str, source: str, device: str, count: int, limit: int, seconds: int
    ) -> bool: ...

    async def publish_voucher(self, result: str, device: int | None, call_id: str | None, reason: str) -> bool: ...

    async def publish_intent_raced(self, device: int, intent_id: str, spent: str, racing: str) -> bool: ...


@dataclass(frozen=True)
class VerdictNote:
    """A verdict to count and publish: `direction` inbound | outbound; `mode` the method (ani, dnis, mobile, fork)."""

    verdict: str
    direction: str
    mode: str
    device_id: int | None
    channel: str
    uniqueid: str


class Notifier:
    """Fans events out to the audit writer, /metrics and AMI; each part is optional (off in the config)."""

    def __init__(
        self, audit: AuditSink | None = None, metrics: Metrics | None = None, publisher: Publisher | None = None
    ) -> None:
        self.metrics = metrics
        self.publisher = publisher
        self._audit = audit
        self._tasks = BackgroundTasks()

    def record(self, fields: dict[str, Any]) -> None:
        """Queue one audit row (`store.audit_fields`)."""
        if self._audit is None:
            return
        try:
            self._audit(fields)
        except Exception as exc:  # noqa: BLE001 - the sink is not supposed to raise; if it does, the call goes on
            log.warning("audit event not queued (%s)", type(exc).__name__)

    def verdict(self, note: VerdictNote, publish: bool = True) -> None:
        """Count it; `publish=False`: the dialplan publishes it (`[securelink-verdict]`, core/handoff.py)."""
        if self.metrics is not None:
            self.metrics.verdict(note.verdict, note.direction, note.mode)
        if publish:
            self.publish_only(note)

    def publish_only(self, note: VerdictNote) -> None:
        """`UserEvent: SecureLinkVerdict` (also for a verdict counted earlier that the dialplan will not publish)."""
        if self.publisher is not None:
            device = "" if note.device_id is None else str(note.device_id)
            self._spawn(self.publisher.publish_verdict(note.verdict, device, note.direction, note.mode, note.channel,
                                                       note.uniqueid))  # fmt: skip

    def admission(self, seconds: float) -> None:
        """How long one admission took, StasisStart to verdict applied."""
        if self.metrics is not None:
            self.metrics.admission.observe(seconds)

    def overload(self) -> None:
        if self.metrics is not None:
            self.metrics.overloads.inc()

    def lockout(self, event: LockoutEvent) -> None:
        if self.metrics is not None:
            self.metrics.lockout(event.kind)
        if self.publisher is not None:
            device = "" if event.device_id is None else str(event.device_id)
            self._spawn(
                self.publisher.publish_lockout(
                    event.kind, event.source or "", device, event.count, event.limit, event.seconds
                )
            )

    def intent_raced(self, device_id: int, intent_id: str, spent_channel: str, racing_channel: str) -> None:
        """An intent spent by one call while another call from its number came in (CALLING.md, "cancel on
        conflict"): the audit row (`intent.raced`) and AMI `UserEvent: SecureLinkIntentRaced` naming both channels."""
        detail = {"intent": intent_id, "spent_channel": spent_channel, "racing_channel": racing_channel}
        self.record(audit_fields("intent.raced", "cancelled", "asterisk", device_id=device_id, detail=detail))
        if self.publisher is not None:
            self._spawn(self.publisher.publish_intent_raced(device_id, intent_id, spent_channel, racing_channel))

    def api_event(self, event: ApiEvent) -> None:
        """A device API event: its audit row; a claim (`voucher.claim`) is also counted and published."""
        self.record(
            audit_fields(
                event.action,
                event.result,
                ACTOR,
                device_id=event.device_id,
                call_id=event.call_id,
                source=event.source,
                detail=dict(event.detail) or None,
            )
        )
        if event.action != "voucher.claim":
            return
        if self.metrics is not None:
            self.metrics.voucher_claim(event.result)
        if self.publisher is not None:
            reason = str(event.detail.get("reason", ""))
            self._spawn(self.publisher.publish_voucher(event.result, event.device_id, event.call_id, reason))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._tasks.spawn(coro)

    async def drain(self, timeout: float = DRAIN_SECONDS) -> None:  # noqa: ASYNC109 - a bounded wait at shutdown
        """Wait for the events still being published (bounded by the publisher's timeouts), then give up on them."""
        await self._tasks.drain(timeout)
