"""SqliteEventStore: the EventStore contract, plus what is particular to one shared file."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.eventstore.sqlite import SqliteEventStore
from shared.audit import canonical_json
from shared.audit_verify import FindingKind, verify_store
from shared.errors import ConcurrencyConflict, StoreError
from shared.events import JobQueued, NewEvent, RecordedEvent
from shared.ports.eventstore import EventStore
from tests.contracts.eventstore import EventStoreContract, Reopen, Tamper, jobs, unique


class SqliteTamper:
    """``Tamper`` with the sqlite3 module on the store's file, as anyone with the file can."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def set_data(self, stream: str, seq: int, data: dict[str, Any]) -> None:
        self._write("UPDATE events SET data = ? WHERE stream = ? AND seq = ?",
                    canonical_json(data), stream, seq)

    async def delete(self, stream: str, seq: int) -> None:
        self._write("DELETE FROM events WHERE stream = ? AND seq = ?", stream, seq)

    async def renumber(self, stream: str, seq: int, new_seq: int) -> None:
        self._write("UPDATE events SET seq = ? WHERE stream = ? AND seq = ?", new_seq, stream, seq)

    async def insert(self, event: RecordedEvent) -> None:
        self._write("INSERT INTO events (id, stream, seq, type, version, ts, data, meta, hash,"
                    " prev_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    event.id, event.stream, event.seq, event.type, event.version, event.ts,
                    json.dumps(event.data), json.dumps(event.meta), event.hash, event.prev_hash)

    def _write(self, sql: str, *args: object) -> None:
        assert self.conn.execute(sql, args).rowcount == 1, (sql, args)


class TestSqliteEventStore(EventStoreContract):
    @pytest.fixture
    def db_path(self, tmp_path: Path) -> Path:
        return tmp_path / "state" / "events.db"  # a directory that open() must create

    @pytest.fixture
    async def store(self, db_path: Path) -> AsyncIterator[EventStore]:
        store = await SqliteEventStore.open(db_path)
        yield store
        await store.close()

    @pytest.fixture
    async def reopen(self, db_path: Path) -> AsyncIterator[Reopen]:
        opened: list[SqliteEventStore] = []

        async def reopen(old: EventStore) -> EventStore:
            await old.close()
            opened.append(await SqliteEventStore.open(db_path))
            return opened[-1]

        yield reopen
        for store in opened:
            await store.close()

    @pytest.fixture
    def tamper(self, db_path: Path, store: EventStore) -> Iterator[Tamper]:
        conn = sqlite3.connect(db_path, isolation_level=None)  # the store made the file
        yield SqliteTamper(conn)
        conn.close()


@pytest.fixture
async def two_stores(tmp_path: Path) -> AsyncIterator[tuple[SqliteEventStore, SqliteEventStore]]:
    """Two store objects on one file, each with its own connection: like two processes."""
    first = await SqliteEventStore.open(tmp_path / "events.db")
    second = await SqliteEventStore.open(tmp_path / "events.db")
    yield first, second
    await first.close()
    await second.close()


async def test_two_stores_on_one_file_see_each_others_appends(
    two_stores: tuple[SqliteEventStore, SqliteEventStore],
) -> None:
    one, two = two_stores
    stream = unique("run")
    written = await one.append(stream, jobs("a"), expected_seq=0)

    assert await two.read(stream) == written
    with pytest.raises(ConcurrencyConflict) as caught:
        await two.append(stream, jobs("stale"), expected_seq=0)
    assert caught.value.actual_seq == 1

    await two.append(stream, jobs("b"), expected_seq=1)
    assert [e.data["job"] for e in await one.read(stream)] == ["a", "b"]
    assert await one.last_position() == await two.last_position()
    await one.save_checkpoint("relay", 2)
    assert await two.checkpoint("relay") == 2


async def test_two_stores_racing_on_one_stream_one_wins(
    two_stores: tuple[SqliteEventStore, SqliteEventStore],
) -> None:
    one, two = two_stores
    stream = unique("run")
    attempts = [
        store.append(stream, jobs(f"{n}-a", f"{n}-b"), expected_seq=0)
        for n, store in enumerate([one, two] * 10)
    ]

    results = await asyncio.gather(*attempts, return_exceptions=True)

    winners = [r for r in results if isinstance(r, list)]
    assert len(winners) == 1
    assert all(isinstance(r, ConcurrencyConflict) for r in results if r is not winners[0])
    assert await one.read(stream) == await two.read(stream) == winners[0]


async def test_positions_interleave_in_commit_order_across_stores(
    two_stores: tuple[SqliteEventStore, SqliteEventStore],
) -> None:
    one, two = two_stores
    a, b = unique("run"), unique("run")
    for n in range(5):
        await one.append(a, jobs(f"a{n}"), expected_seq=n)
        await two.append(b, jobs(f"b{n}"), expected_seq=n)

    events = await two.read_all(0)

    assert [e.data["job"] for e in events] == [x for n in range(5) for x in (f"a{n}", f"b{n}")]


async def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"this is not sqlite, just some text that is long enough " * 100)

    with pytest.raises(StoreError) as caught:
        await SqliteEventStore.open(path)

    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


async def test_calls_after_close_are_store_errors(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db")
    await store.close()
    await store.close()  # idempotent

    with pytest.raises(StoreError, match="closed"):
        await store.append("run-x", [NewEvent(JobQueued(job="a"))], expected_seq=0)


async def test_another_process_holding_the_write_lock(tmp_path: Path) -> None:
    """Readers are not blocked by a writer elsewhere; an append waits for the lock."""
    path = tmp_path / "events.db"
    store = await SqliteEventStore.open(path)
    stream = unique("run")
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await store.append(stream, jobs("a"), expected_seq=0)
        other.execute("BEGIN IMMEDIATE")  # another process in the middle of an append
        assert [e.seq for e in await store.read(stream)] == [1]
        waiting = asyncio.ensure_future(store.append(stream, jobs("b"), expected_seq=1))
        done, _ = await asyncio.wait([waiting], timeout=0.3)
        assert not done, "append should wait for the lock, not fail"
        other.execute("ROLLBACK")
        assert [e.seq for e in await waiting] == [2]
    finally:
        other.close()
        await store.close()


async def test_a_file_from_before_the_audit_chain_is_upgraded_and_chained_on(
        tmp_path: Path) -> None:
    """Its events keep no hash (reported as unchained, not as tampering); new ones chain."""
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as old:
        old.executescript("""
            CREATE TABLE events (position INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE, stream TEXT NOT NULL, seq INTEGER NOT NULL,
                type TEXT NOT NULL, version INTEGER NOT NULL, ts TEXT NOT NULL,
                data TEXT NOT NULL, meta TEXT NOT NULL, UNIQUE (stream, seq));
            INSERT INTO events (id, stream, seq, type, version, ts, data, meta) VALUES
                ('old-1', 'run-old', 1, 'JobQueued', 1, '2025-01-01T00:00:00+00:00',
                 '{"job":"a"}', '{}');
        """)
    store = await SqliteEventStore.open(path)
    try:
        [legacy] = await store.read("run-old")
        assert (legacy.hash, legacy.prev_hash) == ("", "")
        [new] = await store.append("run-old", jobs("b"), expected_seq=1)
        assert new.prev_hash == "" and new.hash

        report = await verify_store(store, ["run-old"])

        assert [(f.kind, f.seq) for f in report.findings] == [(FindingKind.UNCHAINED, 1)]
        assert not report.tampered
    finally:
        await store.close()
