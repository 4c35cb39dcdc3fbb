"""MongoLogStore: the LogStore contract against a MongoDB stand-in, plus Mongo specifics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient

from shared.adapters.logstore.mongo import MongoLogStore
from shared.errors import StoreError
from shared.ports.logstore import LogStore
from shared.wire import groups_of
from tests.contracts.logstore import LogStoreContract, ReopenLogs, lines_of, read_all, run_id
from tests.infra.mongo import connect_to_dead_server, mongo_database, mongo_url

__all__ = ["mongo_database", "mongo_url"]  # the fixtures this module uses


class TestMongoLogStore(LogStoreContract):
    @pytest.fixture
    async def logs(self, mongo_url: str, mongo_database: str) -> AsyncIterator[LogStore]:
        logs = await MongoLogStore.connect(mongo_url, mongo_database)
        yield logs
        await logs.close()

    @pytest.fixture
    async def reopen(self, mongo_url: str, mongo_database: str) -> AsyncIterator[ReopenLogs]:
        opened: list[MongoLogStore] = []

        async def reopen(old: LogStore) -> LogStore:
            await old.close()  # "reopen": a new client on the same server and database
            opened.append(await MongoLogStore.connect(mongo_url, mongo_database))
            return opened[-1]

        yield reopen
        for logs in opened:
            await logs.close()


@pytest.fixture
async def raw(mongo_url: str, mongo_database: str) -> AsyncIterator[AsyncMongoClient[dict[str, object]]]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url)
    yield client
    await client.close()


@pytest.fixture
async def logs(mongo_url: str, mongo_database: str) -> AsyncIterator[MongoLogStore]:
    logs = await MongoLogStore.connect(mongo_url, mongo_database)
    yield logs
    await logs.close()


def test_a_dead_server_is_a_store_error_naming_its_timeout_without_the_password() -> None:
    outcome = connect_to_dead_server("shared.adapters.logstore.mongo.MongoLogStore")

    message = str(outcome["error"])
    assert outcome["error"] is not None, "connect to a dead server did not fail"
    assert "s3cret" not in message
    assert f"mongodb://***@127.0.0.1:{outcome['port']}/" in message
    assert "no MongoDB server reachable within 0.5s" in message
    assert outcome["cause"] == "ServerSelectionTimeoutError"


async def test_connect_creates_the_unique_indexes(
    mongo_url: str, mongo_database: str, raw: AsyncMongoClient[dict[str, object]]
) -> None:
    for _ in range(2):  # idempotent
        logs = await MongoLogStore.connect(mongo_url, mongo_database)
        await logs.close()

    indexes = await raw[mongo_database]["log_chunks"].index_information()
    for keys in (("run", "first"), ("run", "batch")):
        assert any(tuple(k for k, _ in info["key"]) == keys and info.get("unique")
                   for info in indexes.values()), (keys, indexes)


async def test_a_batch_is_one_document(
    logs: MongoLogStore, mongo_database: str, raw: AsyncMongoClient[dict[str, object]]
) -> None:
    run = run_id()
    await logs.append(run, lines_of(*(f"l{n}" for n in range(500))), batch_id="b1")
    await logs.append(run, lines_of("next"), batch_id="b2")

    chunks = [doc async for doc in raw[mongo_database]["log_chunks"].find(
        {"run": run}, sort=[("first", 1)])]
    assert [(c["first"], c["n"], c["batch"]) for c in chunks] == [(0, 500, "b1"),
                                                                  (500, 1, "b2")]
    # the lines as column groups: one string a line
    assert chunks[1]["groups"] == groups_of(lines_of("next"))


async def test_a_chunk_stored_before_column_groups_is_read(
    logs: MongoLogStore, mongo_database: str, raw: AsyncMongoClient[dict[str, object]]
) -> None:
    run = run_id()
    older = lines_of("one", "two")
    await raw[mongo_database]["log_chunks"].insert_one(
        {"run": run, "first": 0, "n": 2, "batch": "old", "lines": [list(x) for x in older]})
    await logs.append(run, lines_of("three"), batch_id="new")

    stored = await read_all(logs, run)
    assert [(s.index, s.line) for s in stored] == list(enumerate([*older, *lines_of("three")]))


async def test_two_deliveries_of_one_batch_at_once_store_it_once(
    mongo_url: str, mongo_database: str
) -> None:
    one = await MongoLogStore.connect(mongo_url, mongo_database)
    two = await MongoLogStore.connect(mongo_url, mongo_database)
    try:
        run = run_id()
        batch = lines_of(*(f"l{n}" for n in range(100)))
        firsts = await asyncio.gather(*(
            store.append(run, batch, batch_id="b1") for store in [one, two] * 5))
        after = await one.append(run, lines_of("next"), batch_id="b2")
        texts = [s.line.text for s in await read_all(two, run)]
    finally:
        await one.close()
        await two.close()

    assert set(firsts) == {0}
    assert texts == [f"l{n}" for n in range(100)] + ["next"]
    assert after == 100  # no gap


async def test_two_writers_appending_at_once_get_contiguous_ranges(
    mongo_url: str, mongo_database: str
) -> None:
    # Two log server replicas during a rebalance: each with its own idea of the run's end.
    one = await MongoLogStore.connect(mongo_url, mongo_database)
    two = await MongoLogStore.connect(mongo_url, mongo_database)
    try:
        run = run_id()
        await one.append(run, lines_of("a"), batch_id="first")
        await two.append(run, lines_of("b"), batch_id="second")  # one's end is stale now
        firsts = await asyncio.gather(*(
            store.append(run, lines_of(f"{i}-x", f"{i}-y"), batch_id=f"b{i}")
            for i, store in enumerate([one, two] * 10)))
        stored = await read_all(one, run)
    finally:
        await one.close()
        await two.close()

    assert sorted(firsts) == list(range(2, 42, 2))
    assert [s.index for s in stored] == list(range(42))
    by_batch = {s.line.text.split("-")[0]: s.index for s in stored if "-x" in s.line.text}
    assert all(by_batch[str(i)] == first for i, first in enumerate(firsts))


async def test_a_batch_larger_than_a_chunk_is_split_and_read_back_whole(
    logs: MongoLogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.adapters.logstore.mongo.CHUNK_CHARS", 10)
    run = run_id()
    texts = [f"line {n:03}" for n in range(7)]  # 8 characters each: one a chunk
    assert await logs.append(run, lines_of(*texts), batch_id="big") == 0
    assert await logs.append(run, lines_of(*texts), batch_id="big") == 0  # redelivered
    assert await logs.append(run, lines_of("after"), batch_id="next") == 7

    assert [s.line.text for s in await read_all(logs, run)] == [*texts, "after"]
    assert [s.line.text for s in await read_all(logs, run, 5)] == [*texts[5:], "after"]


async def test_calls_after_close_are_store_errors(mongo_url: str, mongo_database: str) -> None:
    logs = await MongoLogStore.connect(mongo_url, mongo_database)
    await logs.close()
    await logs.close()

    with pytest.raises(StoreError, match="closed"):
        await logs.append(run_id(), lines_of("x"), batch_id="b1")
