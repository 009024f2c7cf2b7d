"""The end of a handed-over call, from the dialplan over AMI (issue 24): `[securelink-end]`, the hangup handler the
hand-off pushes, emits `UserEvent: SecureLinkCallEnd`; the app's AMI connection (event mask `user`, a session filter
for that event alone) passes it to `calling.onward.Onward.ended`. This is what lets an admitted call leave Stasis in
one ARI request: no subscription to the channel, no stream of its dialplan events.

While the connection is down `live` is False and the onward path subscribes over ARI instead (one request more);
an end missed across a reconnect is found by the periodic reconcile (`GET /channels`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from asterisk_securelink.asterisk.ami import AmiPublisher
from asterisk_securelink.dialplan import END_EVENT
from asterisk_securelink.tasks import BackgroundTasks

log = logging.getLogger(__name__)

EVENT_MASK = "user"  # UserEvent is in the `user` class (manager.conf `read = ... user`)
OnEnd = Callable[[str, str, datetime | None], Awaitable[bool]]

# Q.850 causes an admitted call usually ends with, as ARI's `cause_txt` names them (the record's hangup_cause)
CAUSES = {
    "16": "Normal Clearing", "17": "User busy", "18": "No user responding", "19": "User alerting, no answer",
    "21": "Call Rejected", "34": "Circuit/channel congestion", "0": "Unknown",
}  # fmt: skip


def end_of(event: Any) -> tuple[str, str, datetime | None] | None:
    """(channel id, cause, answered at) of a `SecureLinkCallEnd` event; None for any other event."""
    if event.get("UserEvent") != END_EVENT:
        return None
    uniqueid = str(event.get("Uniqueid") or "")
    if not uniqueid:
        return None
    cause = str(event.get("Cause") or "")
    answered: datetime | None = None
    try:
        epoch = float(str(event.get("Answered") or "0"))
        if epoch > 0:
            answered = datetime.fromtimestamp(epoch, UTC)
    except ValueError:
        answered = None
    return uniqueid, CAUSES.get(cause, cause), answered


class CallEnds:
    def __init__(self, publisher: AmiPublisher, on_end: OnEnd) -> None:
        self.publisher = publisher
        self.on_end = on_end
        self._filtered = False
        self._registered = False
        self._tasks = BackgroundTasks()
        publisher.on_login.append(self._logged_in)
        if publisher.logged_in:  # built after the login: the hook above only sees the next one
            self._logged_in()

    @property
    def live(self) -> bool:
        """True when a call's end will reach us by AMI."""
        return self.publisher.logged_in and self.publisher.manager is not None and self._filtered

    def _logged_in(self) -> None:
        self._filtered = False
        manager = self.publisher.manager
        if manager is None:
            return
        if not self._registered:
            manager.register_event("UserEvent", self._event)
            self._registered = True
        self._tasks.spawn(self._filter(), name="ami-end-filter")

    async def _filter(self) -> None:
        """Only our end events on this session (the Filter action needs `write = system`; without it every user
        event arrives and the others are dropped here)."""
        try:
            only_ends = {"Action": "Filter", "Operation": "Add", "Filter": f"UserEvent: {END_EVENT}"}
            resp = await self.publisher.send_action(only_ends)
            if not getattr(resp, "success", False):
                log.warning("AMI: the Filter action was refused (manager.conf `write = system`?); reading every user "
                            "event")  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - unfiltered still works, only costs more
            log.warning("AMI: no event filter for %s (%s); reading every user event", END_EVENT, type(exc).__name__)
        self._filtered = True

    def _event(self, _manager: Any, event: Any) -> None:
        end = end_of(event)
        if end is not None:
            self._tasks.spawn(self._deliver(*end), name="ami-end")

    async def _deliver(self, channel_id: str, cause: str, answered: datetime | None) -> None:
        try:
            await self.on_end(channel_id, cause, answered)
        except Exception as exc:  # noqa: BLE001 - one call's bookkeeping must not stop the listener
            log.error("call end of %s not handled (%s)", channel_id, type(exc).__name__)

    async def close(self, grace: float = 3.0) -> None:
        await self._tasks.drain(grace)
        await asyncio.sleep(0)
