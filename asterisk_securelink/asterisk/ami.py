"""AMI client: publishes `UserEvent: SecureLinkVerdict` and `SecureLinkLockout` (panoramisk 1.4, defects guarded).

A missing or stuck AMI must never hold up call handling, so nothing here raises into call handling or waits
unbounded:

* every action is bounded by a timeout (panoramisk 1.4 leaves an action whose responses are cut by a disconnect
  pending forever: `AMIProtocol.close()` re-queues it for a `FullyBooted` that may never come, or drops it when a
  first response was already in). On timeout the future is cancelled, so panoramisk does not re-send it later,
  and it is removed from panoramisk's bookkeeping;
* header values are sanitized to printable ASCII without CR/LF and capped in length: a caller number can contain
  anything, and panoramisk writes `Key: value` lines verbatim, so a CR/LF in a value would inject AMI headers or
  whole actions;
* inbound bytes are decoded with an incremental UTF-8 decoder before panoramisk sees them (panoramisk decodes
  each TCP read on its own with errors="ignore", so a multi-byte character split across reads is lost);
* reconnects: panoramisk reconnects after a lost connection (every `reconnect_delay` s) but not after a
  connect error other than OSError, not when a login is never answered, and it keeps reconnecting after `close()`
  when a retry was already scheduled. `_GuardedManager` covers these.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol

from asterisk_securelink.config import AmiConfig
from asterisk_securelink.errors import ProtocolError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0  # seconds, every action
DEFAULT_LOGIN_TIMEOUT = 5.0  # seconds from TCP connect to a login answer, else reconnect
DEFAULT_RECONNECT_DELAY = 2  # seconds (panoramisk takes an int)
MAX_VALUE_LENGTH = 256  # characters per header value (Asterisk reads AMI lines into a 1 KiB buffer)
VERDICT_EVENT = "SecureLinkVerdict"
VOUCHER_EVENT = "SecureLinkVoucher"
INTENT_RACED_EVENT = "SecureLinkIntentRaced"
LOCKOUT_EVENT = "SecureLinkLockout"

_HEADER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # CR, LF, NUL, TAB, DEL, C1 controls: dropped
_NON_ASCII = re.compile(r"[^\x20-\x7e]")  # anything else outside printable ASCII: '?'

HeaderValue = str | int | None
ActionDict = Mapping[str, HeaderValue | Sequence[HeaderValue]]


class AmiError(ProtocolError):
    """An AMI action could not be sent or was not answered."""


class AmiNotConnected(AmiError):
    """No logged-in AMI connection."""


class AmiTimeout(AmiError):
    """The action was not answered within its timeout (includes a connection lost mid-action)."""


# ---- sanitizing ----------------------------------------------------------------------------------------------
def sanitize_value(value: object, max_length: int = MAX_VALUE_LENGTH) -> str:
    """A header value safe to write as one AMI line: printable ASCII only, no CR/LF, at most `max_length` chars.

    Control characters (CR, LF, NUL, TAB, ...) are removed; other non-ASCII characters become '?'; leading and
    trailing blanks are stripped (Asterisk strips them too). None is the empty string.
    """
    if value is None:
        return ""
    text = _CONTROL.sub("", str(value))
    text = _NON_ASCII.sub("?", text)
    return text.strip()[:max_length].rstrip()


def check_header_name(name: str) -> str:
    """Header names come from our code, never from a caller: anything unusual is a bug (ValueError)."""
    if not _HEADER_NAME.match(name):
        raise ValueError(f"invalid AMI header name {name[:40]!r}")
    return name


def sanitize_action(action: ActionDict, max_length: int = MAX_VALUE_LENGTH) -> dict[str, str | list[str]]:
    """Validated names, sanitized values; a list value becomes repeated headers (e.g. Originate `Variable`)."""
    out: dict[str, str | list[str]] = {}
    for name, value in action.items():
        check_header_name(name)
        if isinstance(value, str | int) or value is None:
            out[name] = sanitize_value(value, max_length)
        else:
            out[name] = [sanitize_value(v, max_length) for v in value]
    if not isinstance(out.get("Action"), str) or not out["Action"]:
        raise ValueError("an AMI action needs an 'Action' header")
    return out


# ---- panoramisk guards ---------------------------------------------------------------------------------------
class _GuardedProtocol(AMIProtocol):  # type: ignore[misc]
    """Decodes the stream incrementally, so a UTF-8 character split across TCP reads survives."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.encoding = "utf-8"
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def data_received(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            # only whole characters go on: panoramisk's own per-read decode then loses nothing
            super().data_received(text.encode("utf-8"))


class _GuardedManager(Manager):  # type: ignore[misc]
    """panoramisk's Manager with reconnect and login holes closed; reports login results to `on_result`."""

    def __init__(self, on_result: Callable[[bool, str], None], login_timeout: float, **config: Any) -> None:
        super().__init__(**config)
        self.closing = False
        self._on_result = on_result
        self._login_timeout = login_timeout
        self._watchdog: asyncio.TimerHandle | None = None

    def connect(self, run_forever: bool = False, on_startup: Any = None, on_shutdown: Any = None) -> Any:
        if self.closing:
            return None
        return super().connect()

    def connection_made(self, f: asyncio.Future[Any]) -> None:
        if f.cancelled():
            return
        exc = f.exception()
        if self.closing:
            if exc is None:
                f.result()[0].close()
            return
        if exc is not None:
            self._on_result(False, f"cannot connect to AMI at {self.config['host']}:{self.config['port']}: {exc}")
            if not isinstance(exc, OSError):  # panoramisk only retries after OSError
                self.log.warning("AMI connect failed (%s); retrying in %ss", type(exc).__name__, self.reconnect_timeout)
                self.loop.call_later(self.reconnect_timeout, self.connect)
                return
        super().connection_made(f)
        if exc is None:
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._watchdog = self.loop.call_later(self._login_timeout, self._login_watchdog, self.protocol)

    def _login_watchdog(self, protocol: Any) -> None:
        self._watchdog = None
        if protocol is self.protocol and not self.authenticated and not protocol.closed and not self.closing:
            self._on_result(False, f"AMI login not answered within {self._login_timeout:g}s")
            self.log.warning("AMI login not answered; reconnecting")
            protocol.transport.abort()  # -> protocol.connection_lost -> reconnect (protocol.close() would not)

    def login(self, future: asyncio.Future[Any]) -> bool:
        if future.cancelled() or future.exception() is not None:
            self.authenticated_future = None
            self.authenticated = False
            self._on_result(False, "AMI login interrupted")
            return False
        ok = bool(super().login(future))
        if not ok:
            message = sanitize_value(future.result().get("Message", ""), 80)
            self._on_result(False, f"AMI login refused: {message or 'no reason given'}")
        return ok

    def ping(self) -> None:
        protocol = getattr(self, "protocol", None)
        if protocol is None or protocol.closed or self.closing:
            return
        super().ping()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closing:
            self._connected = False
            return
        super().connection_lost(exc)

    def shutdown(self) -> None:
        self.closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.close()


# ---- the publisher -------------------------------------------------------------------------------------------
class AmiPublisher:
    """One long-lived AMI connection: login, reconnect, bounded actions, `SecureLinkVerdict` user events.

    `start()` only begins connecting (it never waits for Asterisk); until the login succeeds every action fails
    fast with AmiNotConnected, and `publish_verdict` returns False.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5038,
        username: str = "securelink",
        secret: str = "",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        login_timeout: float = DEFAULT_LOGIN_TIMEOUT,
        reconnect_delay: int = DEFAULT_RECONNECT_DELAY,
        ping_interval: int = 10,
        events: bool | str = False,
    ) -> None:
        """`events`: False (none), True (all) or an AMI event mask such as `"user"`."""
        self.host = host
        self.port = int(port)
        self.username = username
        self._secret = secret
        self.timeout = timeout
        self.login_timeout = login_timeout
        self.reconnect_delay = max(1, int(reconnect_delay))
        self.ping_interval = max(1, int(ping_interval))
        self.events = events
        self.on_login: list[Callable[[], object]] = []  # called after each login (e.g. a session's event filter)
        self.last_error = ""
        self._manager: _GuardedManager | None = None
        self._login_waiters: set[asyncio.Future[bool]] = set()

    @classmethod
    def from_config(cls, cfg: AmiConfig, **kwargs: Any) -> AmiPublisher:
        return cls(cfg.host, cfg.port, cfg.username, cfg.secret, **kwargs)

    def __repr__(self) -> str:  # never the secret
        return f"AmiPublisher({self.username}@{self.host}:{self.port}, logged_in={self.logged_in})"

    # -- connection ---------------------------------------------------------------------------------------------
    @property
    def manager(self) -> Any:
        """The underlying panoramisk Manager (None before start()); for event subscriptions."""
        return self._manager

    @property
    def logged_in(self) -> bool:
        m = self._manager
        return bool(m is not None and m.authenticated and m.protocol is not None and not m.protocol.closed)

    async def start(self) -> None:
        """Begin connecting (idempotent, returns at once); panoramisk logs in and reconnects from then on."""
        if self._manager is not None:
            return
        self._manager = _GuardedManager(
            on_result=self._login_result,
            login_timeout=self.login_timeout,
            host=self.host,
            port=self.port,
            username=self.username,
            secret=self._secret,
            events=self.events if isinstance(self.events, str) else ("on" if self.events else "off"),
            encoding="utf-8",
            ping_delay=self.ping_interval,
            ping_interval=self.ping_interval,
            reconnect_timeout=self.reconnect_delay,
            protocol_factory=_GuardedProtocol,
            loop=asyncio.get_running_loop(),
            on_login=self._on_login,
            on_disconnect=self._on_disconnect,
        )
        self._manager.connect()

    async def wait_logged_in(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - bounded by design
        """True once logged in; False on a refused login, a connect error, or after `timeout` (login_timeout)."""
        if self.logged_in:
            return True
        if self._manager is None:
            return False
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._login_waiters.add(waiter)
        try:
            return await asyncio.wait_for(waiter, self.login_timeout if timeout is None else timeout)
        except TimeoutError:
            if not self.last_error:
                self.last_error = f"no AMI login within {self.login_timeout if timeout is None else timeout:g}s"
            return False
        finally:
            self._login_waiters.discard(waiter)

    async def close(self) -> None:
        m, self._manager = self._manager, None
        if m is not None:
            m.shutdown()
        for w in self._login_waiters:
            if not w.done():
                w.set_result(False)

    async def __aenter__(self) -> AmiPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _login_result(self, ok: bool, detail: str) -> None:
        if not ok:
            if detail != self.last_error:
                log.warning("%s", detail)
            self.last_error = detail
        for w in self._login_waiters:
            if not w.done():
                w.set_result(ok)

    def _on_login(self, manager: Any) -> None:
        log.info("AMI logged in at %s:%s", self.host, self.port)
        self.last_error = ""
        # actions cut by an earlier disconnect wait in `awaiting_actions` for a FullyBooted event that a login
        # without events never gets; ours were cancelled by their timeout: drop them
        manager.awaiting_actions = deque(a for a in manager.awaiting_actions if not a.future.done())
        self._login_result(True, "")
        for hook in self.on_login:
            hook()

    def _on_disconnect(self, manager: Any, exc: object) -> None:
        log.warning("AMI connection to %s:%s lost; reconnecting every %ss", self.host, self.port, self.reconnect_delay)

    # -- actions ------------------------------------------------------------------------------------------------
    async def send_action(self, action: ActionDict, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Send one action and return its response (a panoramisk Message, or a list for multi-response actions).

        Names are validated (ValueError), values sanitized. Raises AmiNotConnected at once without a logged-in
        connection and AmiTimeout when no complete answer came within `timeout` (default `self.timeout`),
        including when the connection drops mid-action. Never waits longer than `timeout`.
        """
        headers = sanitize_action(action)
        limit = self.timeout if timeout is None else timeout
        m = self._manager
        if m is None or not self.logged_in:
            raise AmiNotConnected(self.last_error or "AMI not connected")
        try:
            future = m.send_action(headers)
        except Exception as exc:  # a transport that vanished between the check and the write
            raise AmiNotConnected(f"AMI send failed: {exc}") from exc
        try:
            return await asyncio.wait_for(future, limit)  # cancels the future on timeout: never re-sent
        except TimeoutError:
            self._forget(m, future)
            raise AmiTimeout(f"no answer to AMI {headers['Action']} within {limit:g}s") from None
        except asyncio.CancelledError:
            self._forget(m, future)
            raise

    @staticmethod
    def _forget(m: Any, future: asyncio.Future[Any]) -> None:
        protocol = getattr(m, "protocol", None)
        if protocol is not None:
            for key, act in list(protocol.responses.items()):
                if act.future is future:
                    protocol.responses.pop(key, None)
        m.awaiting_actions = deque(a for a in m.awaiting_actions if a.future is not future)

    async def publish_verdict(
        self,
        result: str,
        device: str | int | None,
        direction: str,
        mode: str,
        channel: str | None,
        uniqueid: str | None,
        timeout: float | None = None,  # noqa: ASYNC109 - the bound is the point: callers must not need to add one
    ) -> bool:
        """`UserEvent: SecureLinkVerdict`; True when Asterisk acknowledged it. Never raises, never blocks long."""
        try:
            resp = await self.send_action(
                {
                    "Action": "UserEvent",
                    "UserEvent": VERDICT_EVENT,
                    "Result": result,
                    "Device": device,
                    "Direction": direction,
                    "Mode": mode,
                    "Channel": channel,
                    "Uniqueid": uniqueid,
                },
                timeout,
            )
        except AmiError as exc:
            log.warning("AMI verdict event not sent (result=%s): %s", sanitize_value(result, 32), exc)
            return False
        except Exception:
            log.exception("AMI verdict event not sent")
            return False
        ok = bool(getattr(resp, "success", False))
        if not ok:
            log.warning("AMI refused the verdict event: %s", sanitize_value(getattr(resp, "message", ""), 120))
        return ok

    async def publish_lockout(self, kind: str, source: str, device: str, count: int, limit: int, seconds: int) -> bool:
        """`UserEvent: SecureLinkLockout`: a source spent its key-alone guess budget (`Kind: source`, `Source`,
        `Count` guesses of `Limit` in 24 h) or a registered number backs off (`Kind: caller`, `Device`, `Count`
        failures in a row, `Seconds` refused). True when Asterisk acknowledged it. Never raises, never blocks long."""
        headers: dict[str, HeaderValue] = {
            "Kind": kind,
            "Source": source,
            "Device": device,
            "Count": count,
            "Limit": limit,
            "Seconds": seconds,
        }
        return await self._user_event(LOCKOUT_EVENT, headers)

    async def publish_voucher(self, result: str, device: int | None, call_id: str | None, reason: str) -> bool:
        """`UserEvent: SecureLinkVoucher`: a device API claim of a call's key (`Result`: released, repeated,
        already_claimed, not_found; `Reason`). Never the key. True when Asterisk acknowledged it; never raises."""
        headers: dict[str, HeaderValue] = {"Result": result, "Device": device, "CallId": call_id, "Reason": reason}
        return await self._user_event(VOUCHER_EVENT, headers)

    async def publish_intent_raced(self, device: int, intent_id: str, spent: str, racing: str) -> bool:
        """`UserEvent: SecureLinkIntentRaced`: a device's intent was spent by one call (`Channel`, now hung up)
        while another call from its registered number came in (`RacingChannel`). Never raises."""
        headers: dict[str, HeaderValue] = {"Device": device, "Intent": intent_id, "Channel": spent,
                                           "RacingChannel": racing}  # fmt: skip
        return await self._user_event(INTENT_RACED_EVENT, headers)

    async def _user_event(self, name: str, headers: dict[str, HeaderValue]) -> bool:
        """One `UserEvent`; True when Asterisk acknowledged it. Never raises: an event never disturbs a call or an
        API answer (the failure is logged by its kind, never with the headers)."""
        try:
            resp = await self.send_action({"Action": "UserEvent", "UserEvent": name, **headers})
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("AMI %s event not sent (%s)", name, exc if isinstance(exc, AmiError) else type(exc).__name__)
            return False
        return bool(getattr(resp, "success", False))

    async def check(self, timeout: float | None = None) -> tuple[bool, str]:  # noqa: ASYNC109
        """For `securelink doctor`: connect if needed, log in, Ping. (ok, human-readable detail); never raises."""
        limit = self.login_timeout if timeout is None else timeout
        started_here = self._manager is None
        try:
            await self.start()
            if not await self.wait_logged_in(limit):
                return False, self.last_error or f"no AMI login within {limit:g}s"
            resp = await self.send_action({"Action": "Ping"}, min(limit, self.timeout))
            if not getattr(resp, "success", False):
                return False, "AMI Ping refused"
            return True, f"AMI login as {self.username!r} at {self.host}:{self.port} works"
        except AmiError as exc:
            return False, str(exc)
        except Exception as exc:  # noqa: BLE001 - the doctor reports every failure, never raises
            return False, f"AMI check failed: {type(exc).__name__}: {exc}"
        finally:
            if started_here:
                await self.close()
