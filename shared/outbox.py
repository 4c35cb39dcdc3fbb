"""The outbox relay: the event store is written first, then the relay publishes.

Services never write to the store and the bus in one go (a dual write that can
lose an event). They append to the store; this relay reads the store's global
order from its checkpoint and publishes each event to ``cyclone.events`` (and a
``JobQueued`` also to ``cyclone.jobs``), saving its checkpoint after publishing.
A crash between publish and checkpoint republishes a few events, which the
consumers drop by ``(stream, seq)``: at-least-once publication, exactly-once effect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from shared.events import CheckoutQueued, JobQueued, NewEvent, RecordedEvent
from shared.ports.bus import TOPIC_EVENTS, TOPIC_JOBS, Bus
from shared.ports.eventstore import EventStore
from shared.projections.runs import run_id_of
from shared.retry import Backoff, is_transient, retrying
from shared.wire import encode_event

__all__ = ["NotifyingStore", "OutboxRelay"]

log = logging.getLogger(__name__)

_WORK = frozenset({JobQueued.TYPE, CheckoutQueued.TYPE})  # also go to cyclone.jobs


class NotifyingStore:
    """An EventStore wrapper that wakes the relay as soon as an append commits.

    Without it the relay would have to poll; with it, in-process publication
    latency is one task switch. All other calls pass straight through.
    """

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner
        self.appended = asyncio.Event()
        self.appended_total = 0  # events appended through this process (a metric)

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_seq: int
    ) -> list[RecordedEvent]:
        recorded = await self.inner.append(stream, events, expected_seq)
        self.appended_total += len(recorded)
        self.appended.set()
        return recorded

    async def read(self, stream: str, from_seq: int = 1) -> list[RecordedEvent]:
        return await self.inner.read(stream, from_seq)

    async def read_last(self, stream: str, count: int) -> list[RecordedEvent]:
        return await self.inner.read_last(stream, count)

    async def read_all(self, from_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return await self.inner.read_all(from_position, limit)

    async def last_position(self) -> int:
        return await self.inner.last_position()

    async def streams(self, prefix: str = "") -> list[str]:
        return await self.inner.streams(prefix)

    async def checkpoint(self, name: str) -> int:
        return await self.inner.checkpoint(name)

    async def save_checkpoint(self, name: str, position: int) -> None:
        await self.inner.save_checkpoint(name, position)

    async def close(self) -> None:
        await self.inner.close()


class OutboxRelay:
    """Publishes stored events to the bus, in store order, from a durable checkpoint.

    ``owns(event)`` limits the relay to the runs this process is responsible for
    (``cyclone run`` owns only the runs it started; a server all but those).
    ``poll_s`` bounds how late events appended by another process are noticed.
    ``checkpoint=None`` keeps the position in memory only (``cyclone run``, whose
    runs live and die with its process).
    """

    def __init__(
        self,
        store: NotifyingStore,
        bus: Bus,
        checkpoint: str | None = "outbox",
        owns: Callable[[RecordedEvent], bool] = lambda event: True,
        poll_s: float = 1.0,
    ) -> None:
        self.store = store
        self.bus = bus
        self.checkpoint = checkpoint
        self.owns = owns
        self.poll_s = poll_s
        self.position = 0
        self.published = asyncio.Event()  # set after each batch: lets tests and stop() wait

    async def start_at(self, position: int) -> None:
        """Start from ``position`` instead of the saved checkpoint."""
        self.position = position
        if self.checkpoint:
            await self.store.save_checkpoint(self.checkpoint, position)

    async def run(self) -> None:
        """Publish forever; an outage of the store or the bus delays publication (retried
        with backoff from the last checkpoint), it never skips an event."""
        if not self.position and self.checkpoint:
            self.position = await retrying(lambda: self.store.checkpoint(self.checkpoint or ""),
                                           "read the outbox checkpoint")
        backoff = Backoff()
        while True:
            try:
                await self.drain()
                backoff.reset()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("outbox relay interrupted", extra={"error": str(exc)})
                await backoff.wait()
                continue
            try:  # not asyncio.wait_for: on 3.11 it loses a cancel that meets the wake-up
                async with asyncio.timeout(self.poll_s):
                    await self.store.appended.wait()
            except TimeoutError:
                pass

    async def drain(self) -> None:
        """Publish everything stored after the checkpoint."""
        while True:
            self.store.appended.clear()
            batch = await self.store.read_all(self.position, limit=500)
            if not batch:
                self.published.set()
                return
            for recorded in batch:
                if self.owns(recorded):
                    await self._publish(recorded)
            self.position = batch[-1].position
            if self.checkpoint:
                await self.store.save_checkpoint(self.checkpoint, self.position)

    async def _publish(self, recorded: RecordedEvent) -> None:
        key = run_id_of(recorded.stream)
        value = encode_event(recorded)
        await self.bus.publish(TOPIC_EVENTS, key, value)
        if recorded.type in _WORK:
            await self.bus.publish(TOPIC_JOBS, key, value)
