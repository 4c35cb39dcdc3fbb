"""MongoLogStore: the LogStore contract against a MongoDB stand-in, plus Mongo specifics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient

from shared.adapters.logstore.mongo import MongoLogStore
from shared.errors import StoreError
from shared.ports.logstore import LogStore
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


def test_a_dead_server_is_a_quick_store_error_without_the_password() -> None:
    outcome = connect_to_dead_server("shared.adapters.logstore.mongo.MongoLogStore")

    message = str(outcome["error"])
    assert outcome["error"] is not None, "connect to a dead server did not fail"
    assert float(str(outcome["elapsed"])) < 5, f"took {outcome['elapsed']}s to fail"
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

    db = raw[mongo_database]
    for collection, keys in (("log_lines", ("run", "i")), ("log_batches", ("run", "batch"))):
        indexes = await db[collection].index_information()
        assert any(tuple(k for k, _ in info["key"]) == keys and info.get("unique")
                   for info in indexes.values()), (collection, indexes)


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
    assert after == 100  # the losers' ranges were handed back: no gap


async def test_a_batch_interrupted_mid_insert_is_completed_by_its_redelivery(
    logs: MongoLogStore, mongo_database: str, raw: AsyncMongoClient[dict[str, object]]
) -> None:
    run = run_id()
    await logs.append(run, lines_of("a", "b", "c"), batch_id="b1")
    # A writer that died after claiming b1 and inserting only some of its lines:
    db = raw[mongo_database]
    await db["log_lines"].delete_one({"run": run, "i": 1})
    await db["log_batches"].update_one({"run": run, "batch": "b1"}, {"$set": {"done": False}})

    assert await logs.append(run, lines_of("a", "b", "c"), batch_id="b1") == 0

    assert [s.line.text for s in await read_all(logs, run)] == ["a", "b", "c"]
    assert await logs.append(run, lines_of("d"), batch_id="b2") == 3


async def test_calls_after_close_are_store_errors(mongo_url: str, mongo_database: str) -> None:
    logs = await MongoLogStore.connect(mongo_url, mongo_database)
    await logs.close()
    await logs.close()

    with pytest.raises(StoreError, match="closed"):
        await logs.append(run_id(), lines_of("x"), batch_id="b1")


async def test_a_batch_claimed_by_a_writer_that_died_is_numbered_by_its_redelivery(
    logs: MongoLogStore, mongo_database: str, raw: AsyncMongoClient[dict[str, object]]
) -> None:
    run = run_id()
    await logs.append(run, lines_of("a"), batch_id="b1")
    # A writer that died right after claiming b2, before taking its indices:
    await raw[mongo_database]["log_batches"].insert_one(
        {"run": run, "batch": "b2", "owner": "dead", "at": time.time() - 3600,
         "first": None, "done": False})

    assert await logs.append(run, lines_of("b", "c"), batch_id="b2") == 1

    assert [s.line.text for s in await read_all(logs, run)] == ["a", "b", "c"]
