"""MongoEventStore: the EventStore contract against a MongoDB stand-in, plus Mongo specifics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from shared.adapters.eventstore.mongo import MongoEventStore
from shared.adapters.mongo import mask_url
from shared.audit import canonical_json
from shared.audit_verify import FindingKind, verify_store
from shared.errors import ConcurrencyConflict, StoreError
from shared.events import RecordedEvent
from shared.ports.eventstore import EventStore
from tests.contracts.eventstore import EventStoreContract, Reopen, Tamper, jobs, unique
from tests.infra.mongo import connect_to_dead_server, mongo_database, mongo_url

__all__ = ["mongo_database", "mongo_url"]  # the fixtures this module uses


class TestMongoEventStore(EventStoreContract):
    @pytest.fixture
    async def store(self, mongo_url: str, mongo_database: str) -> AsyncIterator[EventStore]:
        store = await MongoEventStore.connect(mongo_url, mongo_database)
        yield store
        await store.close()

    @pytest.fixture
    async def reopen(self, mongo_url: str, mongo_database: str) -> AsyncIterator[Reopen]:
        opened: list[MongoEventStore] = []

        async def reopen(old: EventStore) -> EventStore:
            await old.close()  # "reopen": a new client on the same server and database
            opened.append(await MongoEventStore.connect(mongo_url, mongo_database))
            return opened[-1]

        yield reopen
        for store in opened:
            await store.close()

    @pytest.fixture
    async def tamper(self, mongo_url: str, mongo_database: str) -> AsyncIterator[Tamper]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
        yield MongoTamper(client, mongo_database)
        await client.close()


class MongoTamper:
    """``Tamper`` with PyMongo on the store's database, as anyone with its URL can."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self.events = client[database]["events"]

    async def set_data(self, stream: str, seq: int, data: dict[str, Any]) -> None:
        await self._one(self.events.update_one(
            {"stream": stream, "seq": seq}, {"$set": {"data": canonical_json(data)}}))

    async def delete(self, stream: str, seq: int) -> None:
        result = await self.events.delete_one({"stream": stream, "seq": seq})
        assert result.deleted_count == 1

    async def renumber(self, stream: str, seq: int, new_seq: int) -> None:
        await self._one(self.events.update_one(
            {"stream": stream, "seq": seq}, {"$set": {"seq": new_seq}}))

    async def insert(self, event: RecordedEvent) -> None:
        last = await self.events.find_one({}, sort=[("_id", -1)])
        await self.events.insert_one({
            "_id": int(last["_id"]) + 1 if last else 1, "id": event.id, "stream": event.stream,
            "seq": event.seq, "type": event.type, "version": event.version, "ts": event.ts,
            "data": canonical_json(event.data), "meta": canonical_json(event.meta),
            "hash": event.hash, "prev_hash": event.prev_hash})

    @staticmethod
    async def _one(update: Any) -> None:
        assert (await update).modified_count == 1


@pytest.fixture
async def two_stores(
    mongo_url: str, mongo_database: str
) -> AsyncIterator[tuple[MongoEventStore, MongoEventStore]]:
    """Two stores with their own clients on one database: like two processes."""
    first = await MongoEventStore.connect(mongo_url, mongo_database)
    second = await MongoEventStore.connect(mongo_url, mongo_database)
    yield first, second
    await first.close()
    await second.close()


def test_a_dead_server_is_a_store_error_naming_its_timeout_without_the_password() -> None:
    outcome = connect_to_dead_server("shared.adapters.eventstore.mongo.MongoEventStore")

    message = str(outcome["error"])
    assert outcome["error"] is not None, "connect to a dead server did not fail"
    assert "s3cret" not in message
    assert f"mongodb://***@127.0.0.1:{outcome['port']}/" in message
    assert "no MongoDB server reachable within 0.5s" in message
    assert outcome["cause"] == "ServerSelectionTimeoutError"


def test_mask_url_hides_user_and_password() -> None:
    assert mask_url("mongodb://u:p@h1:1,h2:2/db?x=1") == "mongodb://***@h1:1,h2:2/db?x=1"
    assert mask_url("mongodb://h:27017/") == "mongodb://h:27017/"


async def test_a_url_that_is_not_mongodb_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="mongodb://"):
        await MongoEventStore.connect("postgres://u:p@h/db")


async def test_connect_creates_the_unique_indexes_idempotently(
    mongo_url: str, mongo_database: str
) -> None:
    for _ in range(2):  # a second connect finds them and changes nothing
        store = await MongoEventStore.connect(mongo_url, mongo_database)
        await store.close()

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url)
    try:
        indexes = await client[mongo_database]["events"].index_information()
    finally:
        await client.close()
    unique_keys = {tuple(k for k, _ in info["key"]) for info in indexes.values()
                   if info.get("unique")}
    assert {("stream", "seq"), ("id",)} <= unique_keys


