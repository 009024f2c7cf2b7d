"""A thin Asterisk REST Interface (ARI) client on aiohttp, in five modules:

* `events` - the event model (`Channel`, `Event`, `StasisStart`, ...) and `parse_event`, which never raises.
* `dispatch` - the `Dispatcher`: one ordered lane per channel, different channels concurrently.
* `errors` - `AriError`, raised by the REST calls and the events WebSocket alike.
* `rest` - `AriRest`: the session and the REST calls (channels, bridges, channel variables).
* `client` - `AriClient`: `AriRest` plus the self-healing events WebSocket (reconnect with backoff).

Nothing here logs a password, an event's contents or a handler's exception text: caller numbers can be keys.
"""
