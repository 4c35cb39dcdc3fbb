"""What this api process knows live of runs: the source of its push streams.

``LiveRuns`` tails ``cyclone.events`` and ``cyclone.logs.stored`` (tails: every api
replica sees every message and none takes part in a consumer group), and keeps:

* the views of the runs that had events lately (a bounded cache), each folded here
  with the read model's pure ``apply``, so a stream that is woken by an event sees
  that event in ``view`` at once (the read model, shared by the replicas in
  distributed mode, may not have applied it yet). A run it does not hold, or whose
  next event it missed, is folded from the store;
* watchers per run (``watch``): an ``asyncio.Event`` set, and replaced, whenever the run
  has a new event;
* listeners for every run change (``changes``), what the run list's stream sends;
* callbacks called with the run id for every event of a run (``on_event``) and every
  log "stored" notice (``on_stored``): the log server's followers are woken by them.

When a tail ends (the bus fell over, or the tail fell behind), it is opened again;
whatever happened meanwhile was not seen, so every cached view is dropped (folded
from the store again when asked) and every watcher and wake-up callback is called.
A listener that does not keep up is ended (its iteration stops) rather than holding
memory: its client reconnects and resumes from its last position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from shared.errors import BusError
from shared.events import RecordedEvent, is_run_stream
from shared.ports.bus import TOPIC_EVENTS, TOPIC_LOGS_STORED, Bus, Message
from shared.ports.eventstore import EventStore
from shared.projections.runs import RunView, apply, run_id_of
from shared.retry import Backoff, is_transient
from shared.runstream import load_run
from shared.wire import decode_event, decode_log_stored

__all__ = ["LISTENER_BACKLOG", "Listener", "LiveRuns", "RunChange", "Watch"]

log = logging.getLogger(__name__)

CACHED_RUNS = 2000  # views kept, the most recently changed
LISTENER_BACKLOG = 10_000  # changes a listener may have unread before it is ended
WATCH_KEPT = 1000  # events of a watched run kept for its watchers (more: the store is read)

WakeUp = Callable[[str], None]


@dataclass(frozen=True)
class RunChange:
    """A run's view right after one of its events (``position`` orders all events)."""

    position: int
    type: str
    run: RunView


class Listener:
    """The run changes since it was made, in order. ``next`` gives None once it has ended:
    it fell ``LISTENER_BACKLOG`` changes behind, or the tail was opened again (changes
    may have been missed: resume from the last position seen)."""

    def __init__(self) -> None:
        # Unbounded, so the end marker always fits; LiveRuns ends it at the backlog.
        self._queue: asyncio.Queue[RunChange | None] = asyncio.Queue()
        self.ended = False

    async def next(self, wait_s: float) -> RunChange | None:
        """The next change; None at the end; TimeoutError when none came in ``wait_s``."""
        if self.ended and self._queue.empty():
            return None
        async with asyncio.timeout(wait_s):  # not wait_for: see shared/outbox.py
            change = await self._queue.get()
        if change is None:
            self.ended = True
        return change

    def _put(self, change: RunChange) -> bool:
        """Queue ``change``; False (and ended) when the listener is too far behind."""
        if self._queue.qsize() >= LISTENER_BACKLOG:
            self._end()
            return False
        self._queue.put_nowait(change)
        return True

    def _end(self) -> None:
        self._queue.put_nowait(None)


@dataclass
class Watch:
    """One run's watchers: ``event`` is set, and replaced, on each of its events, which
    are kept by seq (``WATCH_KEPT`` at most) for them to take without reading the store."""

    watchers: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)
    recent: dict[int, RecordedEvent] = field(default_factory=dict)

    def keep(self, recorded: RecordedEvent) -> None:
        self.recent[recorded.seq] = recorded
        while len(self.recent) > WATCH_KEPT:
            del self.recent[next(iter(self.recent))]

    def take(self, after: int) -> list[RecordedEvent]:
        """The kept events ``after + 1``, ``after + 2``, ... with no gap (older ones are
        forgotten)."""
        taken = []
        while (recorded := self.recent.pop(after + 1, None)) is not None:
            taken.append(recorded)
            after += 1
        for stale in [seq for seq in self.recent if seq <= after]:
            del self.recent[stale]
        return taken


