"""Cancel signals reach the runs' jobs whether they were raised before the watch
started (a worker starting, or watching again after an etcd blip) or while it runs.

Real parts: the in-process coordinator.
"""

from __future__ import annotations

import asyncio

from services.workermanager.cancels import watch_cancels
from shared.adapters.coordination.memory import MemoryCoordinator
from shared.keys import cancel_key
from tests.support import eventually


async def test_cancels_raised_before_and_while_the_watch_runs_both_reach_their_runs() -> None:
    coord = MemoryCoordinator()
    await coord.put(cancel_key("raised-while-away"), b"")
    cancelled: list[str] = []
    watcher = asyncio.create_task(watch_cancels(coord, cancelled.append))
    try:
        await eventually(lambda: "raised-while-away" in cancelled, what="the earlier cancel")
        await coord.put(cancel_key("raised-now"), b"")
        await eventually(lambda: "raised-now" in cancelled, what="the new cancel")
        await coord.delete(cancel_key("raised-now"))  # a signal going away cancels nothing
    finally:
        await coord.close()
    await asyncio.wait_for(watcher, 5)  # the coordinator's close ends the watch
    assert cancelled == ["raised-while-away", "raised-now"]
