"""The distributed artifact store: MongoDB GridFS, through PyMongo's asyncio API.

Implements ``shared.ports.artifacts.ArtifactStore``; the port's docstring is the contract.
Open with ``await GridFsArtifactStore.connect("mongodb://host/", database="cyclone")``.

Storage: the GridFS bucket ``artifacts`` (database ``database``), laid out as the GridFS
spec says, so any GridFS client (``mongofiles``, ``AsyncGridFSBucket``) reads a blob by
its digest::

    artifacts.files   {_id, filename: "sha256:<hex>", length, chunkSize, uploadDate}
                      unique (filename)
    artifacts.chunks  {files_id, n, data: CHUNK_BYTES bytes (the last: the rest)}
                      unique (files_id, n)

``put`` inserts the chunks under a fresh file id while hashing them, one insert in flight
while the next chunk is fetched and hashed, then the files document named by the
digest. That insert is the commit: a blob is visible only once every chunk is stored,
and the unique filename index makes the same bytes put twice (even at once) one blob,
the later put deleting its own chunks. A put that fails or is cancelled before its
commit deletes its chunks (after the insert in flight has ended, so none lands after
the delete); a commit runs in its own task, so a cancelled caller leaves a whole blob
or none. A process killed mid-put (or a commit whose server went away) leaves chunks no
files document names: no blob, but space used until a collector removes them (their
``files_id`` is an ObjectId, which tells when the put began).

Why not ``AsyncGridIn`` (the bucket's upload stream): the digest, the file's name, is
known only at the end, and GridIn buffers up to 48 MB of chunks per insert (another
copy while it is encoded); here memory is two chunks. ``get`` reads ``READ_BATCH``
chunks a round trip for the same reason (GridOut's cursor takes 16 MB batches), checks
their order and hashes them: ``BlobCorrupted`` when a chunk is missing, or at the end
when the bytes do not hash to the digest or fall short of the length (``BlobNotFound``
if the blob was deleted while it was read). ``delete`` is the bucket's: the files
document, then the chunks.

Durability, reads from the primary and error translation are as in
``shared.adapters.mongo`` (``MongoResource``).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
from collections.abc import AsyncIterable, AsyncIterator

from bson import Int64, ObjectId
from gridfs.asynchronous import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.adapters.artifacts import InFlight, check_digest, rechunk
from shared.adapters.mongo import Doc, Index, MongoResource
from shared.errors import BlobCorrupted, BlobNotFound, StoreError
from shared.ports.artifacts import CHUNK_BYTES, Blob

__all__ = ["BUCKET", "READ_BATCH", "GridFsArtifactStore"]

BUCKET = "artifacts"
READ_BATCH = 4  # chunks a round trip when reading
# Every files document this store writes is named "sha256:...": the range of those names.
_DIGESTS = {"filename": {"$gte": "sha256:", "$lt": "sha256;"}}


class GridFsArtifactStore(MongoResource):
    """An ``ArtifactStore`` in a GridFS bucket. Use ``await GridFsArtifactStore.connect(url)``.

    ``close`` waits for commits and clean-ups in flight and is idempotent; any call
    after it raises ``StoreError``.
    """

    KIND = "mongo artifact store"
    INDEXES = (Index(f"{BUCKET}.files", "filename", unique=True),
               Index(f"{BUCKET}.chunks", "files_id", "n", unique=True))

    def __init__(self, client: AsyncMongoClient[Doc], db: AsyncDatabase[Doc], where: str,
                 timeout_s: float) -> None:
        super().__init__(client, db, where, timeout_s)
        self._files: AsyncCollection[Doc] = db[f"{BUCKET}.files"]
        self._chunks: AsyncCollection[Doc] = db[f"{BUCKET}.chunks"]
        self._bucket = AsyncGridFSBucket(db, BUCKET, chunk_size_bytes=CHUNK_BYTES)

    # --- the port ----------------------------------------------------------------------------

    async def put(self, chunks: AsyncIterable[bytes]) -> Blob:
        self._check_open()
        file_id = ObjectId()
        inserts = InFlight()
        try:
            blob = await self._upload(file_id, chunks, inserts)
        except BaseException:
            await inserts.settle()
            with contextlib.suppress(StoreError):  # the error to raise is the first one
                await self._detached(self._discard(file_id))
            raise
        return await self._detached(self._commit(file_id, blob))

    async def get(self, digest: str) -> AsyncIterator[bytes]:
        file = await self._file(digest)
        if file is None:
            raise BlobNotFound(f"{self._where}: no blob {digest}")
        sha, size, n = hashlib.sha256(), 0, 0
        with self._errors():
            async with self._chunks.find({"files_id": file["_id"]},
                                         projection={"_id": 0, "n": 1, "data": 1},
                                         sort=[("n", 1)], batch_size=READ_BATCH) as cursor:
                async for chunk in cursor:
                    if chunk["n"] != n:
                        raise await self._corrupted(file, f"chunk #{n} is missing")
                    data = bytes(chunk["data"])
                    sha.update(data)  # about a millisecond a chunk: not worth a thread
                    size, n = size + len(data), n + 1
                    yield data
        if size != file["length"]:
            raise await self._corrupted(file, f"{size} bytes read of {file['length']}")
        if f"sha256:{sha.hexdigest()}" != digest:
            raise await self._corrupted(file, f"read sha256:{sha.hexdigest()}")

    async def stat(self, digest: str) -> Blob | None:
        file = await self._file(digest)
        return None if file is None else Blob(digest, int(file["length"]))

    async def delete(self, digest: str) -> bool:
        file = await self._file(digest)
        if file is None:
            return False
        with self._errors():
            try:
                await self._detached(self._bucket.delete(file["_id"]))
            except NoFile:  # deleted by someone else meanwhile
                return False
        return True

    async def blobs(self) -> AsyncIterator[Blob]:
        self._check_open()
        with self._errors():
            async with self._files.find(_DIGESTS, projection={"filename": 1, "length": 1},
                                        sort=[("filename", 1)]) as cursor:
                async for file in cursor:
                    yield Blob(str(file["filename"]), int(file["length"]))

    async def used_bytes(self) -> int:
        self._check_open()
        with self._errors():
            cursor = await self._files.aggregate(
                [{"$match": _DIGESTS}, {"$group": {"_id": None, "total": {"$sum": "$length"}}}])
            totals = await cursor.to_list()
        return int(totals[0]["total"]) if totals else 0

    # --- putting -------------------------------------------------------------------------------

    async def _upload(self, file_id: ObjectId, chunks: AsyncIterable[bytes],
                      inserts: InFlight) -> Blob:
        """Insert the chunks of ``chunks`` under ``file_id``; their ``Blob``."""
        sha, size, n = hashlib.sha256(), 0, 0
        async for data in rechunk(chunks, CHUNK_BYTES):
            sha.update(data)
            doc = {"files_id": file_id, "n": n, "data": data}
            with self._errors():
                await inserts.then(functools.partial(self._chunks.insert_one, doc))
            size, n = size + len(data), n + 1
        with self._errors():
            await inserts.wait()
        return Blob(f"sha256:{sha.hexdigest()}", size)

    async def _commit(self, file_id: ObjectId, blob: Blob) -> Blob:
        with self._errors():
            try:
                await self._files.insert_one({
                    "_id": file_id, "filename": blob.digest, "length": Int64(blob.size),
                    "chunkSize": CHUNK_BYTES, "uploadDate": datetime.datetime.now(datetime.UTC)})
            except DuplicateKeyError:  # stored before (or by a put racing this one)
                await self._chunks.delete_many({"files_id": file_id})
        return blob

    async def _discard(self, file_id: ObjectId) -> None:
        with self._errors():
            await self._chunks.delete_many({"files_id": file_id})

    # --- reading -------------------------------------------------------------------------------

    async def _file(self, digest: str) -> Doc | None:
        """The files document of the blob ``digest``."""
        self._check_open()
        check_digest(digest)
        with self._errors():
            return await self._files.find_one({"filename": digest},
                                              projection={"filename": 1, "length": 1})

    async def _corrupted(self, file: Doc, what: str) -> StoreError:
        """The error for a blob whose chunks do not add up: ``BlobNotFound`` when it was
        deleted while it was read, else ``BlobCorrupted``."""
        with self._errors():
            still = await self._files.find_one({"_id": file["_id"]}, projection={"_id": 1})
        if still is None:
            return BlobNotFound(f"{self._where}: blob {file['filename']} was deleted while "
                                f"it was read ({what})")
        return BlobCorrupted(f"{self._where}: blob {file['filename']} is corrupted: {what}")
