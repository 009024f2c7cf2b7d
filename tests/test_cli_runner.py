"""Which event loop a command runs on (`cli.runner_for`): the long-running services on uvloop, the rest on asyncio's."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from asterisk_securelink.cli import SERVICES, runner_for


async def loop_kind() -> int:
    return 1 if isinstance(asyncio.get_running_loop(), uvloop.Loop) else 0


@pytest.mark.parametrize("command", sorted(SERVICES))
def test_the_services_run_on_uvloop(command: str) -> None:
    assert runner_for(command)(loop_kind()) == 1


@pytest.mark.parametrize("command", ["device", "audit", "calls", "keys", "doctor"])
def test_other_commands_run_on_asyncio_s_own_loop(command: str) -> None:
    assert runner_for(command)(loop_kind()) == 0
