"""Rebuilding every run's read model from the event store (``cyclone replay``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from shared.events import is_run_stream
from shared.ports.eventstore import EventStore
from shared.projections.runs import RunView, apply, run_id_of

__all__ = ["Replayed", "replay_runs"]


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


async def replay_runs(store: EventStore, page: int = 1000) -> Replayed:
    """Every run's view, folded from the store's global order in pages."""
    out = Replayed()
    while batch := await store.read_all(out.position, limit=page):
        for recorded in batch:
            if is_run_stream(recorded.stream):
                run_id = run_id_of(recorded.stream)
                out.runs[run_id] = apply(out.runs.get(run_id), recorded)
                out.events += 1
        out.position = batch[-1].position
    return out
