"""The distributed log store: MongoDB, through PyMongo's asyncio API.

Implements ``shared.ports.logstore.LogStore``; the port's docstring is the contract.
Open with ``await MongoLogStore.connect("mongodb://host/", database="cyclone")``.

Storage (database ``database``)::

    log_lines    {run, i, job, step, stream, ts, text}     unique (run, i)
    log_batches  {run, batch, first, n, done}              unique (run, batch)
    log_counters {_id: run, n}                             the run's next index

``append`` first looks for the batch (a redelivered batch stores nothing and returns
the index it got the first time), then takes ``len(lines)`` indices from the run's
counter with one ``$inc`` (so concurrent appends get disjoint, contiguous ranges),
claims the batch with its first index (the unique (run, batch) index settles a race
between two deliveries of one batch: the loser hands its range back if nothing was
taken after it), inserts the lines, and marks the batch done. A batch claimed but not
marked done (the writer died or failed mid-insert) is completed by its redelivery,
which inserts the missing lines at the claimed indices (lines already there are
duplicate keys and are skipped), so the log heals without gaps.

Caveats, without transactions (the test stand-in has none, and they would need a
replica set): a writer that dies between taking its indices and claiming the batch
leaves a gap of that many indices, and a line can be readable before the rest of its
batch is (a reader may see a batch grow). Concurrent ``append`` and ``delete`` of one
run are not ordered: delete a run once its writers are done.

``read`` streams a cursor sorted by index, ``READ_BATCH`` lines a round trip, so memory
does not grow with the log. Durability, reads from the primary and error translation
are as in ``shared.adapters.eventstore.mongo`` (whose connection helpers this uses).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.adapters.eventstore.mongo import (
    DEFAULT_TIMEOUT_S,
    mask_url,
    open_database,
    translate_errors,
)
from shared.errors import StoreError
from shared.ports.logstore import LogLine, StoredLine

__all__ = ["CLAIM_POLL_S", "CLAIM_WAIT_S", "READ_BATCH", "MongoLogStore"]

Doc = dict[str, Any]

READ_BATCH = 1000
# A delivery that finds its batch claimed but not yet numbered by another waits this
# long (polling) before numbering it itself: the other may have died after claiming.
CLAIM_WAIT_S = 10.0
CLAIM_POLL_S = 0.02
_DUPLICATE_KEY = 11000


class MongoLogStore:
    """A ``LogStore`` in a MongoDB database. Use ``await MongoLogStore.connect(url)``.

    ``close`` waits for appends in flight and is idempotent; any call after it raises
    ``StoreError``. A cancelled ``append`` still completes (it runs in its own task).
    """

    def __init__(self, client: AsyncMongoClient[Doc], db: AsyncDatabase[Doc], where: str,
                 timeout_s: float) -> None:
        self._client = client
        self._lines: AsyncCollection[Doc] = db["log_lines"]
        self._batches: AsyncCollection[Doc] = db["log_batches"]
        self._counters: AsyncCollection[Doc] = db["log_counters"]
        self._where = where
        self._timeout_s = timeout_s
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    @classmethod
    async def connect(cls, url: str, database: str | None = None,
                      timeout_s: float = DEFAULT_TIMEOUT_S) -> MongoLogStore:
        """A log store on ``database`` (default: the URL's, else "cyclone") at ``url``;
        creates the indexes (idempotent)."""
        client, db = open_database(url, database, timeout_s)
        logs = cls(client, db, f"mongo log store {mask_url(url)} db {db.name!r}", timeout_s)
        try:
            with logs._errors():
                await logs._lines.create_index([("run", ASCENDING), ("i", ASCENDING)],
                                               unique=True)
                await logs._batches.create_index([("run", ASCENDING), ("batch", ASCENDING)],
                                                 unique=True)
        except BaseException:
            await logs.close()
            raise
        return logs

    # --- the port ------------------------------------------------------------------------

    async def append(self, run_id: str, lines: Sequence[LogLine], batch_id: str) -> int:
        """Store ``lines`` after the run's lines; the index of the first of them."""
        self._check_open()
        task = asyncio.ensure_future(self._append(run_id, list(lines), batch_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def read(self, run_id: str, from_index: int = 0) -> AsyncIterator[StoredLine]:
        """The run's lines with index ``>= from_index``, in order, a batch at a time."""
        self._check_open()
        query = {"run": run_id, "i": {"$gte": from_index}}
        with self._errors():
            async with self._lines.find(query, projection={"_id": 0, "run": 0},
                                        sort=[("i", ASCENDING)],
                                        batch_size=READ_BATCH) as cursor:
                async for doc in cursor:
                    yield _decode(doc, self._where)

    async def count(self, run_id: str) -> int:
        self._check_open()
        with self._errors():
            return await self._lines.count_documents({"run": run_id})

    async def delete(self, run_id: str) -> None:
        """Remove the run's lines, batch records and counter (an unknown run is fine)."""
        self._check_open()
        with self._errors():
            await self._lines.delete_many({"run": run_id})
            await self._batches.delete_many({"run": run_id})
            await self._counters.delete_one({"_id": run_id})

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        await self._client.close()

    # --- appending -----------------------------------------------------------------------

    async def _append(self, run: str, lines: list[LogLine], batch: str) -> int:
        token = uuid.uuid4().hex
        with self._errors():
            claim = await self._batches.find_one({"run": run, "batch": batch})
            if claim is None:
                if not lines:  # nothing to number or to remember
                    counter = await self._counters.find_one({"_id": run})
                    return 0 if counter is None else int(counter["n"])
                claim = await self._claim(run, batch, token)
            deadline = time.monotonic() + CLAIM_WAIT_S
            while True:
                if claim is None:  # deleted meanwhile: an append racing a delete
                    raise StoreError(f"{self._where}: run {run!r} deleted during append")
                if claim["first"] is not None:
                    break
                stale = time.time() - float(claim["at"]) > CLAIM_WAIT_S
                if claim["owner"] == token or stale or time.monotonic() > deadline:
                    claim = await self._number(claim, len(lines), token)
                else:  # another delivery of this batch is numbering it: wait for it
                    await asyncio.sleep(CLAIM_POLL_S)
                    claim = await self._batches.find_one({"run": run, "batch": batch})
            return await self._complete(claim, lines)

    async def _claim(self, run: str, batch: str, token: str) -> Doc | None:
        """Claim ``batch`` for this append; the claim (ours, or that of a faster delivery)."""
        claim: Doc = {"run": run, "batch": batch, "owner": token, "at": time.time(),
                      "first": None, "done": False}
        try:
            await self._batches.insert_one(claim)
        except DuplicateKeyError:
            return await self._batches.find_one({"run": run, "batch": batch})
        return claim

    async def _number(self, claim: Doc, count: int, token: str) -> Doc | None:
        """Give the claimed batch its indices; the claim as it is now."""
        run, batch = claim["run"], claim["batch"]
        end = await self._take(run, count)
        taken = await self._batches.update_one(
            {"run": run, "batch": batch, "owner": claim["owner"], "first": None},
            {"$set": {"first": end - count, "owner": token}})
        if taken.modified_count != 1:
            # Numbered by someone else meanwhile: hand our range back (possible only if
            # nobody took indices after it; else it stays a gap, see the module docstring).
            await self._counters.update_one({"_id": run, "n": end}, {"$inc": {"n": -count}})
        return await self._batches.find_one({"run": run, "batch": batch})

    async def _take(self, run: str, count: int) -> int:
        """Reserve ``count`` indices of ``run``; the counter's value after (one past them)."""
        for attempt in range(3):
            try:
                doc = await self._counters.find_one_and_update(
                    {"_id": run}, {"$inc": {"n": count}}, upsert=True,
                    return_document=ReturnDocument.AFTER)
            except DuplicateKeyError:
                if attempt == 2:  # two first appends upserting at once: one retry does
                    raise
                continue
            if doc is not None:
                return int(doc["n"])
        raise StoreError(f"{self._where}: the index counter of {run!r} did not come back")

    async def _complete(self, claim: Doc, lines: list[LogLine]) -> int:
        """Make sure the claimed batch's lines are stored; its first index."""
        first = int(claim["first"])
        if claim.get("done"):
            return first
        run = claim["run"]
        docs = [{"run": run, "i": first + n, **line.to_json()} for n, line in enumerate(lines)]
        try:
            await self._lines.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            # Lines already stored by an earlier, interrupted attempt: that is the point.
            errors = exc.details.get("writeErrors", [])
            if not all(e.get("code") == _DUPLICATE_KEY for e in errors):
                raise
        await self._batches.update_one({"run": run, "batch": claim["batch"]},
                                       {"$set": {"done": True}})
        return first

    # --- helpers -------------------------------------------------------------------------

    def _errors(self) -> AbstractContextManager[None]:
        return translate_errors(self._where, self._timeout_s)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self._where} is closed")


def _decode(doc: Doc, where: str) -> StoredLine:
    try:
        return StoredLine(index=int(doc["i"]), line=LogLine.from_json(doc))
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{where}: malformed log line document: {exc}") from exc
