"""`tasks.BackgroundTasks`: the kept set of fire-and-forget tasks, and how it is drained on shutdown."""

from __future__ import annotations

import asyncio

from asterisk_securelink.tasks import BackgroundTasks


async def test_a_spawned_task_is_kept_until_done_then_leaves_by_itself() -> None:
    tasks = BackgroundTasks()
    release = asyncio.Event()

    async def work() -> str:
        await release.wait()
        return "done"

    task = tasks.spawn(work(), name="work-1")
    assert (len(tasks), task in tasks, task.get_name()) == (1, True, "work-1")
    release.set()
    assert await task == "done"
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert (len(tasks), task in tasks, list(tasks)) == (0, False, [])


async def test_drain_waits_for_what_finishes_in_time_and_cancels_the_rest() -> None:
    tasks = BackgroundTasks()
    finished: list[str] = []

    async def quick() -> None:
        await asyncio.sleep(0.01)
        finished.append("quick")

    async def stuck() -> None:
        await asyncio.Event().wait()

    fast, slow = tasks.spawn(quick()), tasks.spawn(stuck())
    await tasks.drain(0.2)
    assert finished == ["quick"] and fast.done() and not fast.cancelled()
    assert slow.cancelled() and len(tasks) == 0


async def test_drain_with_nothing_running_returns_at_once() -> None:
    async with asyncio.timeout(1):
        await BackgroundTasks().drain(60)


async def test_drain_does_not_raise_what_a_task_raised() -> None:
    tasks = BackgroundTasks()

    async def fails() -> None:
        raise RuntimeError("boom")

    task = tasks.spawn(fails())
    await tasks.drain(1)
    assert isinstance(task.exception(), RuntimeError)


async def test_cancel_spares_the_calling_task_and_does_not_wait() -> None:
    tasks = BackgroundTasks()
    other = tasks.spawn(asyncio.Event().wait())

    async def shut_down() -> bool:
        tasks.cancel()
        await asyncio.sleep(0)
        return asyncio.current_task() in tasks  # still kept: it was not cancelled

    me = tasks.spawn(shut_down())
    assert await me is True
    await asyncio.sleep(0)
    assert other.cancelled() and not me.cancelled()


async def test_drain_from_a_kept_task_does_not_wait_for_itself() -> None:
    tasks = BackgroundTasks()

    async def closer() -> str:
        await tasks.drain(5)  # waiting for itself would take the whole 5 s
        return "closed"

    async with asyncio.timeout(1):
        assert await tasks.spawn(closer()) == "closed"
