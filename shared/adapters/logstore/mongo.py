"""The distributed log store: MongoDB, through PyMongo's asyncio API.

Implements ``shared.ports.logstore.LogStore``; the port's docstring is the contract.
Open with ``await MongoLogStore.connect("mongodb://host/", database="cyclone")``.

Storage (database ``database``), one document a batch (a *chunk*)::

    log_chunks  {run, first, n, batch, groups: [group, ...]}
                unique (run, first), unique (run, batch)

``groups`` holds the chunk's lines as column groups (``shared.wire.groups_of``: job,
step, stream and attempt once per run of consecutive lines, then their stamps and
texts): a line is one string in an array, not an array of six, which BSON decodes
several times faster. Chunks stored before this format hold ``lines: [[job, step,
stream, ts, text, attempt], ...]`` instead; both are read.

A batch is stored with one insert, and read back a chunk at a time. (Until this
version a line was a document, and a batch cost five round trips: against the test
stand-in that stored ~21,000 lines/s with one writer, a chunk a batch ~110,000.)

``append`` numbers a batch after the run's last chunk: ``first`` is that chunk's
``first + n``, remembered per run by this store object and read again when another
writer got there first. The insert is the concurrency control: the unique (run, first)
index lets only one of two writers take an index (the other reads the new end and
goes after it), and the unique (run, batch) index makes a redelivered batch a no-op
that returns the index it got the first time. There is no counter and no claim, so a
writer that dies before its insert leaves nothing behind: indices have no gaps. A
batch with more than ``CHUNK_CHARS`` of text (workers ship far smaller ones) is split
into chunks ``<batch>``, ``<batch>#1``, ... inserted in order; a writer dying between
them leaves a batch whose redelivery completes it, as long as no other batch of the run
was appended meanwhile (the log server appends one run's batches in order).

``read`` finds the chunk holding ``from_index`` and streams the chunks from there,
sorted by ``first``, ``READ_BATCH`` chunks a round trip: memory is a few chunks,
whatever the log's size. Logs written by earlier versions (``log_lines``) are not read.
Durability, reads from the primary and error translation are as in
``shared.adapters.eventstore.mongo`` (whose connection helpers this uses).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.adapters.mongo import Doc, Index, MongoResource
from shared.errors import StoreError
from shared.ports.logstore import LogLine, StoredLine, numbered
from shared.wire import groups_of, lines_of_groups

__all__ = ["CHUNK_CHARS", "READ_BATCH", "MongoLogStore"]


READ_BATCH = 20  # chunks a round trip (up to 500 lines each)
CHUNK_CHARS = 4 * 1024 * 1024  # of text a chunk; a document may not exceed 16 MB
_CONFLICT_RETRIES = 100  # other writers taking the next index, one after the other


class MongoLogStore(MongoResource):
    """A ``LogStore`` in a MongoDB database. Use ``await MongoLogStore.connect(url)``.

    ``close`` waits for appends in flight and is idempotent; any call after it raises
    ``StoreError``. A cancelled ``append`` still completes (it runs in its own task).
    """

    KIND = "mongo log store"
    INDEXES = (Index("log_chunks", "run", "first", unique=True),
               Index("log_chunks", "run", "batch", unique=True))

    def __init__(self, client: AsyncMongoClient[Doc], db: AsyncDatabase[Doc], where: str,
                 timeout_s: float) -> None:
        super().__init__(client, db, where, timeout_s)
        self._chunks: AsyncCollection[Doc] = db["log_chunks"]
        self._ends: dict[str, int] = {}  # run -> its next index, as this object last saw it

    # --- the port ------------------------------------------------------------------------

    async def append(self, run_id: str, lines: Sequence[LogLine], batch_id: str) -> int:
        """Store ``lines`` after the run's lines; the index of the first of them."""
        self._check_open()
        return await self._detached(self._append(run_id, list(lines), batch_id))

    async def read(self, run_id: str, from_index: int = 0) -> AsyncIterator[StoredLine]:
        """The run's lines with index ``>= from_index``, in order, a few chunks at a time."""
        self._check_open()
        with self._errors():
            holding = await self._chunks.find_one(
                {"run": run_id, "first": {"$lte": max(from_index, 0)}},
                projection={"first": 1}, sort=[("first", DESCENDING)])
            start = int(holding["first"]) if holding is not None else 0
            async with self._chunks.find({"run": run_id, "first": {"$gte": start}},
                                         projection={"_id": 0, "first": 1, "groups": 1,
                                                     "lines": 1},
                                         sort=[("first", ASCENDING)],
                                         batch_size=READ_BATCH) as cursor:
                async for doc in cursor:
                    for stored in _lines_of(doc, self._where):
                        if stored.index >= from_index:
                            yield stored

    async def count(self, run_id: str) -> int:
        self._check_open()
        with self._errors():
            return await self._end(run_id)

    async def delete(self, run_id: str) -> None:
        """Remove the run's lines (an unknown run is fine)."""
        self._check_open()
        with self._errors():
            await self._chunks.delete_many({"run": run_id})
        self._ends.pop(run_id, None)

    # --- appending -----------------------------------------------------------------------

    async def _append(self, run: str, lines: list[LogLine], batch: str) -> int:
        with self._errors():
            parts = _split(lines, batch)
            first = await self._insert(run, *parts[0])
            for part in parts[1:]:
                await self._insert(run, *part)
            return first

    async def _insert(self, run: str, lines: list[LogLine], batch: str) -> int:
        """Insert one chunk after the run's end; its first index (the one it was stored
        at before, for a chunk stored already)."""
        for _ in range(_CONFLICT_RETRIES):
            first = self._ends.get(run)
            if first is None:
                first = await self._end(run)
            if not lines:  # nothing to number or to remember
                return first
            try:
                await self._chunks.insert_one({"run": run, "first": first, "n": len(lines),
                                               "batch": batch, "groups": groups_of(lines)})
            except DuplicateKeyError:
                stored = await self._chunks.find_one({"run": run, "batch": batch},
                                                     projection={"first": 1})
                if stored is not None:  # a redelivery: stored before, at this index
                    return int(stored["first"])
                self._ends.pop(run, None)  # another writer took ``first``: read the end again
                continue
            self._ends[run] = first + len(lines)
            return first
        raise StoreError(f"{self._where}: could not append to run {run!r}: "
                         f"{_CONFLICT_RETRIES} other appends got there first")

    async def _end(self, run: str) -> int:
        """The run's next index, read from its last chunk."""
        last = await self._chunks.find_one({"run": run}, projection={"first": 1, "n": 1},
                                           sort=[("first", DESCENDING)])
        end = 0 if last is None else int(last["first"]) + int(last["n"])
        self._ends[run] = end
        return end

    # --- helpers -------------------------------------------------------------------------


def _split(lines: list[LogLine], batch: str) -> list[tuple[list[LogLine], str]]:
    """The batch's chunks: (lines, chunk id), each up to ``CHUNK_CHARS`` of text."""
    parts: list[tuple[list[LogLine], str]] = []
    current: list[LogLine] = []
    chars = 0
    for line in lines:
        if current and chars + len(line.text) > CHUNK_CHARS:
            parts.append((current, batch if not parts else f"{batch}#{len(parts)}"))
            current, chars = [], 0
        current.append(line)
        chars += len(line.text)
    parts.append((current, batch if not parts else f"{batch}#{len(parts)}"))
    return parts


def _lines_of(doc: Doc, where: str) -> list[StoredLine]:
    try:
        first = int(doc["first"])
        if "groups" in doc:
            lines = lines_of_groups(doc["groups"], "log chunk")
        else:  # stored before column groups
            lines = [LogLine._make(raw) for raw in doc["lines"]]
        return numbered(lines, first)
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{where}: malformed log chunk: {exc}") from exc
