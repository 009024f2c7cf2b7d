"""Fire-and-forget tasks, kept: the one set of them a long-lived part owns.

asyncio holds only a weak reference to a task, so a task nobody keeps may be garbage-collected before it finishes;
each part that starts work it does not await (an AMI event, an on-connect re-sync, a call's supervisor) keeps it here
until it is done, and on shutdown waits a moment for what is still running, then cancels the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundTasks:
    """The tasks one part started and did not await; a finished task leaves the set by itself."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str | None = None) -> asyncio.Task[T]:
        """Start `coro` as a task (in the running loop) and keep it until it is done."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task: object) -> bool:
        return task in self._tasks

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))  # a copy: tasks leave the set while the caller iterates

    def cancel(self) -> None:
        """Cancel every task but the one calling (a task that shuts its owner down must not cancel itself); does
        not wait for them."""
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()

    async def drain(self, grace: float) -> None:
        """Wait up to `grace` seconds for the tasks (the calling one excepted), then cancel what is left and wait
        for it to finish cancelling. What a task raised is not raised here."""
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
