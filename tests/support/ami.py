"""AMI for the tests: a fake AMI peer on a loopback socket (unit tests of our publisher), and the one AMI monitor the
end-to-end tests watch the real Asterisk with (a second, independent session: plain panoramisk, not our publisher).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from panoramisk import Manager

from asterisk_securelink.asterisk.ami import AmiPublisher

VERDICT = "SecureLinkVerdict"
LOCKOUT = "SecureLinkLockout"
VOUCHER = "SecureLinkVoucher"


# ---- unit tests: a fake peer -----------------------------------------------------------------------------------
class FakeAmi:
    """Accepts a login (secret `good`), then acts on UserEvent per `mode`: ack | drop | silent."""

    def __init__(self, mode: str = "ack") -> None:
        self.mode = mode
        self.raw = b""
        self.actions: list[dict[str, str]] = []
        self.logins = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", port)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for w in self.writers:
            w.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        try:
            while True:
                block = await reader.readuntil(b"\r\n\r\n")
                self.raw += block
                action: dict[str, str] = {}
                for line in block.decode().split("\r\n"):
                    if ": " in line:
                        k, v = line.split(": ", 1)
                        action.setdefault(k.lower(), v)
                self.actions.append(action)
                aid = action.get("actionid", "")
                name = action.get("action", "").lower()
                if name == "login":
                    ok = action.get("secret") == "good"
                    self.logins += ok
                    status = "Success\r\nMessage: Authentication accepted" if ok else "Error\r\nMessage: Auth failed"
                    writer.write(f"Response: {status}\r\nActionID: {aid}\r\n\r\n".encode())
                    if not ok:
                        await writer.drain()
                        writer.close()
                        return
                elif name in ("userevent", "ping") and self.mode == "drop":
                    writer.close()
                    return
                elif name in ("userevent", "ping") and self.mode == "silent":
                    pass
                else:
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def publisher_for(fake: FakeAmi, secret: str = "good", **kw: Any) -> AmiPublisher:  # noqa: S107
    assert fake.server is not None
    port = fake.server.sockets[0].getsockname()[1]
    return AmiPublisher("127.0.0.1", port, "securelink", secret, reconnect_delay=1, **kw)


# ---- end-to-end tests: a monitor on the real Asterisk ----------------------------------------------------------
class AmiMonitor:
    """An independent AMI session recording events: the `UserEvent`s named `user_event`, or every event if None."""

    def __init__(self, host: str, port: int, username: str, secret: str, user_event: str | None = VERDICT) -> None:
        self.user_event = user_event
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.logged_in = asyncio.Event()
        self.manager = Manager(
            host=host,
            port=port,
            username=username,
            secret=secret,
            events="on",
            loop=asyncio.get_running_loop(),
            on_login=lambda m: self.logged_in.set(),
        )
        self.manager.register_event("*" if user_event is None else "UserEvent", self._record)

    def _record(self, manager: Any, event: Any) -> None:
        if self.user_event is None or event.get("UserEvent") == self.user_event:
            self.events.append(dict(event))
            self.changed.set()

    def results(self) -> list[str]:
        return [e.get("Result", "") for e in self.events]

    async def wait_for(self, match: Mapping[str, str], within: float = 10) -> dict[str, Any]:
        """The first recorded event with every header of `match`, waiting up to `within` seconds for it."""
        async with asyncio.timeout(within):
            while True:
                for ev in self.events:
                    if all(ev.get(k) == v for k, v in match.items()):
                        return ev
                self.changed.clear()
                await self.changed.wait()


@asynccontextmanager
async def monitoring(
    host: str, port: int, username: str, secret: str, user_event: str | None = VERDICT, login_within: float = 10
) -> AsyncIterator[AmiMonitor]:
    """An `AmiMonitor`, logged in, closed on the way out."""
    mon = AmiMonitor(host, port, username, secret, user_event)
    await mon.manager.connect()
    await asyncio.wait_for(mon.logged_in.wait(), login_within)
    try:
        yield mon
    finally:
        mon.manager.close()
