"""Reading a run's state and appending to its stream under optimistic concurrency.

``append_to_stream`` is the mechanism for any stream: read it, ask ``decide`` what to
append given what it holds, append with its last seq as the expected seq, and on a
concurrent append decide again from what is there now.

Every writer of a run stream (the event manager deciding, a worker reporting, the
API requesting a cancel) goes through ``append_to_run`` or ``RunStates.append``: it
folds the stream to its current ``RunView``, asks ``decide`` what to append given that
state, and appends with the state's last seq as the expected seq. A concurrent writer
makes the append fail with ``ConcurrencyConflict``; we then decide again from fresh
state, so nothing is ever overwritten and no decision is made on stale state.

``RunStates`` is the same for a service that works on a run event after event: it keeps
each run's folded view and reads only the events after the last one it saw, so the
cost of an event does not grow with the length of the run's history.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence

from shared.errors import ConcurrencyConflict, StoreError
from shared.events import Event, NewEvent, RecordedEvent, run_stream
from shared.ports.eventstore import EventStore
from shared.projections.runs import RunView, fold
from shared.streamcache import StreamCache

__all__ = [
    "AppendResult",
    "Decide",
    "RunStates",
    "append_to_run",
    "append_to_stream",
    "load_run",
    "new_run_id",
]

log = logging.getLogger(__name__)

Decide = Callable[[RunView | None], Sequence[Event]]


class AppendResult:
    """What ``append_to_run`` did: the state it decided on and the events it wrote."""

    __slots__ = ("appended", "run")

    def __init__(self, run: RunView | None, appended: list[RecordedEvent]) -> None:
        self.run = run
        self.appended = appended


def new_run_id() -> str:
    """A run id that sorts by creation time: 12 hex digits of ms, then 8 random ones."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(4)}"


async def load_run(store: EventStore, run_id: str) -> RunView | None:
    return fold(await store.read(run_stream(run_id)))


async def append_to_stream(
    store: EventStore, stream: str,
    decide: Callable[[list[RecordedEvent]], Sequence[Event]], attempts: int = 50,
    meta: Mapping[str, str] | None = None,
) -> tuple[list[RecordedEvent], list[RecordedEvent]]:
    """Append what ``decide(events)`` returns at the end of ``stream`` (each with the
    envelope's ``meta``), deciding again on a concurrent append. Returns the events it
    decided on and the ones it appended."""
    for _ in range(attempts):
        events = await store.read(stream)
        new = list(decide(events))
        if not new:
            return events, []
        expected = events[-1].seq if events else 0
        try:
            return events, await store.append(
                stream, [NewEvent(e, meta=meta or {}) for e in new], expected)
        except ConcurrencyConflict:
            log.debug("append conflict, deciding again", extra={"stream": stream})
    raise StoreError(f"stream {stream}: gave up after {attempts} concurrent-append conflicts")


async def append_to_run(
    store: EventStore, run_id: str, decide: Decide, attempts: int = 50
) -> AppendResult:
    """Append what ``decide(state)`` returns, retrying on concurrent appends (a one-off
    ``RunStates.append``, for a writer that keeps no views)."""
    return await RunStates(store, capacity=1).append(run_id, decide, attempts)


class RunStates:
    """The views of the runs a service works on, each kept up to date incrementally
    (``shared.streamcache``): ``load`` reads only the events after the view's last one,
    and a conflicting ``append`` reads on from there, not from seq 1."""

    def __init__(self, store: EventStore, capacity: int = 1024) -> None:
        self.store = store
        self._views: StreamCache[RunView] = StreamCache(store, fold, capacity)

    async def load(self, run_id: str) -> RunView | None:
        """The run's current view (``None``: the run has no events)."""
        return await self._views.load(run_stream(run_id))

    def kept(self, run_id: str) -> RunView | None:
        """The run's view as last loaded, without reading the store (it may be behind:
        for what never changes, such as its project); None when none is kept."""
        kept = self._views.kept(run_stream(run_id))
        return kept[0] if kept is not None else None

    async def append(self, run_id: str, decide: Decide, attempts: int = 50) -> AppendResult:
        """``append_to_run`` on the kept view: what ``decide(state)`` returns, appended
        with the state's last seq expected, decided again on a concurrent append.

        The first try decides on the view kept, without reading the store: the append's
        expected seq refuses it if the stream has moved on (then it reads on and decides
        again), and a decision to append nothing is made again on a fresh read (what the
        kept view lacks may call for events). Most appends follow a load of the same run
        a moment before: this saves the second read."""
        stream = run_stream(run_id)
        optimistic = self._views.kept(stream)
        run: RunView | None
        for _ in range(attempts):
            if optimistic is not None:
                run, seq = optimistic
                optimistic = None
                if run.last_seq != seq:
                    continue  # a fold that skipped events (unknown types): read it again
                new = list(decide(run))
                if not new:
                    continue
            else:
                run = await self.load(run_id)
                new = list(decide(run))
                if not new:
                    return AppendResult(run, [])
            try:
                appended = await self.store.append(
                    stream, [NewEvent(e) for e in new], run.last_seq if run else 0)
            except ConcurrencyConflict:
                log.debug("append conflict, deciding again", extra={"run": run_id})
                continue
            self._views.keep(stream, fold(appended, run), appended[-1].seq)
            return AppendResult(run, appended)
        raise StoreError(f"run {run_id}: gave up after {attempts} concurrent-append conflicts")
