"""What a feature sees of a call in our Stasis app, and what it may do to it.

The Stasis app's handlers (inbound admission, outbound legs) are written against these small protocols, not against
the ARI client, so they can be tested with fakes and read without the protocol code.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from asterisk_securelink.asterisk.ari.events import Channel, StasisStart
from asterisk_securelink.core.ascii import ascii_lower
from asterisk_securelink.core.handoff import IN_VARIABLE, Handoff, check_dialled, fits
from asterisk_securelink.dialplan import HANDOFF_VAR, VERDICT_CONTEXT

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
        return ascii_lower(self.args[0].strip()) if self.args else None

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


class CanStopPlayback(Protocol):
    async def stop_playback(self, playback_id: str) -> bool: ...


async def stop_playback_quietly(channels: CanStopPlayback, playback_id: str) -> None:
    """Stop a prompt or tone that may have ended already; an ARI error is logged, never raised."""
    try:
        await channels.stop_playback(playback_id)
    except Exception as exc:  # noqa: BLE001 - a sound that cannot be stopped ends with the call
        log.debug("playback %s not stopped (%s)", playback_id, type(exc).__name__)


async def next_digit(digits: asyncio.Queue[str], gone: asyncio.Event, wait: float) -> str | None:
    """The next DTMF digit a channel's events put in `digits` within `wait` seconds; None when the time is up or
    `gone` is set first (the channel, or the call, ended)."""
    getter = asyncio.ensure_future(digits.get())
    ended = asyncio.ensure_future(gone.wait())
    try:
        done, _ = await asyncio.wait([getter, ended], timeout=wait, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended.cancel()
        if not getter.done():
            getter.cancel()
    return getter.result() if getter in done and not getter.cancelled() else None


async def hand_off(channels: ChannelControl, call: CallInfo, handoff: Handoff) -> int:
    """Hand a verdict to `[securelink-verdict]`: one `continue` whose extension is the hand-off, or, when it is too
    long for an extension, SECURELINK_HANDOFF then `continue` to `v`. Returns the ARI requests it took (1 or 2).
    ValueError (the caller fails closed) when the number the dialplan goes on with is not a number."""
    check_dialled(call.exten)
    channel_id = call.channel_id
    payload = handoff.encode()
    if fits(payload):
        await channels.continue_in_dialplan(channel_id, VERDICT_CONTEXT, payload, 1)
        return 1
    await channels.set_channel_var(channel_id, HANDOFF_VAR, payload)
    await channels.continue_in_dialplan(channel_id, VERDICT_CONTEXT, IN_VARIABLE, 1)
    return 2
