"""Fakes shared by the unit tests (the real things are in tests/e2e/):

* `Channels` - records what the Stasis handlers do to channels (`stasis.ChannelControl`).
* `RecordingAri` - records what the outbound controller asks of ARI (`outbound.controller.OutboundChannels`).
* `FakeAriServer` - an in-process ARI *server* (aiohttp) for `asterisk.ari.client.AriClient`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from asterisk_securelink.asterisk.ari.events import Channel
from asterisk_securelink.core.handoff import IN_VARIABLE, Handoff, decode
from asterisk_securelink.dialplan import HANDOFF_VAR, VERDICT_CONTEXT


class Channels:
    """Records what the handlers do to channels (`stasis.ChannelControl`); `fail_on` makes that operation raise."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail_on = fail_on
        self.handoffs: dict[str, Handoff] = {}  # channel -> the verdict handed to [securelink-verdict]

    def _do(self, *call: str) -> None:
        if call[0] == self.fail_on:
            raise ConnectionError(f"ARI {call[0]} failed")
        self.calls.append(call)

    async def set_channel_var(self, channel_id: str, name: str, value: str) -> None:
        self._do("var", channel_id, name, value)

    async def continue_in_dialplan(
        self, channel_id: str, context: str | None = None, extension: str | None = None, priority: int | None = None
    ) -> None:
        self._do("continue", channel_id, context or "")
        if context == VERDICT_CONTEXT and extension is not None:
            payload = self._var(channel_id, HANDOFF_VAR) if extension == IN_VARIABLE else extension
            self.handoffs[channel_id] = decode(payload or "")

    def _var(self, channel_id: str, name: str) -> str | None:
        found = [c[3] for c in self.calls if c[:3] == ("var", channel_id, name)]
        return found[-1] if found else None

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
        self._do("hangup", channel_id, reason)
        return True


class RecordingAri:
    """Records the outbound controller's ARI calls in `calls` (`of(kind)` filters them); originating an endpoint in
    `fail_originate` raises, bridges are b1, b2, ..."""

    def __init__(self, fail_originate: Sequence[str] = ()) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail_originate = set(fail_originate)
        self.bridges = 0

    async def originate(self, endpoint: str, **kw: Any) -> Channel:
        self.calls.append(("originate", endpoint, kw))
        if endpoint in self.fail_originate:
            raise RuntimeError("refused")
        return Channel(kw["channel_id"])

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
        self.calls.append(("hangup", channel_id, reason))
        return True

    async def answer(self, channel_id: str) -> None:
        self.calls.append(("answer", channel_id))

    async def ring(self, channel_id: str) -> None:
        self.calls.append(("ring", channel_id))

    async def set_channel_var(self, channel_id: str, name: str, value: str) -> None:
        self.calls.append(("var", channel_id, name, value))

    async def create_bridge(
        self, type: str = "mixing", *, bridge_id: str | None = None, name: str | None = None
    ) -> str:
        self.bridges += 1
        self.calls.append(("bridge", type))
        return f"b{self.bridges}"

    async def add_channel_to_bridge(self, bridge_id: str, channel_ids: Any, **kw: Any) -> None:
        self.calls.append(("add", bridge_id, tuple(channel_ids), kw))

    async def destroy_bridge(self, bridge_id: str) -> bool:
        self.calls.append(("destroy", bridge_id))
        return True

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == kind]


class FakeAriServer:
    """Just enough ARI: Basic auth (securelink / pw-123), the /events WebSocket (sends what `send` gets, closes on
    demand) and a few REST routes; channels are snapshots of `channel` (ARI JSON). Serve `app` with aiohttp."""

    def __init__(self, channel: Mapping[str, Any]) -> None:
        self.channel = dict(channel)
        self.auth = "Basic " + base64.b64encode(b"securelink:pw-123").decode()
        self.sockets: list[web.WebSocketResponse] = []
        self.connects = 0
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        app = web.Application()
        app.router.add_get("/ari/events", self.events)
        app.router.add_route("*", "/ari/{tail:.*}", self.rest)
        self.app = app

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == self.auth

    async def events(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"message": "Authentication required"}, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connects += 1
        self.sockets.append(ws)
        async for _ in ws:
            pass
        return ws

    async def rest(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"message": "Authentication required"}, status=401)
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, dict(request.query), body))
        tail = request.match_info["tail"]
        if tail in ("channels", "channels/create") and request.method == "POST":
            return web.json_response({**self.channel, "id": request.query.get("channelId", "new.1")})
        if tail == "channels":
            return web.json_response([self.channel])
        if tail.startswith("channels/gone"):
            return web.json_response({"message": "Channel not found"}, status=404)
        if tail.endswith("/variable") and request.method == "GET":
            return web.json_response({"value": "v-" + request.query["variable"]})
        if tail == "bridges":
            return web.json_response({"id": "br-1", "bridge_type": "mixing"})
        return web.Response(status=204)

    async def send(self, data: dict[str, Any]) -> None:
        await self.sockets[-1].send_json(data)
