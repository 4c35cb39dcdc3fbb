"""GridFsArtifactStore: the ArtifactStore contract against the MongoDB stand-in, plus what
the GridFS collections show of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from gridfs.asynchronous import AsyncGridFSBucket
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.adapters.artifacts.gridfs import BUCKET, GridFsArtifactStore
from shared.errors import BlobNotFound
from shared.ports.artifacts import CHUNK_BYTES, ArtifactStore
from tests.contracts.artifacts import (
    ArtifactStoreContract,
    RawStorage,
    ReopenStore,
    pieces,
    sample,
)
from tests.infra.mongo import connect_to_dead_server, mongo_database, mongo_url

__all__ = ["mongo_database", "mongo_url"]  # the fixtures this module uses

Doc = dict[str, object]


class RawGridFs:
    """The bucket's documents, changed as a disk error or a person with a shell would."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.files = db[f"{BUCKET}.files"]
        self.chunks = db[f"{BUCKET}.chunks"]

    async def file_id(self, digest: str) -> object:
        doc = await self.files.find_one({"filename": digest})
        assert doc is not None, digest
        return doc["_id"]

    async def change_byte(self, digest: str, at: int) -> None:
        query = {"files_id": await self.file_id(digest), "n": at // CHUNK_BYTES}
        chunk = await self.chunks.find_one(query)
        assert chunk is not None and isinstance(chunk["data"], bytes)
        data = bytearray(chunk["data"])
        data[at % CHUNK_BYTES] ^= 0xFF
        await self.chunks.update_one(query, {"$set": {"data": bytes(data)}})

    async def truncate(self, digest: str, size: int) -> None:
        file_id = await self.file_id(digest)
        last, keep = divmod(size, CHUNK_BYTES)
        await self.chunks.delete_many({"files_id": file_id, "n": {"$gt": last}})
        if keep:
            chunk = await self.chunks.find_one({"files_id": file_id, "n": last})
            assert chunk is not None and isinstance(chunk["data"], bytes)
            await self.chunks.update_one({"files_id": file_id, "n": last},
                                         {"$set": {"data": chunk["data"][:keep]}})
        else:
            await self.chunks.delete_one({"files_id": file_id, "n": last})

    async def orphans(self) -> int:
        files = {doc["_id"] async for doc in self.files.find({}, projection={"_id": 1})}
        return len([chunk async for chunk in self.chunks.find({}, projection={"files_id": 1})
                    if chunk["files_id"] not in files])


@pytest.fixture
async def raw_db(mongo_url: str, mongo_database: str) -> AsyncIterator[AsyncDatabase[Doc]]:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(mongo_url)
    yield client[mongo_database]
    await client.close()


class TestGridFsArtifactStore(ArtifactStoreContract):
    # Not 1 GB: the stand-in keeps every document in its Java heap (-Xmx512m), so a blob
    # must fit in it with room to spare. 192 MB still streams 192 chunks each way, so
    # whatever held a chunk per chunk would show; what is measured is this process's RSS.
    BIG_BYTES = 192 * 1024 * 1024

    @pytest.fixture
    async def store(self, mongo_url: str, mongo_database: str) -> AsyncIterator[ArtifactStore]:
        store = await GridFsArtifactStore.connect(mongo_url, mongo_database)
        yield store
        await store.close()

    @pytest.fixture
    async def reopen(self, mongo_url: str, mongo_database: str) -> AsyncIterator[ReopenStore]:
        opened: list[GridFsArtifactStore] = []

        async def reopen(old: ArtifactStore) -> ArtifactStore:
            await old.close()  # "reopen": a new client on the same server and database
            opened.append(await GridFsArtifactStore.connect(mongo_url, mongo_database))
            return opened[-1]

        yield reopen
        for store in opened:
            await store.close()

    @pytest.fixture
    def raw(self, raw_db: AsyncDatabase[Doc]) -> RawStorage:
        return RawGridFs(raw_db)


@pytest.fixture
async def store(mongo_url: str, mongo_database: str) -> AsyncIterator[GridFsArtifactStore]:
    store = await GridFsArtifactStore.connect(mongo_url, mongo_database)
    yield store
    await store.close()


async def test_a_blob_is_a_gridfs_file_any_gridfs_client_reads_by_its_digest(
    store: GridFsArtifactStore, raw_db: AsyncDatabase[Doc]
) -> None:
    data = sample(2 * CHUNK_BYTES + 3)
    blob = await store.put(pieces(data))

    bucket = AsyncGridFSBucket(raw_db, BUCKET)
    download = await bucket.open_download_stream_by_name(blob.digest)
    assert await download.read() == data
    assert (download.length, download.chunk_size) == (len(data), CHUNK_BYTES)


async def test_connect_creates_the_unique_indexes(
    mongo_url: str, mongo_database: str, raw_db: AsyncDatabase[Doc]
) -> None:
    for _ in range(2):  # idempotent
        store = await GridFsArtifactStore.connect(mongo_url, mongo_database)
        await store.close()

    for collection, keys in ((f"{BUCKET}.files", ("filename",)),
                             (f"{BUCKET}.chunks", ("files_id", "n"))):
        indexes = await raw_db[collection].index_information()
        assert any(tuple(k for k, _ in info["key"]) == keys and info.get("unique")
                   for info in indexes.values()), (collection, indexes)


async def test_the_same_bytes_twice_leave_one_file_and_its_chunks(
    store: GridFsArtifactStore, raw_db: AsyncDatabase[Doc]
) -> None:
    data = sample(2 * CHUNK_BYTES + 3)
    await asyncio.gather(*(store.put(pieces(data)) for _ in range(3)))
    await store.put(pieces(data))

    assert await raw_db[f"{BUCKET}.files"].count_documents({}) == 1
    assert await raw_db[f"{BUCKET}.chunks"].count_documents({}) == 3


async def test_a_blob_deleted_while_it_is_read_is_not_found_rather_than_corrupted(
    store: GridFsArtifactStore, raw_db: AsyncDatabase[Doc]
) -> None:
    # A delete removes the files document, then the chunks: a reader that meets chunks
    # missing asks whether the blob is still there. (The stand-in's cursors keep what
    # they found, so the chunks are cut before the read, the files document during it.)
    raw = RawGridFs(raw_db)
    blob = await store.put(pieces(sample(3 * CHUNK_BYTES)))
    await raw.truncate(blob.digest, CHUNK_BYTES)
    file_id = await raw.file_id(blob.digest)

    with pytest.raises(BlobNotFound, match="deleted while it was read"):
        async for _ in store.get(blob.digest):
            await raw.files.delete_one({"_id": file_id})


def test_a_dead_server_is_a_store_error_naming_its_timeout_without_the_password() -> None:
    outcome = connect_to_dead_server("shared.adapters.artifacts.gridfs.GridFsArtifactStore")

    message = str(outcome["error"])
    assert outcome["error"] is not None, "connect to a dead server did not fail"
    assert "s3cret" not in message
    assert "no MongoDB server reachable within 0.5s" in message

