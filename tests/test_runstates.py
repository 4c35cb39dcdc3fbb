"""RunStates.append decides first on the view it keeps, without reading the store, and is
as correct as deciding on a fresh read: a stream that moved on meanwhile refuses the
append (then it reads on and decides again), and a decision to append nothing is made
again on a fresh read."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from shared import events as ev
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.events import NewEvent, RecordedEvent, run_stream
from shared.projections.runs import RunView
from shared.runstream import RunStates


class CountingStore(SqliteEventStore):
    reads = 0

    async def read(self, stream: str, from_seq: int = 1) -> list[RecordedEvent]:
        self.reads += 1
        return await super().read(stream, from_seq)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    opened = await CountingStore.open(tmp_path / "events.db")
    assert isinstance(opened, CountingStore)
    yield opened
    await opened.close()


REQUESTED = ev.RunRequested(project="demo", trigger="manual", branch="main", commit="",
                            pipeline_file=".cyclone.yml", pipeline="", source="/src")


def queue_checkout(run: RunView | None) -> Sequence[ev.Event]:
    """Queues the checkout once: nothing when the run has it queued already."""
    assert run is not None
    return [] if run.checkout_queued_at else [ev.CheckoutQueued()]


async def test_an_append_after_a_load_reads_nothing_more(store: CountingStore) -> None:
    runs = RunStates(store)
    await store.append(run_stream("r1"), [NewEvent(REQUESTED)], 0)
    await runs.load("r1")
    reads = store.reads

    result = await runs.append("r1", queue_checkout)

    assert [e.type for e in result.appended] == ["CheckoutQueued"]
    assert store.reads == reads


async def test_a_kept_view_behind_the_stream_decides_again_on_what_is_new(
        store: CountingStore) -> None:
    runs = RunStates(store)
    await store.append(run_stream("r1"), [NewEvent(REQUESTED)], 0)
    await runs.load("r1")
    # another writer queues the checkout: the kept view does not know
    await store.append(run_stream("r1"), [NewEvent(ev.CheckoutQueued())], 1)

    result = await runs.append("r1", queue_checkout)

    assert result.appended == []  # decided on the fresh view: queued already
    assert [r.type for r in await store.read(run_stream("r1"))] == [
        "RunRequested", "CheckoutQueued"]


async def test_nothing_to_do_on_the_kept_view_is_decided_again_on_a_fresh_read(
        store: CountingStore) -> None:
    runs = RunStates(store)
    await store.append(run_stream("r1"), [NewEvent(REQUESTED)], 0)
    await runs.load("r1")
    await store.append(run_stream("r1"), [NewEvent(ev.RunCancelled(reason="x"))], 1)

    def skip_once_cancelled(run: RunView | None) -> Sequence[ev.Event]:
        assert run is not None
        return [ev.JobSkipped(job="build", reason="cancelled")] if run.done else []

    result = await runs.append("r1", skip_once_cancelled)

    assert [e.type for e in result.appended] == ["JobSkipped"]
