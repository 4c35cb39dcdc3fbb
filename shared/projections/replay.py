"""Rebuilding every run's read model from the event store (``cyclone replay``, and every
process at start: ``SharedReplay``)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field, replace

from shared.events import is_run_stream
from shared.ports.eventstore import EventStore
from shared.projections.runs import RunView, apply, run_id_of

__all__ = ["Replayed", "SharedReplay", "replay_runs"]


@dataclass
class Replayed:
    runs: dict[str, RunView] = field(default_factory=dict)
    events: int = 0
    position: int = 0

    def by_status(self) -> dict[str, int]:
        return dict(Counter(run.status for run in self.runs.values()))

    @property
    def skipped_events(self) -> int:
        return sum(run.skipped_events for run in self.runs.values())


async def replay_runs(store: EventStore, page: int = 1000,
                      since: Replayed | None = None) -> Replayed:
    """Every run's view, folded from the store's global order in pages; ``since``: go on
    from an earlier replay (which is left as it was) instead of from the start."""
    out = Replayed() if since is None else replace(since, runs=dict(since.runs))
    while batch := await store.read_all(out.position, limit=page):
        for recorded in batch:
            if is_run_stream(recorded.stream):
                run_id = run_id_of(recorded.stream)
                out.runs[run_id] = apply(out.runs.get(run_id), recorded)
                out.events += 1
        out.position = batch[-1].position
    return out


class SharedReplay:
    """One fold of the store for everything in a process that needs every run at start.

    ``cyclone up`` has three such readers (the crash recovery, the event manager's
    admission queue, the api's run views) and each folded the whole store: with 20,000
    runs that was a minute of start-up each. The first call folds the store; each later
    one folds only what was appended since, onto a copy (views are immutable, so the
    copies share them). ``forget`` drops the fold once the process has started: it must
    not hold every run's view for the process's lifetime."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._last: Replayed | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> Replayed:
        async with self._lock:
            self._last = await replay_runs(self.store, since=self._last)
            return replace(self._last, runs=dict(self._last.runs))

    def forget(self) -> None:
        self._last = None
