"""``SharedReplay``: the fold of every run a process's start-up readers share. Each reader
gets every run as the store holds it when it asks, in a dict of its own; the store is
read once from the start, then only from where the last reader stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared import events as ev
from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.events import NewEvent, RecordedEvent, run_stream
from shared.projections.replay import SharedReplay, replay_runs


class CountingStore(SqliteEventStore):
    """The SQLite store, counting the events ``read_all`` hands out."""

    read_events = 0

    async def read_all(self, from_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        batch = await super().read_all(from_position, limit)
        self.read_events += len(batch)
        return batch


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    opened = await SqliteEventStore.open(tmp_path / "events.db")
    yield opened
    await opened.close()


async def add_run(store: SqliteEventStore, run_id: str, ended: bool = True) -> None:
    events = [NewEvent(ev.RunRequested(project="p", trigger="push", branch="main",
                                       commit="abc", pipeline_file=".cyclone.yml",
                                       pipeline="", source="git://x"))]
    if ended:
        events.append(NewEvent(ev.RunSucceeded()))
    await store.append(run_stream(run_id), events, 0)


async def test_each_reader_gets_every_run_as_the_store_holds_it_then(
        store: SqliteEventStore) -> None:
    for n in range(3):
        await add_run(store, f"r{n}")
    shared = SharedReplay(store)

    first = await shared()
    await add_run(store, "late", ended=False)
    second = await shared()

    assert sorted(first.runs) == ["r0", "r1", "r2"]
    assert sorted(second.runs) == ["late", "r0", "r1", "r2"]
    assert second.runs == (await replay_runs(store)).runs  # what a replay of its own gives
    assert not second.runs["late"].done and second.runs["r0"].done


async def test_a_reader_changing_its_runs_does_not_change_the_next_readers(
        store: SqliteEventStore) -> None:
    await add_run(store, "r0")
    shared = SharedReplay(store)

    (await shared()).runs.clear()  # e.g. MemoryRunViews puts into the dict it is given

    assert list((await shared()).runs) == ["r0"]


async def test_the_store_is_read_once_then_only_what_was_appended(tmp_path: Path) -> None:
    counting = await CountingStore.open(tmp_path / "events.db")
    assert isinstance(counting, CountingStore)
    try:
        for n in range(5):
            await add_run(counting, f"r{n}")
        shared = SharedReplay(counting)

        await shared()
        await shared()
        assert counting.read_events == 10  # five runs of two events, read once
        await add_run(counting, "r5")
        await shared()
        assert counting.read_events == 12

        shared.forget()  # started: the next reader (none, in a server) folds it all again
        await shared()
        assert counting.read_events == 24
    finally:
        await counting.close()
