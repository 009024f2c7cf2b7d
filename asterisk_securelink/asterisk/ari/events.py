"""ARI events: dataclasses for the events the app uses (`StasisStart`, `StasisEnd`, ...) and `parse_event`, which turns
any JSON value into an `Event` and never raises (unknown types stay a generic `Event` with the raw dict).

`as_mapping`, `as_str` and `as_int` read one JSON field without ever raising (missing or unusable: `{}`, `""`, 0);
the client uses them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def as_int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel snapshot as ARI sends it (events, `GET /channels`, originate)."""

    id: str
    name: str = ""
    state: str = ""
    caller_number: str = ""
    caller_name: str = ""
    connected_number: str = ""
    connected_name: str = ""
    context: str = ""
    exten: str = ""
    priority: int = 0
    app_name: str = ""  # dialplan application running now, e.g. "Stasis"
    app_data: str = ""  # its arguments, e.g. "securelink,inbound,ani"
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Channel:
        d = as_mapping(data)
        caller = as_mapping(d.get("caller"))
        connected = as_mapping(d.get("connected"))
        dialplan = as_mapping(d.get("dialplan"))
        return cls(
            id=as_str(d.get("id")),
            name=as_str(d.get("name")),
            state=as_str(d.get("state")),
            caller_number=as_str(caller.get("number")),
            caller_name=as_str(caller.get("name")),
            connected_number=as_str(connected.get("number")),
            connected_name=as_str(connected.get("name")),
            context=as_str(dialplan.get("context")),
            exten=as_str(dialplan.get("exten")),
            priority=as_int(dialplan.get("priority")),
            app_name=as_str(dialplan.get("app_name")),
            app_data=as_str(dialplan.get("app_data")),
            raw=d,
        )


_NO_CHANNEL = Channel(id="")


@dataclass(frozen=True, slots=True)
class Event:
    """Any ARI event; the types below add typed fields. `raw` is the JSON object as received."""

    type: str
    application: str = ""
    timestamp: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def channel_id(self) -> str | None:
        """The channel whose lane handles this event; None for non-channel events."""
        return None


@dataclass(frozen=True, slots=True)
class ChannelEvent(Event):
    """An event about one channel (also used for channel events without a model of their own)."""

    channel: Channel = _NO_CHANNEL

    @property
    def channel_id(self) -> str | None:
        return self.channel.id or None


@dataclass(frozen=True, slots=True)
class StasisStart(ChannelEvent):
    args: tuple[str, ...] = ()
    replace_channel: Channel | None = None  # set when the channel replaced another one (masquerade, transfer)


@dataclass(frozen=True, slots=True)
class StasisEnd(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True)
class ChannelDestroyed(ChannelEvent):
    cause: int = 0
    cause_txt: str = ""


@dataclass(frozen=True, slots=True)
class ChannelStateChange(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True)
class ChannelHangupRequest(ChannelEvent):
    cause: int = 0
    soft: bool = False


@dataclass(frozen=True, slots=True)
class ChannelDtmfReceived(ChannelEvent):
    digit: str = ""
    duration_ms: int = 0


@dataclass(frozen=True, slots=True)
class Dial(Event):
    """Dialing state of `peer` (the channel being dialed), which is also the lane it goes through."""

    peer: Channel = _NO_CHANNEL
    caller: Channel | None = None
    dialstatus: str = ""  # "" while in progress, then e.g. ANSWER, BUSY, NOANSWER, CANCEL
    dialstring: str = ""
    forward: str = ""

    @property
    def channel_id(self) -> str | None:
        return self.peer.id or None


@dataclass(frozen=True, slots=True)
class PlaybackFinished(Event):
    """A playback ended (done, stopped or failed); its lane is the channel it played on (`target_uri`
    `channel:<id>`)."""

    playback_id: str = ""
    target_uri: str = ""
    state: str = ""

    @property
    def channel_id(self) -> str | None:
        kind, _, target = self.target_uri.partition(":")
        return target or None if kind == "channel" else None


def parse_event(data: Any) -> Event:
    """Turn a decoded JSON event into a model. Never raises: odd input becomes a generic `Event`."""
    d = as_mapping(data)
    try:
        return _parse(d)
    except Exception:  # noqa: BLE001 - the reader must survive any input
        return Event(type=as_str(d.get("type")), raw=d)


def _parse(d: Mapping[str, Any]) -> Event:
    kind = as_str(d.get("type"))
    base: dict[str, Any] = {
        "type": kind,
        "application": as_str(d.get("application")),
        "timestamp": as_str(d.get("timestamp")),
        "raw": d,
    }
    if kind == "Dial":
        caller = d.get("caller")
        return Dial(
            **base,
            peer=Channel.from_json(d.get("peer")),
            caller=Channel.from_json(caller) if isinstance(caller, Mapping) else None,
            dialstatus=as_str(d.get("dialstatus")),
            dialstring=as_str(d.get("dialstring")),
            forward=as_str(d.get("forward")),
        )
    if kind == "PlaybackFinished":
        playback = as_mapping(d.get("playback"))
        return PlaybackFinished(
            **base,
            playback_id=as_str(playback.get("id")),
            target_uri=as_str(playback.get("target_uri")),
            state=as_str(playback.get("state")),
        )
    if not isinstance(d.get("channel"), Mapping):
        return Event(**base)
    chan = Channel.from_json(d["channel"])
    if kind == "StasisStart":
        args = d.get("args")
        replaced = d.get("replace_channel")
        return StasisStart(
            **base,
            channel=chan,
            args=tuple(as_str(a) for a in args) if isinstance(args, list) else (),
            replace_channel=Channel.from_json(replaced) if isinstance(replaced, Mapping) else None,
        )
    if kind == "StasisEnd":
        return StasisEnd(**base, channel=chan)
    if kind == "ChannelDestroyed":
        return ChannelDestroyed(
            **base, channel=chan, cause=as_int(d.get("cause")), cause_txt=as_str(d.get("cause_txt"))
        )
    if kind == "ChannelStateChange":
        return ChannelStateChange(**base, channel=chan)
    if kind == "ChannelHangupRequest":
        return ChannelHangupRequest(**base, channel=chan, cause=as_int(d.get("cause")), soft=d.get("soft") is True)
    if kind == "ChannelDtmfReceived":
        return ChannelDtmfReceived(
            **base, channel=chan, digit=as_str(d.get("digit")), duration_ms=as_int(d.get("duration_ms"))
        )
    return ChannelEvent(**base, channel=chan)