class LiveRuns:
    def __init__(self, bus: Bus, store: EventStore, cached_runs: int = CACHED_RUNS) -> None:
        self.bus = bus
        self.store = store
        self.cached_runs = cached_runs
        self.ready = asyncio.Event()  # set once both tails are open
        self._views: OrderedDict[str, RunView] = OrderedDict()
        self._watches: dict[str, Watch] = {}
        self._listeners: set[Listener] = set()
        self._on_event: list[WakeUp] = []
        self._on_stored: list[WakeUp] = []
        self._open_tails = 0

    def on_event(self, callback: WakeUp) -> None:
        self._on_event.append(callback)

    def on_stored(self, callback: WakeUp) -> None:
        """Only where the log store is written by another process: the log server wakes
        the followers in its own process itself."""
        self._on_stored.append(callback)

    async def run(self) -> None:
        """Follow both topics until the bus closes."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow(TOPIC_EVENTS, self._event))
            group.create_task(self._follow(TOPIC_LOGS_STORED, self._stored))

    # --- what streams use ------------------------------------------------------------------

    async def view(self, run_id: str) -> RunView | None:
        """The run's view as of the last event seen; None for an unknown run."""
        cached = self._views.get(run_id)
        if cached is not None:
            return cached
        loaded = await load_run(self.store, run_id)
        if loaded is None:
            return None
        newer = self._views.get(run_id)  # an event may have come while we read
        if newer is not None and newer.last_seq >= loaded.last_seq:
            return newer
        self._keep(loaded)
        return loaded

    @contextlib.contextmanager
    def watch(self, run_id: str) -> Iterator[Watch]:
        """The run's ``Watch`` while the block runs; take ``.event`` before reading
        what it guards, so a change meanwhile is not missed."""
        watch = self._watches.setdefault(run_id, Watch())
        watch.watchers += 1
        try:
            yield watch
        finally:
            watch.watchers -= 1
            if watch.watchers == 0 and self._watches.get(run_id) is watch:
                del self._watches[run_id]

    @contextlib.contextmanager
    def changes(self) -> Iterator[Listener]:
        """A listener to every run change from now on, while the block runs."""
        listener = Listener()
        self._listeners.add(listener)
        try:
            yield listener
        finally:
            self._listeners.discard(listener)

    # --- the tails -----------------------------------------------------------------------------

    async def _follow(self, topic: str, handle: Callable[[Message], object]) -> None:
        backoff = Backoff()
        first = True
        while True:
            try:
                tail = await self.bus.tail(topic)
            except BusError as exc:
                if not is_transient(exc):
                    return  # the bus is closed
                await self._retry_later(topic, exc, backoff)
                continue
            if not first:
                self._resynchronise()
            first = False
            try:
                self._tail_opened()
                backoff.reset()
                async for message in tail:
                    result = handle(message)
                    if asyncio.iscoroutine(result):
                        await result
                return  # the bus was closed
            except Exception as exc:  # the bus, or the store a view is folded from
                if not is_transient(exc):
                    raise
                await self._retry_later(topic, exc, backoff)
            finally:
                self._open_tails -= 1
                await tail.close()

    def _tail_opened(self) -> None:
        self._open_tails += 1
        if self._open_tails == 2:
            self.ready.set()

    async def _retry_later(self, topic: str, exc: Exception, backoff: Backoff) -> None:
        delay = backoff.next_delay()
        log.warning("live run tail interrupted; tailing again", extra={
            "topic": topic, "error": str(exc), "retry_in_s": round(delay, 2)})
        await asyncio.sleep(delay)

    def _resynchronise(self) -> None:
        """Messages were missed: forget what was folded, tell everyone to look again."""
        self._views.clear()
        for run_id in list(self._watches):
            self._wake(run_id)
        for listener in list(self._listeners):
            self._end_listener(listener)

    async def _event(self, message: Message) -> None:
        recorded = decode_event(message.value)
        if not is_run_stream(recorded.stream):
            return
        run_id = run_id_of(recorded.stream)
        view = await self._next_view(run_id, recorded)
        if view is None:
            return
        self._keep(view)
        watch = self._watches.get(run_id)
        if watch is not None:
            watch.keep(recorded)
        self._wake(run_id)
        change = RunChange(recorded.position, recorded.type, view)
        for listener in list(self._listeners):
            if not listener._put(change):  # it resumes from before this one
                self._listeners.discard(listener)

    async def _next_view(self, run_id: str, recorded: RecordedEvent) -> RunView | None:
        """The run's view with ``recorded`` applied; None when nobody here cares."""
        cached = self._views.get(run_id)
        if cached is not None and recorded.seq <= cached.last_seq:
            # Folded already, from the store (``view`` on a miss), which is ahead of the
            # bus: the view has it, but it is still news to listeners and watchers.
            return cached
        if cached is not None and recorded.seq == cached.last_seq + 1:
            return apply(cached, recorded)
        if cached is None and recorded.seq == 1:
            return apply(None, recorded)
        if cached is None and not self._interested(run_id):
            return None  # nobody asks about it: not worth a read of the store
        return await load_run(self.store, run_id)  # missed events: the store has them

    def _stored(self, message: Message) -> None:
        run_id, _ = decode_log_stored(message.value)
        for callback in self._on_stored:
            callback(run_id)

    # --- helpers -------------------------------------------------------------------------------

    def _interested(self, run_id: str) -> bool:
        return run_id in self._watches or bool(self._listeners)

    def _keep(self, view: RunView) -> None:
        self._views[view.id] = view
        self._views.move_to_end(view.id)
        while len(self._views) > self.cached_runs:
            self._views.popitem(last=False)

    def _wake(self, run_id: str) -> None:
        watch = self._watches.get(run_id)
        if watch is not None:
            watch.event.set()
            watch.event = asyncio.Event()
        for callback in self._on_event:
            callback(run_id)

    def _end_listener(self, listener: Listener) -> None:
        self._listeners.discard(listener)
        listener._end()
