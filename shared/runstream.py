"""Reading a run's state and appending to its stream under optimistic concurrency.

Every writer of a run stream (the event manager deciding, a worker reporting, the
API requesting a cancel) goes through ``append_to_run``: it folds the stream to
its current ``RunView``, asks ``decide`` what to append given that state, and
appends with the state's last seq as the expected seq. A concurrent writer makes
the append fail with ``ConcurrencyConflict``; we then decide again from fresh
state, so nothing is ever overwritten and no decision is made on stale state.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence

from shared.errors import ConcurrencyConflict, StoreError
from shared.events import Event, NewEvent, RecordedEvent, run_stream
from shared.ports.eventstore import EventStore
from shared.projections.runs import RunView, fold

__all__ = ["AppendResult", "append_to_run", "load_run", "new_run_id"]

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


async def append_to_run(
    store: EventStore, run_id: str, decide: Decide, attempts: int = 50
) -> AppendResult:
    """Append what ``decide(state)`` returns, retrying on concurrent appends."""
    stream = run_stream(run_id)
    for _ in range(attempts):
        run = await load_run(store, run_id)
        new = list(decide(run))
        if not new:
            return AppendResult(run, [])
        expected = run.last_seq if run else 0
        try:
            recorded = await store.append(stream, [NewEvent(e) for e in new], expected)
        except ConcurrencyConflict:
            log.debug("append conflict, deciding again", extra={"run": run_id})
            continue
        return AppendResult(run, recorded)
    raise StoreError(f"run {run_id}: gave up after {attempts} concurrent-append conflicts")
