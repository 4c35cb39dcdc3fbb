"""The API's live read model of runs: ``shared.projections.runs.apply`` kept up to date
from ``cyclone.events``, rebuildable from the store at any time.

Both paths fold the same events with the same pure function, so the live model
equals a rebuilt one; redelivered events are dropped by ``(stream, seq)``.
"""

from __future__ import annotations

from shared.consume import consume
from shared.events import RecordedEvent, is_run_stream
from shared.ports.bus import TOPIC_EVENTS, Bus, Message
from shared.ports.eventstore import EventStore
from shared.projections.replay import replay_runs
from shared.projections.runs import RunView, apply, run_id_of
from shared.wire import decode_event

__all__ = ["RunsReadModel"]


class RunsReadModel:
    def __init__(self, runs: dict[str, RunView] | None = None) -> None:
        self.runs: dict[str, RunView] = runs or {}

    @classmethod
    async def rebuild(cls, store: EventStore) -> RunsReadModel:
        return cls((await replay_runs(store)).runs)

    def apply(self, recorded: RecordedEvent) -> None:
        if not is_run_stream(recorded.stream):
            return
        run_id = run_id_of(recorded.stream)
        current = self.runs.get(run_id)
        if current is not None and recorded.seq <= current.last_seq:
            return  # a redelivery: already applied
        if current is None and recorded.seq != 1:
            return  # joined mid-stream (e.g. a run from before a restart): rebuild covers it
        self.runs[run_id] = apply(current, recorded)

    async def follow(self, bus: Bus, group: str = "api-readmodel") -> None:
        async def handle(message: Message) -> None:
            self.apply(decode_event(message.value))

        await consume(bus, TOPIC_EVENTS, group, handle)