async def test_two_clients_racing_on_one_stream_one_wins(
    two_stores: tuple[MongoEventStore, MongoEventStore],
) -> None:
    one, two = two_stores
    stream = unique("run")
    attempts = [store.append(stream, jobs(f"{n}-a", f"{n}-b"), expected_seq=0)
                for n, store in enumerate([one, two] * 10)]

    results = await asyncio.gather(*attempts, return_exceptions=True)

    winners = [r for r in results if isinstance(r, list)]
    assert len(winners) == 1, results
    assert all(isinstance(r, ConcurrencyConflict) for r in results if r is not winners[0])
    assert await one.read(stream) == await two.read(stream) == winners[0]


async def test_many_clients_appending_at_once_get_distinct_positions_and_lose_nothing(
    two_stores: tuple[MongoEventStore, MongoEventStore],
) -> None:
    # Found by the cluster test: a stand-in reply that was not the counter's value as
    # of the update gave two appends one position, and the loser's undo deleted the
    # winner's event.
    one, two = two_stores
    streams = [unique("run") for _ in range(60)]
    appended = await asyncio.gather(*(
        store.append(stream, jobs(f"{stream}-a"), expected_seq=0)
        for stream, store in zip(streams, [one, two] * 30, strict=True)))

    positions = [recorded[0].position for recorded in appended]
    assert len(set(positions)) == len(positions)
    for stream, recorded in zip(streams, appended, strict=True):
        assert await one.read(stream) == recorded


async def test_read_all_never_skips_an_append_still_in_flight(
    two_stores: tuple[MongoEventStore, MongoEventStore], mongo_url: str, mongo_database: str
) -> None:
    """Positions taken by an unfinished append hold read_all back until it finishes."""
    one, two = two_stores
    start = await two.last_position()
    early, late = unique("run"), unique("run")
    # An append that registered and took its position, then stalled before inserting:
    # simulated by writing its registration and counter step by hand.
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url)
    db = client[mongo_database]
    try:
        await db["appending"].insert_one(
            {"_id": "stalled", "floor": start, "until": time.time() + 60})
        await db["counters"].update_one({"_id": "events"}, {"$inc": {"n": 1}}, upsert=True)

        await one.append(late, jobs("late"), expected_seq=0)  # commits first, bigger position

        assert [e for e in await two.read_all(start) if e.stream == late] == []
        assert await two.last_position() <= start
        await db["appending"].delete_one({"_id": "stalled"})  # the stalled append ends
    finally:
        await client.close()

    await one.append(early, jobs("early"), expected_seq=0)
    shown = [e.stream for e in await two.read_all(start)]
    assert shown == [late, early]


async def test_appends_racing_for_one_event_id_leave_only_the_winner(
    two_stores: tuple[MongoEventStore, MongoEventStore],
) -> None:
    """The shared id is second in each batch: a loser that passed the id check fails in
    mid-batch, and its first event must be taken back (and hold no position forever)."""
    one, two = two_stores
    start = await two.last_position()
    shared = jobs("shared")[0]
    streams = [unique("run") for _ in range(10)]
    attempts = [store.append(stream, [*jobs(f"{n}-own"), shared], expected_seq=0)
                for n, (store, stream) in enumerate(zip([one, two] * 5, streams, strict=True))]

    results = await asyncio.gather(*attempts, return_exceptions=True)

    winners = [r for r in results if isinstance(r, list)]
    assert len(winners) == 1, results
    assert all(isinstance(r, ConcurrencyConflict) for r in results if r is not winners[0])
    stored = {s: await two.read(s) for s in streams}
    assert [s for s, events in stored.items() if events] == [winners[0][0].stream]
    after = await one.append(unique("run"), jobs("after"), expected_seq=0)
    assert [e.id for e in await two.read_all(start)] == [
        *(e.id for e in winners[0]), after[0].id]


async def test_calls_after_close_are_store_errors(mongo_url: str, mongo_database: str) -> None:
    store = await MongoEventStore.connect(mongo_url, mongo_database)
    await store.close()
    await store.close()  # idempotent

    with pytest.raises(StoreError, match="closed"):
        await store.read(unique("run"))



async def test_events_from_before_the_audit_chain_are_unchained_and_chained_on(
        mongo_url: str, mongo_database: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    db = client[mongo_database]
    try:  # an event as a Cyclone before the chain stored it: no hash, no prev_hash
        await db["events"].insert_one({
            "_id": 1, "id": "old-1", "stream": "run-old", "seq": 1, "type": "JobQueued",
            "version": 1, "ts": "2025-01-01T00:00:00+00:00", "data": '{"job":"a"}',
            "meta": "{}"})
        await db["counters"].update_one({"_id": "events"}, {"$set": {"n": 1}}, upsert=True)
    finally:
        await client.close()
    store = await MongoEventStore.connect(mongo_url, mongo_database)
    try:
        [new] = await store.append("run-old", jobs("b"), expected_seq=1)
        assert new.prev_hash == "" and new.hash

        report = await verify_store(store, ["run-old"])

        assert [(f.kind, f.seq) for f in report.findings] == [(FindingKind.UNCHAINED, 1)]
        assert not report.tampered
    finally:
        await store.close()
