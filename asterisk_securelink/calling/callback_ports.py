"""What a callback (`calling.callback`) needs from the rest of the product: its collaborators as protocols, so the
call logic is tested with fakes and reads without the ARI client or the store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from asterisk_securelink.calling.guard import Decision, Kind
from asterisk_securelink.store.store import DeviceRow


@dataclass(frozen=True)
class Timing:
    mobile_ring_s: int = 20  # the originate's ring timeout (CALLING.md: at most 20 s)
    confirm_s: float = 8.0
    poll_s: float = 0.25  # how often the shared store is asked whether the voucher was released
    dest_ring_s: int = 60
    backstop_s: float = 5.0  # past the ring timeouts, in case Asterisk never tells us


DEFAULT_TIMING = Timing()


# -- collaborators ----------------------------------------------------------------------------------------------
class Identity(Protocol):
    """A device's routing identity (`calling.identity`): where its calls go, and as whom."""

    @property
    def context(self) -> str: ...

    @property
    def callerid(self) -> str: ...


class Guard(Protocol):
    """`calling.guard.RouteGuard`: the toll-fraud check and the device's leases (`store.routes.RouteLeases`)."""

    async def admit(
        self, device_id: int, call_id: str, destination: str | None, kind: Kind, now_ms: int
    ) -> Decision: ...

    async def release(self, call_id: str) -> Any: ...


class Leases(Protocol):
    async def live(self, device_id: int, kind: str, now_ms: int) -> int: ...


class Confirmations(Protocol):
    """`callkeys.store.VoucherStore.released`: did the phone claim the call's voucher (on any node)?"""

    async def released(self, call_id: str) -> bool: ...


class Records(Protocol):
    """`callkeys.service.CallKeys.record` (or `CallBook.record`): one call record."""

    async def record(self, record: dict[str, Any]) -> None: ...


class CallbackChannels(Protocol):
    """What a callback needs from ARI (implemented by `asterisk.ari.client.AriClient`)."""

    async def originate(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: str | Sequence[str] | None = None,
        caller_id: str | None = None,
        timeout: int | None = None,  # noqa: ASYNC109 - ARI's ring timeout
        variables: Mapping[str, str] | None = None,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
    ) -> Any: ...

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool: ...

    async def play(self, channel_id: str, media: str, playback_id: str) -> None: ...

    async def stop_playback(self, playback_id: str) -> bool: ...

    async def set_channel_var(self, channel_id: str, name: str, value: str) -> None: ...

    async def create_bridge(self, type: str = "mixing", *, bridge_id: str | None = None, name: str | None = None
                            ) -> str: ...  # fmt: skip

    async def add_channel_to_bridge(self, bridge_id: str, channel_ids: str | Sequence[str]) -> None: ...

    async def destroy_bridge(self, bridge_id: str) -> bool: ...


Resolve = Callable[[DeviceRow], Awaitable[Identity | None]]  # `calling.identity.resolve`
