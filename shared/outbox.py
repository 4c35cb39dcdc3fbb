"""The outbox relay: the event store is written first, then the relay publishes.

Services never write to the store and the bus in one go (a dual write that can
lose an event). They append to the store; this relay reads the store's global
order from its checkpoint and publishes each event to ``cyclone.events`` (and a
``JobQueued`` also to ``cyclone.jobs``), saving its checkpoint after publishing.
A crash between publish and checkpoint republishes a few events, which the
consumers drop by ``(stream, seq)``: at-least-once publication, exactly-once effect.
That is also why the checkpoint is saved at most every ``CHECKPOINT_EVERY_S`` while
events flow (and once they stop): saving it after every batch was a store write for
every few events (~7 a run), and a crash republishes the same few events either way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from shared.events import CheckoutQueued, JobQueued, NewEvent, RecordedEvent
from shared.ports.bus import TOPIC_EVENTS, TOPIC_JOBS, Bus
from shared.ports.eventstore import EventStore
from shared.projections.runs import run_id_of
from shared.retry import Backoff, is_transient, retrying
from shared.wire import encode_event

__all__ = ["CHECKPOINT_EVERY_S", "KEPT", "NotifyingStore", "OutboxRelay"]

log = logging.getLogger(__name__)

_WORK = frozenset({JobQueued.TYPE, CheckoutQueued.TYPE})  # also go to cyclone.jobs
BATCH = 500  # events read from the store at once
KEPT = 10_000  # events appended here kept for the relay, at most
CHECKPOINT_EVERY_S = 0.5


class NotifyingStore:
    """An EventStore wrapper that wakes the relay as soon as an append commits, and
    hands it what this process appended.

    Without it the relay would have to poll; with it, in-process publication
    latency is one task switch. While a relay takes them (``keep``), the events
    appended here are kept by position (``KEPT`` at most) so that the relay publishes
    the ones that come next in the store's order without reading them back: the store
    is read when the next position is not among them (another process appended it, or
    an append that took it has not returned yet). All other calls pass straight through.
    """

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner
        self.appended = asyncio.Event()
        self.appended_total = 0  # events appended through this process (a metric)
        self._kept: dict[int, RecordedEvent] | None = None  # by position, while kept

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_seq: int
    ) -> list[RecordedEvent]:
        recorded = await self.inner.append(stream, events, expected_seq)
        self.appended_total += len(recorded)
        if self._kept is not None:
            self._kept.update((r.position, r) for r in recorded)
            while len(self._kept) > KEPT:  # the relay is far behind: it reads the store
                del self._kept[next(iter(self._kept))]
        self.appended.set()
        return recorded

    def keep(self, keeping: bool) -> None:
        """Start (or stop, forgetting them) keeping the events appended here."""
        self._kept = {} if keeping else None

    def kept_after(self, position: int) -> bool:
        """Whether an event appended here after ``position`` is kept."""
        return any(kept > position for kept in self._kept or ())

    def take(self, after: int) -> list[RecordedEvent]:
        """The kept events at positions ``after + 1``, ``after + 2``, ... with no gap;
        those at or before ``after`` (published already) are forgotten."""
        kept = self._kept
        if not kept:
            return []
        taken = []
        while (recorded := kept.pop(after + 1, None)) is not None:
            taken.append(recorded)
            after += 1
        for stale in [p for p in kept if p <= after]:
            del kept[stale]
        return taken

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
        self.published = asyncio.Event()  # set when caught up: lets tests and stop() wait
        self._saved = (0, 0.0)  # the checkpoint saved last, and when (monotonic)

    async def start_at(self, position: int) -> None:
        """Start from ``position`` instead of the saved checkpoint."""
        self.position = position
        if self.checkpoint:
            await self.store.save_checkpoint(self.checkpoint, position)
            self._saved = (position, time.monotonic())

    async def run(self) -> None:
        """Publish forever; an outage of the store or the bus delays publication (retried
        with backoff from the last checkpoint), it never skips an event."""
        if not self.position and self.checkpoint:
            self.position = await retrying(lambda: self.store.checkpoint(self.checkpoint or ""),
                                           "read the outbox checkpoint")
            self._saved = (self.position, time.monotonic())
        backoff, idle = Backoff(), True  # the first pass reads the store
        self.store.keep(True)
        try:
            await self._relay(backoff, idle)
        finally:
            self.store.keep(False)

    async def _relay(self, backoff: Backoff, idle: bool) -> None:
        while True:
            try:
                await self.drain(read=idle)
                await self._save_checkpoint(due=idle)
                backoff.reset()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("outbox relay interrupted", extra={"error": str(exc)})
                await backoff.wait()
                idle = True  # what was handed over and not published is read again
                continue
            try:  # not asyncio.wait_for: on 3.11 it loses a cancel that meets the wake-up
                async with asyncio.timeout(self.poll_s):
                    await self.store.appended.wait()
                idle = False
            except TimeoutError:
                idle = True

    async def drain(self, read: bool = True) -> None:
        """Publish everything stored after the position reached (not saved: see
        ``_save_checkpoint``): what this process appended next as it was handed over,
        the rest read from the store. ``read=False``: woken by an append here, the
        store is read only if what is kept skips a position (another process's event)."""
        while True:
            self.store.appended.clear()
            batch = self.store.take(self.position)
            if not batch and (read or self.store.kept_after(self.position)):
                batch = await self.store.read_all(self.position, limit=BATCH)
                read = len(batch) == BATCH  # there may be more
            for recorded in batch:
                if self.owns(recorded):
                    await self._publish(recorded)
            if batch:
                self.position = batch[-1].position
            # Caught up with the store as read and with what was appended here (what
            # other processes append comes at the next poll, or fills a skipped position).
            if not (read or self.store.appended.is_set()
                    or self.store.kept_after(self.position)):
                self.published.set()
                return

    async def _save_checkpoint(self, due: bool = False) -> None:
        """Save the position reached, when ``due`` or ``CHECKPOINT_EVERY_S`` after the
        last save."""
        saved, when = self._saved
        if not self.checkpoint or self.position == saved:
            return
        if due or time.monotonic() - when >= CHECKPOINT_EVERY_S:
            await self.store.save_checkpoint(self.checkpoint, self.position)
            self._saved = (self.position, time.monotonic())

    async def _publish(self, recorded: RecordedEvent) -> None:
        key = run_id_of(recorded.stream)
        value = encode_event(recorded)
        await self.bus.publish(TOPIC_EVENTS, key, value)
        if recorded.type in _WORK:
            await self.bus.publish(TOPIC_JOBS, key, value)
