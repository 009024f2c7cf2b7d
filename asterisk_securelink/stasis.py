"""What a feature sees of a call in our Stasis app, and what it may do to it.

The Stasis app's handlers (inbound admission, outbound legs) are written against these small protocols, not against
the ARI client, so they can be tested with fakes and read without the protocol code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from asterisk_securelink.asterisk.ari.events import Channel, StasisStart

log = logging.getLogger(__name__)


class CanHangUp(Protocol):
    async def hangup(self, channel_id: str, reason: str = "normal") -> bool: ...


class ChannelControl(Protocol):
    """What the handlers need from ARI (implemented by `asterisk.ari.client.AriClient`)."""

    async def set_channel_var(self, channel_id: str, name: str, value: str) -> None: ...

    async def continue_in_dialplan(
        self,
        channel_id: str,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
    ) -> None: ...

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool: ...


@dataclass(frozen=True)
class CallInfo:
    """The parts of a channel the handlers use (from a StasisStart event or `GET /channels`)."""

    channel_id: str
    name: str
    caller: str | None
    exten: str | None
    args: tuple[str, ...] = ()

    @property
    def kind(self) -> str | None:
        """The first Stasis argument (the feature: inbound, register, mobile, fork, leg), trimmed and lower-cased;
        None when there is no argument."""
        return self.args[0].strip().lower() if self.args else None

    def arg(self, index: int) -> str | None:
        """The Stasis argument at `index`, as given; None when there are fewer."""
        return self.args[index] if len(self.args) > index else None


def call_info(event: StasisStart) -> CallInfo:
    ch = event.channel
    return CallInfo(ch.id, ch.name, ch.caller_number, ch.exten, tuple(event.args))


def waiting_call(ch: Channel, app: str) -> CallInfo | None:
    """A channel sitting in our Stasis app (seen by `GET /channels` after a reconnect), as a call to handle."""
    if ch.app_name != "Stasis" or not (ch.app_data == app or ch.app_data.startswith(app + ",")):
        return None
    return CallInfo(ch.id, ch.name, ch.caller_number, ch.exten, tuple(ch.app_data.split(",")[1:]))


async def hangup_quietly(channels: CanHangUp, channel_id: str, reason: str) -> None:
    """Hang up a channel that may already be gone; an ARI error is logged, never raised."""
    try:
        await channels.hangup(channel_id, reason)
    except Exception as exc:  # noqa: BLE001 - already gone, ARI hiccup
        log.warning("could not hang up channel %s (%s)", channel_id, type(exc).__name__)
