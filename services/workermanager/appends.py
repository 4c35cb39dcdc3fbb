"""Appending a worker's events to a run through blips of the event store.

``append_retrying(runs, run_id, decide)`` is ``RunStates.append`` retried with backoff
while the store fails with a transient ``StoreError`` (``shared.retry``). An append
that failed may still have been written (the store wrote it, then the connection
broke before the answer): before trying again, the stream is read after the state
the failed try decided on, and if the same events are there they are taken as
appended, so no event is written twice.
"""

from __future__ import annotations

import functools
import logging

from shared import events as ev
from shared.events import decode, run_stream
from shared.ports.eventstore import EventStore
from shared.projections.runs import RunView
from shared.retry import Backoff, is_transient, retrying
from shared.runstream import AppendResult, Decide, RunStates

__all__ = ["append_retrying"]

log = logging.getLogger(__name__)

async def append_retrying(runs: RunStates, run_id: str, decide: Decide) -> AppendResult:
    """``RunStates.append`` through store blips, never writing the same events twice."""
    backoff = Backoff()
    tried: list[tuple[RunView | None, list[ev.Event]]] = []  # what each try decided

    def deciding(run: RunView | None) -> list[ev.Event]:
        events = list(decide(run))
        tried.append((run, events))
        return events

    while True:
        tried.clear()
        try:
            return await runs.append(run_id, deciding)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("cannot append to the run; retrying",
                        extra={"run": run_id, "error": str(exc)})
        await backoff.wait()
        if tried and tried[-1][1]:
            check = functools.partial(_landed, runs.store, run_id, *tried[-1])
            landed = await retrying(check, "check whether a failed append was written")
            if landed is not None:
                return landed


async def _landed(store: EventStore, run_id: str, run: RunView | None,
                  events: list[ev.Event]) -> AppendResult | None:
    """The append of ``events`` decided on ``run``, if it is in the stream after all."""
    after = run.last_seq if run else 0
    found = (await store.read(run_stream(run_id), after + 1))[:len(events)]
    if len(found) == len(events) and [decode(r) for r in found] == events:
        return AppendResult(run, found)
    return None
