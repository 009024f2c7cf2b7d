"""ARI REST: `AriRest`, one aiohttp session (Basic auth in a header, never in a URL) and the calls the app makes on
channels, bridges and channel variables. `client.AriClient` adds the events WebSocket to it.

Errors are `AriError` (status 0 when no response arrived); nothing here logs a password or a response body.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping, Sequence
from typing import Any, Self
from urllib.parse import quote

import aiohttp
from yarl import URL

from asterisk_securelink.asterisk.ari import wire
from asterisk_securelink.asterisk.ari.errors import AriError, refusal_message
from asterisk_securelink.asterisk.ari.events import Channel, as_mapping, as_str

REQUEST_TIMEOUT = 10.0  # seconds for one REST call (and the WebSocket handshake)

ParamValue = str | int | float | bool | None


def _query(params: Mapping[str, ParamValue] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def _path(*segments: str) -> str:
    return "".join("/" + quote(segment, safe="") for segment in segments)


class AriRest:
    """ARI REST over one aiohttp session. Use as `async with AriRest(...) as ari:` or call `close()` at the end.

    `url` is the ARI base, e.g. ``http://127.0.0.1:8088/ari``; credentials go in `username`/`password` only.
    """

    def __init__(
        self, url: str, username: str, password: str, app: str, *, request_timeout: float = REQUEST_TIMEOUT
    ) -> None:
        base = URL(url)
        if base.user is not None or base.password is not None:
            raise ValueError("put the ARI credentials in username/password, not in the URL")
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError("the ARI URL must be http(s)://host[:port]/ari")
        self.url = str(base).rstrip("/")
        self.app = app
        self.request_timeout = request_timeout
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}"}
        self._session: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, app={self.app!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session; every later call raises `AriError`."""
        self._closing.set()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closing.is_set():
            raise AriError(0, "client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=self.request_timeout)
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, ParamValue] | None = None,
        json: Any = None,
    ) -> Any:
        """One REST call; `path` is below the ARI base (``/channels``). Returns decoded JSON, None for no body."""
        session = self._get_session()
        try:
            async with session.request(method, self.url + path, params=_query(params), json=json) as resp:
                body = await resp.read()
                status = resp.status
                content_type = resp.content_type
                reason = resp.reason or ""
        except TimeoutError:
            raise AriError(0, f"no answer within {self.request_timeout:g}s", method, path) from None
        except aiohttp.ClientError as exc:
            raise AriError(0, f"{type(exc).__name__}: {exc}", method, path) from None
        return decode_answer(status, content_type, body, reason, method, path)

    async def asterisk_info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", "/asterisk/info")
        return result

    async def list_applications(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/applications")
        return result

    async def get_application(self, name: str | None = None) -> dict[str, Any] | None:
        """The ARI application `name` (default: ours); None if Asterisk does not know it (no socket connected)."""
        try:
            result: dict[str, Any] = await self.request("GET", _path("applications", name or self.app))
        except AriError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def get_config_object(self, config_class: str, object_type: str, object_id: str) -> dict[str, str] | None:
        """`GET /asterisk/config/dynamic/...`: a sorcery object's fields (e.g. res_pjsip endpoint), None if absent."""
        try:
            tuples = await self.request(
                "GET", _path("asterisk", "config", "dynamic", config_class, object_type, object_id)
            )
        except AriError as exc:
            if exc.status == 404:
                return None
            raise
        return {as_str(t.get("attribute")): as_str(t.get("value")) for t in tuples or [] if isinstance(t, Mapping)}

    async def subscribe_channel(self, channel_id: str) -> None:
        """Our app keeps receiving the channel's events (its hang-up) after it leaves Stasis."""
        await self.request(
            "POST", _path("applications", self.app, "subscription"), params={"eventSource": f"channel:{channel_id}"}
        )

    async def get_channels(self) -> list[Channel]:
        data = await self.request("GET", "/channels")
        return [Channel.from_json(c) for c in data] if isinstance(data, list) else []

    async def get_channel(self, channel_id: str) -> Channel | None:
        try:
            data = await self.request("GET", _path("channels", channel_id))
        except AriError as exc:
            if exc.status == 404:
                return None
            raise
        return Channel.from_json(data)

    async def get_channel_var(self, channel_id: str, name: str) -> str:
        data = await self.request("GET", _path("channels", channel_id, "variable"), params={"variable": name})
        return as_str(as_mapping(data).get("value"))

    async def set_channel_var(self, channel_id: str, name: str, value: str) -> None:
        await self.request("POST", _path("channels", channel_id, "variable"), params={"variable": name, "value": value})

    async def continue_in_dialplan(
        self,
        channel_id: str,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        label: str | None = None,
    ) -> None:
        """Leave Stasis: back to the dialplan after the Stasis() line, or to the given place."""
        params = {"context": context, "extension": extension, "priority": priority, "label": label}
        await self.request("POST", _path("channels", channel_id, "continue"), params=params)

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
        """Hang up with an ARI reason (normal, busy, rejected, answered_elsewhere, ...). False if already gone."""
        try:
            await self.request("DELETE", _path("channels", channel_id), params={"reason": reason})
        except AriError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def answer(self, channel_id: str) -> None:
        await self.request("POST", _path("channels", channel_id, "answer"))

    async def ring(self, channel_id: str) -> None:
        await self.request("POST", _path("channels", channel_id, "ring"))

    async def play(self, channel_id: str, media: str, playback_id: str) -> None:
        """Start playing `media` (e.g. `sound:beep`) on the channel; `PlaybackFinished` names `playback_id`."""
        params = {"media": media, "playbackId": playback_id}
        await self.request("POST", _path("channels", channel_id, "play"), params=params)

    async def stop_playback(self, playback_id: str) -> bool:
        """Stop a playback; False when it already finished (404)."""
        try:
            await self.request("DELETE", _path("playbacks", playback_id))
        except AriError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def originate(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: str | Sequence[str] | None = None,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        label: str | None = None,
        caller_id: str | None = None,
        timeout: int | None = None,  # noqa: ASYNC109 - ARI's ring timeout (seconds), not an operation timeout
        variables: Mapping[str, str] | None = None,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        originator: str | None = None,
        formats: str | None = None,
    ) -> Channel:
        """`POST /channels`: call `endpoint` into a Stasis app (`app`, `app_args`) or a dialplan location."""
        dial: dict[str, ParamValue] = {
            "context": context,
            "extension": extension,
            "priority": priority,
            "label": label,
            "callerId": caller_id,
            "timeout": timeout,
        }
        return await self._post_channel(
            "/channels",
            endpoint,
            app=app,
            app_args=app_args,
            dial=dial,
            variables=variables,
            channel_id=channel_id,
            other_channel_id=other_channel_id,
            originator=originator,
            formats=formats,
        )

    async def create_channel(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: str | Sequence[str] | None = None,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        originator: str | None = None,
        formats: str | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """`POST /channels/create`: a channel in Stasis app `app` (default: ours) that is not dialed yet."""
        return await self._post_channel(
            "/channels/create",
            endpoint,
            app=app or self.app,
            app_args=app_args,
            dial={},
            variables=variables,
            channel_id=channel_id,
            other_channel_id=other_channel_id,
            originator=originator,
            formats=formats,
        )

    async def _post_channel(
        self,
        path: str,
        endpoint: str,
        *,
        app: str | None,
        app_args: str | Sequence[str] | None,
        dial: Mapping[str, ParamValue],
        variables: Mapping[str, str] | None,
        channel_id: str | None,
        other_channel_id: str | None,
        originator: str | None,
        formats: str | None,
    ) -> Channel:
        """What `originate` and `create_channel` share: the parameters both take (plus originate's `dial` ones, by
        their ARI names), channel variables in the body, the new channel as the answer."""
        args = app_args if isinstance(app_args, str) or app_args is None else ",".join(app_args)
        params: dict[str, ParamValue] = {"endpoint": endpoint, "app": app, "appArgs": args, **dial}
        params.update(channelId=channel_id, otherChannelId=other_channel_id, originator=originator, formats=formats)
        body = {"variables": dict(variables)} if variables else None
        return Channel.from_json(await self.request("POST", path, params=params, json=body))

    async def create_bridge(
        self, type: str = "mixing", *, bridge_id: str | None = None, name: str | None = None
    ) -> str:
        """Create a bridge (`type`: comma list such as "mixing" or "mixing,dtmf_events"); returns its id."""
        data = await self.request("POST", "/bridges", params={"type": type, "bridgeId": bridge_id, "name": name})
        return as_str(as_mapping(data).get("id"))

    async def add_channel_to_bridge(
        self,
        bridge_id: str,
        channel_ids: str | Sequence[str],
        *,
        role: str | None = None,
        absorb_dtmf: bool | None = None,
        mute: bool | None = None,
        inhibit_connected_line_updates: bool | None = None,
    ) -> None:
        channels = channel_ids if isinstance(channel_ids, str) else ",".join(channel_ids)
        params: dict[str, ParamValue] = {
            "channel": channels,
            "role": role,
            "absorbDTMF": absorb_dtmf,
            "mute": mute,
            "inhibitConnectedLineUpdates": inhibit_connected_line_updates,
        }
        await self.request("POST", _path("bridges", bridge_id, "addChannel"), params=params)

    async def destroy_bridge(self, bridge_id: str) -> bool:
        """Destroy a bridge; False if it was already gone."""
        try:
            await self.request("DELETE", _path("bridges", bridge_id))
        except AriError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def decode_answer(status: int, content_type: str, body: bytes | str, reason: str, method: str, path: str) -> Any:
    """An ARI answer (over HTTP or the WebSocket): the decoded JSON body, or `AriError` for a status >= 400."""
    decoded: Any = None
    if body:
        if content_type == "application/json":
            try:
                decoded = _json_loads(body)
            except ValueError:
                decoded = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        else:
            decoded = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if status >= 400:
        if isinstance(decoded, Mapping) and isinstance(decoded.get("message"), str):
            message = decoded["message"]
        elif status == 401:
            message = refusal_message(401)
        elif isinstance(decoded, str) and decoded.strip():
            message = decoded.strip()[:200]
        else:
            message = reason
        raise AriError(status, message, method, path)
    return decoded


def _json_loads(data: str | bytes) -> Any:
    return wire.loads(data)  # module-level: `request()` has a parameter named `json`
