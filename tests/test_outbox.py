"""OutboxRelay: stopping it is never lost to a wake-up that lands in the same moment."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shared.adapters.bus.memory import MemoryBus
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.outbox import NotifyingStore, OutboxRelay
from tests.support import HANG_S


async def test_a_cancel_that_meets_an_append_wake_up_still_stops_the_relay(
        tmp_path: Path) -> None:
    # Python 3.11's asyncio.wait_for returns the awaited result instead of raising
    # CancelledError when both are ready in the same loop iteration: a relay waiting
    # for appends that way went on forever when a stop met an append (seen as a hung
    # `Embedded.stop()` on a loaded machine).
    store = NotifyingStore(await SqliteEventStore.open(tmp_path / "events.db"))
    bus = MemoryBus()
    relay = OutboxRelay(store, bus, checkpoint=None, poll_s=3600)
    task = asyncio.create_task(relay.run())
    try:
        async with asyncio.timeout(HANG_S):
            await relay.published.wait()  # drained: it waits for the next append
        for _ in range(3):
            await asyncio.sleep(0)
        store.appended.set()  # the wake-up's wait ends...
        await asyncio.sleep(0)
        task.cancel()  # ...in the same iteration as the stop
        done, _ = await asyncio.wait({task}, timeout=HANG_S)
        assert task in done, "the relay went on after it was cancelled"
        assert task.cancelled()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await bus.close()
        await store.inner.close()
