"""OutboxRelay: stopping it is never lost to a wake-up that lands in the same moment; a
burst is published whole, its checkpoint saved a few times, not once a batch."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from shared import events as ev
from shared.adapters.bus.memory import MemoryBus
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.events import NewEvent, RecordedEvent
from shared.outbox import CHECKPOINT_EVERY_S, NotifyingStore, OutboxRelay
from shared.ports.bus import TOPIC_EVENTS, Subscription
from shared.ports.eventstore import EventStore
from shared.wire import decode_event
from tests.support import HANG_S, eventually


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


class CountingStore(SqliteEventStore):
    """Counts the checkpoint writes and the reads of the store's order."""

    saves = reads = 0

    async def save_checkpoint(self, name: str, position: int) -> None:
        self.saves += 1
        await super().save_checkpoint(name, position)

    async def read_all(self, from_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        self.reads += 1
        return await super().read_all(from_position, limit)


@dataclass
class Relaying:
    """A relay running on ``store``, publishing to a one-partition bus (so what it
    publishes arrives in the order it does)."""

    store: NotifyingStore
    subscription: Subscription

    async def published(self, count: int) -> list[RecordedEvent]:
        got = []
        async with asyncio.timeout(HANG_S):
            async for message in self.subscription:
                got.append(decode_event(message.value))
                if len(got) == count:
                    return got
        raise AssertionError(f"the bus closed after {len(got)} of {count} events")


@contextlib.asynccontextmanager
async def relaying(inner: SqliteEventStore, poll_s: float) -> AsyncIterator[Relaying]:
    store = NotifyingStore(inner)
    bus = MemoryBus(partitions=1)
    subscription = await bus.subscribe(TOPIC_EVENTS, "test")
    task = asyncio.create_task(OutboxRelay(store, bus, poll_s=poll_s).run())
    try:
        yield Relaying(store, subscription)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await bus.close()
        await inner.close()


async def test_a_burst_is_published_whole_with_few_checkpoint_writes_and_the_end_saved(
        tmp_path: Path) -> None:
    inner = await CountingStore.open(tmp_path / "events.db")
    assert isinstance(inner, CountingStore)
    poll_s = 0.2
    started = time.monotonic()
    async with relaying(inner, poll_s=poll_s) as relay:
        for n in range(200):  # one append at a time: a wake-up (and a drain) each
            await relay.store.append(f"run-{n % 7}", [NewEvent(ev.CheckoutQueued())], n // 7)
            await asyncio.sleep(0)
        published = await relay.published(200)

        async def saved_to_the_end() -> bool:
            return await inner.checkpoint("outbox") == published[-1].position

        await eventually(saved_to_the_end)  # once the burst is over
        elapsed = time.monotonic() - started

    assert sorted((e.stream, e.seq) for e in published) == sorted(
        (f"run-{n % 7}", n // 7 + 1) for n in range(200))  # each once
    assert [e.position for e in published] == sorted(e.position for e in published)
    # A save at most every CHECKPOINT_EVERY_S while events flow, and a read at start and
    # at each poll: bounds that grow with the time a loaded machine takes, far below one
    # per batch (100 saves and 200 reads before, in well under a second).
    assert inner.saves <= elapsed / CHECKPOINT_EVERY_S + 3, (inner.saves, elapsed)
    # handed over as appended, not read back from the store
    assert inner.reads <= elapsed / poll_s + 3, (inner.reads, elapsed)


async def test_events_appended_by_others_in_between_are_published_in_the_stores_order(
        tmp_path: Path) -> None:
    # Another process's appends take positions between this one's: the relay publishes
    # what it was handed only up to a gap, and reads the store from there.
    inner = await SqliteEventStore.open(tmp_path / "events.db")
    async with relaying(inner, poll_s=0.05) as relay:
        seqs = {"mine": 0, "others": 0}

        async def append(through: EventStore, stream: str) -> None:
            await through.append(stream, [NewEvent(ev.CheckoutQueued())], seqs[stream])
            seqs[stream] += 1

        for n in range(120):
            await append(inner if n % 3 == 0 else relay.store,
                         "others" if n % 3 == 0 else "mine")
            if n % 5 == 0:
                await asyncio.sleep(0)
        published = await relay.published(120)

    assert [e.position for e in published] == list(range(1, 121))
    assert not relay.store.kept_after(0)  # forgotten once the relay stopped
