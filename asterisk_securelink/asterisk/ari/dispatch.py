"""The ARI event dispatcher: one ordered lane (queue + worker task) per channel, so the events of one channel are
handled in order while different channels run concurrently; non-channel events share one more lane. A lane ends once its
channel has ended (`StasisEnd`/`ChannelDestroyed`) and its queue is empty, or after being idle for a while.

A handler's exception text is never logged (caller numbers can be keys): only its type, the traceback at DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from asterisk_securelink.asterisk.ari.events import ChannelDestroyed, Event, StasisEnd

log = logging.getLogger(__name__)

MAX_QUEUE = 1000  # events waiting per lane; past it new events of that lane are dropped with a warning
LANE_IDLE = 60.0  # seconds an empty lane waits for more events before its worker ends
CLOSE_GRACE = 5.0  # seconds running handlers get to finish at close() before they are cancelled

Handler = Callable[[Event], Awaitable[None]]

_GLOBAL_LANE = ""  # key of the lane for events without a channel (channel ids are never empty)


@dataclass(eq=False)
class _Lane:
    key: str
    queue: asyncio.Queue[Event]
    task: asyncio.Task[None] | None = None
    ended: bool = False  # the channel's StasisEnd or ChannelDestroyed was handled
    idle: bool = False  # the worker waits for the next event (no handler running)
    dropped: int = 0


class Dispatcher:
    """Runs `handler` for every submitted event: in order per channel, concurrently across channels.

    A handler's exception is logged (type only; the traceback at DEBUG) and the lane goes on with the next event.
    """

    def __init__(self, handler: Handler, *, max_queue: int = MAX_QUEUE, idle_timeout: float = LANE_IDLE) -> None:
        self._handler = handler
        self._max_queue = max_queue
        self._idle_timeout = idle_timeout
        self._lanes: dict[str, _Lane] = {}
        self._closed = False
        self.dropped = 0

    @property
    def lanes(self) -> int:
        """Number of live lanes (workers)."""
        return len(self._lanes)

    def submit(self, event: Event) -> bool:
        """Queue an event on its lane (never blocks). False if it was dropped (lane full or dispatcher closed)."""
        if self._closed:
            return False
        key = event.channel_id or _GLOBAL_LANE
        lane = self._lanes.get(key)
        if lane is None:
            lane = _Lane(key, asyncio.Queue(self._max_queue))
            self._lanes[key] = lane
            lane.task = asyncio.create_task(self._work(lane), name=f"ari-lane-{key or 'global'}")
        try:
            lane.queue.put_nowait(event)
        except asyncio.QueueFull:
            lane.dropped += 1
            self.dropped += 1
            if lane.dropped == 1 or lane.dropped % 100 == 0:
                log.warning(
                    "ARI lane %s is full (%d events waiting): dropped %s (%d dropped on this lane)",
                    key or "global",
                    self._max_queue,
                    event.type,
                    lane.dropped,
                )
            return False
        return True

    async def join(self) -> None:
        """Wait until every event submitted so far has been handled."""
        await asyncio.gather(*(lane.queue.join() for lane in list(self._lanes.values())))

    async def aclose(self, grace: float = CLOSE_GRACE) -> None:
        """Stop accepting events, give queued and running handlers `grace` seconds, then cancel what is left."""
        self._closed = True
        tasks = []
        for lane in list(self._lanes.values()):
            if lane.task is None:
                continue
            if lane.idle and lane.queue.empty():
                lane.task.cancel()  # nothing to finish
            tasks.append(lane.task)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        if pending:
            log.warning("ARI dispatcher closing: cancelling %d lane(s) still busy after %.1fs", len(pending), grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _work(self, lane: _Lane) -> None:
        try:
            while True:
                if lane.queue.empty():
                    if lane.ended or self._closed:
                        return
                    lane.idle = True
                    try:
                        async with asyncio.timeout(self._idle_timeout):
                            event = await lane.queue.get()
                    except TimeoutError:
                        if lane.queue.empty():
                            return
                        continue
                    finally:
                        lane.idle = False
                else:
                    event = lane.queue.get_nowait()
                try:
                    await self._handle(event)
                finally:
                    lane.queue.task_done()
                if isinstance(event, StasisEnd | ChannelDestroyed):
                    lane.ended = True
        finally:
            # No await between the empty check above and here: submit() cannot slip an event into a dying lane.
            if self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]

    async def _handle(self, event: Event) -> None:
        try:
            await self._handler(event)
        except Exception as exc:  # one bad event must not stop the lane
            log.error("ARI handler failed on %s (channel %s): %s", event.type, event.channel_id, type(exc).__name__)
            log.debug("ARI handler traceback", exc_info=True)
