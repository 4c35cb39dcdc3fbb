"""MongoRunViews: the RunViews contract against a MongoDB stand-in, plus Mongo specifics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient

from shared.adapters.runviews.mongo import COLLECTION, MongoRunViews
from shared.errors import StoreError
from shared.ports.runviews import RunViews
from tests.contracts.runviews import RunViewsContract, events_of, run_ids, view_of
from tests.infra.mongo import connect_to_dead_server, mongo_database, mongo_url

__all__ = ["mongo_database", "mongo_url"]  # the fixtures this module uses

Raw = AsyncMongoClient[dict[str, object]]


class TestMongoRunViews(RunViewsContract):
    @pytest.fixture
    async def views(self, mongo_url: str, mongo_database: str) -> AsyncIterator[RunViews]:
        views = await MongoRunViews.connect(mongo_url, mongo_database)
        yield views
        await views.close()


@pytest.fixture
async def raw(mongo_url: str) -> AsyncIterator[Raw]:
    client: Raw = AsyncMongoClient(mongo_url)
    yield client
    await client.close()


@pytest.fixture
async def two(mongo_url: str,
              mongo_database: str) -> AsyncIterator[tuple[MongoRunViews, MongoRunViews]]:
    """Two clients on one database: like two api replicas."""
    one = await MongoRunViews.connect(mongo_url, mongo_database)
    other = await MongoRunViews.connect(mongo_url, mongo_database)
    yield one, other
    await one.close()
    await other.close()


def test_a_dead_server_is_a_store_error_naming_its_timeout_without_the_password() -> None:
    outcome = connect_to_dead_server("shared.adapters.runviews.mongo.MongoRunViews")

    message = str(outcome["error"])
    assert outcome["error"] is not None, "connect to a dead server did not fail"
    assert "s3cret" not in message
    assert f"mongodb://***@127.0.0.1:{outcome['port']}/" in message
    assert "no MongoDB server reachable within 0.5s" in message


async def test_connect_creates_the_query_indexes(mongo_url: str, mongo_database: str,
                                                 raw: Raw) -> None:
    for _ in range(2):  # idempotent
        views = await MongoRunViews.connect(mongo_url, mongo_database)
        await views.close()

    indexes = await raw[mongo_database][COLLECTION].index_information()
    keys = {tuple(k for k, _ in info["key"]) for info in indexes.values()}
    assert {("project", "_id"), ("status", "_id"), ("done", "project", "_id")} <= keys


async def test_replicas_share_the_views(two: tuple[MongoRunViews, MongoRunViews]) -> None:
    one, other = two
    [run] = run_ids(1)

    assert await one.put(view_of(run, status="running")) is True
    assert await other.get(run) == view_of(run, status="running")
    assert await other.put(view_of(run)) is True
    assert await one.put(view_of(run, status="running")) is False  # a late redelivery
    assert [v.id for v in await one.page()] == [run]
    assert await one.get(run) == view_of(run)


async def test_first_puts_racing_from_two_replicas_keep_the_newest(
    two: tuple[MongoRunViews, MongoRunViews],
) -> None:
    runs = run_ids(20)
    last = len(events_of(runs[0]))

    async def race(run: str) -> list[bool]:
        # Each replica puts a different first view of the run at the same moment.
        return list(await asyncio.gather(two[0].put(view_of(run, upto=2)),
                                         two[1].put(view_of(run, upto=last))))

    outcomes = await asyncio.gather(*(race(run) for run in runs))

    assert all(newest for _, newest in outcomes)  # the newer view is never refused
    assert [await two[0].get(run) for run in runs] == [view_of(run) for run in runs]


async def test_the_stored_document_has_the_query_fields_and_the_view_as_json(
    mongo_url: str, mongo_database: str, raw: Raw
) -> None:
    [run] = run_ids(1)
    views = await MongoRunViews.connect(mongo_url, mongo_database)
    try:
        await views.put(view_of(run, project="web", branch="dev", status="failure"))
    finally:
        await views.close()

    doc = await raw[mongo_database][COLLECTION].find_one({"_id": run})
    assert doc is not None
    assert {k: doc[k] for k in ("project", "branch", "status", "done", "durations")} == {
        "project": "web", "branch": "dev", "status": "failure", "done": True,
        "durations": [0.25, 1.0]}
    assert isinstance(doc["view"], str) and '"A.DOT"' in doc["view"]


async def test_a_malformed_document_is_a_store_error_naming_the_run(
    mongo_url: str, mongo_database: str, raw: Raw
) -> None:
    await raw[mongo_database][COLLECTION].insert_one(
        {"_id": "r1", "project": "web", "status": "running", "done": False, "last_seq": 1,
         "view": '{"id": "r1", "colour": "blue"}'})
    views = await MongoRunViews.connect(mongo_url, mongo_database)
    try:
        with pytest.raises(StoreError, match="malformed run view 'r1'"):
            await views.get("r1")
        with pytest.raises(StoreError, match="malformed run view 'r1'"):
            await views.unfinished("web")
    finally:
        await views.close()
