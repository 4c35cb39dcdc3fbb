"""The distributed event store: MongoDB, through PyMongo's asyncio API.

Implements ``shared.ports.eventstore.EventStore``; the port's docstring is the contract.
Open with ``await MongoEventStore.connect("mongodb://host/", database="cyclone")``.

Storage (database ``database``)::

    events     {_id: position, id, stream, seq, type, version, ts, data: JSON, meta: JSON,
                hash, prev_hash}
               unique (stream, seq), unique id
    counters   {_id: "events", n}             the last position handed out
    appending  {_id: token, floor, until}     appends in flight (see "Global order")
    checkpoints {_id: name, position}

``data`` and ``meta`` are stored as JSON text, exactly as the SQLite twin stores them:
field names with ``.`` or ``$`` (environment variables, user keys) need no escaping and
what ``read`` returns equals what ``append`` returned. ``hash`` and ``prev_hash`` are the
audit chain (``shared.audit``), linked to the stream's last event as read by the seq
check; the unique (stream, seq) index that makes one of racing appends win also makes
the chain it extends the one stored. Events stored before the chain have neither field.

No transactions. They need a replica set (and the test stand-in has no sessions), so
an append is: check the stream's last seq, check the ids are new, take positions from
the counter, one ordered ``insert_many``. The unique index on (stream, seq) is the
real concurrency control: of racing appenders with one expected seq, exactly one
inserts the first event, the others fail on that very document (ordered insert) and
write nothing. A duplicate event id is refused by the pre-check; only an id racing in
from another append at the same moment can fail in mid-batch, and then the events
already inserted are deleted again before the append fails (``read`` of that stream
can see them during those milliseconds; ``read_all`` cannot, see below).

Global order. Positions come from ``$inc`` on a counter, so an append can get smaller
positions than an append that commits before it; a reader that has passed the larger
ones would skip the smaller ones forever. To prevent that, an append first registers
itself in ``appending`` with a *floor* (the counter value it saw before taking its
positions, so every position it gets is above the floor), and removes itself once its
insert has finished or failed. ``read_all`` and ``last_position`` read the counter
``c`` and then the registrations, and only show positions ``<= min(c, floors)``: any
event at or below that mark was allocated before ``c`` was read, so its append was
registered then and, being no longer registered, has finished. Gaps (positions of
failed appends) are normal. Caveats:

* a registration is a lease of ``APPEND_LEASE_S``; an append older than that is
  abandoned (``StoreError`` before inserting), and a process that dies mid-append holds
  ``read_all`` back until its lease expires. Leases use the writers' and readers'
  wall clocks: keep them within a few seconds of each other (NTP).
* an append whose insert outlives its lease (a stall of minutes inside
  ``insert_many``) could commit below a mark a reader has already passed.

Durability: writes use write concern ``majority`` with journaling, reads go to the
primary, so an ``append`` that returned survives a crash of the server (and, on a
replica set, a failover). A network error during ``append`` leaves its outcome unknown:
re-read the stream. A cancelled ``append`` still completes (it runs in its own task).

Errors: every PyMongo error becomes ``StoreError`` (``ConcurrencyConflict`` for a
duplicate key), chained with ``from``; messages name the URL without its password.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.adapters.mongo import Doc, Index, MongoResource
from shared.audit import GENESIS, canonical_json, event_hash
from shared.errors import ConcurrencyConflict, StoreError
from shared.events import NewEvent, RecordedEvent

__all__ = ["APPEND_LEASE_S", "MongoEventStore"]

T = TypeVar("T")

# How long an append may take between registering and finishing its insert.
APPEND_LEASE_S = 60.0
_DUPLICATE_KEY = 11000


class MongoEventStore(MongoResource):
    """An ``EventStore`` in a MongoDB database. Use ``await MongoEventStore.connect(url)``.

    ``close`` waits for appends in flight and is idempotent; any call after it raises
    ``StoreError``.
    """

    KIND = "mongo event store"
    INDEXES = (Index("events", "stream", "seq", unique=True), Index("events", "id", unique=True))

    def __init__(self, client: AsyncMongoClient[Doc], db: AsyncDatabase[Doc], where: str,
                 timeout_s: float) -> None:
        super().__init__(client, db, where, timeout_s)
        self._events: AsyncCollection[Doc] = db["events"]
        self._counters: AsyncCollection[Doc] = db["counters"]
        self._appending: AsyncCollection[Doc] = db["appending"]
        self._checkpoints: AsyncCollection[Doc] = db["checkpoints"]

    # --- the port ------------------------------------------------------------------------

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_seq: int
    ) -> list[RecordedEvent]:
        self._check_open()
        # Its own task: a cancelled caller must not leave a registration or half a batch.
        return await self._detached(self._append(stream, list(events), expected_seq))

    async def read(self, stream: str, from_seq: int = 1) -> list[RecordedEvent]:
        self._check_open()
        query = {"stream": stream, "seq": {"$gte": from_seq}}
        return await self._find(query, [("stream", ASCENDING), ("seq", ASCENDING)])

    async def read_last(self, stream: str, count: int) -> list[RecordedEvent]:
        self._check_open()
        if count <= 0:
            return []  # a limit of 0 is "no limit" to MongoDB
        newest_first = await self._find({"stream": stream},
                                        [("stream", ASCENDING), ("seq", DESCENDING)], count)
        return newest_first[::-1]

    async def read_all(self, from_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        self._check_open()
        if limit <= 0:
            return []
        mark = await self._visible_mark()
        query = {"_id": {"$gt": from_position, "$lte": mark}}
        return await self._find(query, [("_id", ASCENDING)], limit)

    async def last_position(self) -> int:
        """The largest position ``read_all`` can show now (0 for an empty store)."""
        self._check_open()
        mark = await self._visible_mark()
        with self._errors():
            doc = await self._events.find_one(
                {"_id": {"$lte": mark}}, projection={"_id": 1}, sort=[("_id", DESCENDING)])
        return 0 if doc is None else int(doc["_id"])

    async def streams(self, prefix: str = "") -> list[str]:
        """Stream names starting with ``prefix`` (case-sensitive), sorted."""
        self._check_open()
        pipeline: list[Doc] = [
            {"$match": {"stream": {"$regex": "^" + re.escape(prefix)}}},
            {"$group": {"_id": "$stream"}},
            {"$sort": {"_id": 1}},
        ]
        with self._errors():
            cursor = await self._events.aggregate(pipeline)
            return [str(doc["_id"]) async for doc in cursor]

    async def checkpoint(self, name: str) -> int:
        """The position saved under ``name``; 0 if none was saved."""
        self._check_open()
        with self._errors():
            doc = await self._checkpoints.find_one({"_id": name})
        return 0 if doc is None else int(doc["position"])

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save ``position`` under ``name`` (overwrites; a reset may move it back)."""
        self._check_open()
        await self._retry_upsert(lambda: self._checkpoints.update_one(
            {"_id": name}, {"$set": {"position": position}}, upsert=True))

    # --- appending -----------------------------------------------------------------------

    async def _append(
        self, stream: str, events: list[NewEvent], expected_seq: int
    ) -> list[RecordedEvent]:
        ids = [new.id for new in events]
        if len(set(ids)) != len(ids):
            raise ConcurrencyConflict(stream, expected_seq)
        with self._errors():
            last = await self._events.find_one(
                {"stream": stream}, projection={"seq": 1, "hash": 1}, sort=[("seq", DESCENDING)])
            actual = 0 if last is None else int(last["seq"])
            prev_hash = GENESIS if last is None else str(last.get("hash") or "")
            if actual != expected_seq:
                raise ConcurrencyConflict(stream, expected_seq, actual)
            if not events:
                return []
            if await self._events.find_one({"id": {"$in": ids}}, projection={"_id": 1}):
                raise ConcurrencyConflict(stream, expected_seq, actual)
        token = uuid.uuid4().hex
        until = await self._register(token)
        try:
            return await self._insert(stream, events, expected_seq, prev_hash, until)
        finally:
            with self._errors():
                await self._appending.delete_one({"_id": token})

    async def _register(self, token: str) -> float:
        """Register an append in flight; its positions will be above the floor saved."""
        until = time.time() + APPEND_LEASE_S
        with self._errors():
            counter = await self._counters.find_one({"_id": "events"})
            floor = 0 if counter is None else int(counter["n"])
            await self._appending.insert_one({"_id": token, "floor": floor, "until": until})
        return until

    async def _insert(
        self, stream: str, events: list[NewEvent], expected_seq: int, prev_hash: str,
        until: float
    ) -> list[RecordedEvent]:
        counter = await self._retry_upsert(lambda: self._counters.find_one_and_update(
            {"_id": "events"}, {"$inc": {"n": len(events)}}, upsert=True,
            return_document=ReturnDocument.AFTER))
        if counter is None:  # pragma: no cover - an upsert with AFTER returns the document
            raise StoreError(f"{self._where}: the position counter did not come back")
        first = int(counter["n"]) - len(events) + 1
        recorded: list[RecordedEvent] = []
        for n, new in enumerate(events):
            recorded.append(_record(stream, expected_seq + 1 + n, first + n, new, prev_hash))
            prev_hash = recorded[-1].hash
        if time.time() > until:  # readers may already have passed our positions
            raise StoreError(f"{self._where}: append to {stream!r} took longer than its lease")
        try:
            with self._errors():
                await self._events.insert_many([_encode(e) for e in recorded], ordered=True)
        except StoreError as exc:
            await self._undo(first, [new.id for new in events])
            if _is_duplicate(exc.__cause__):
                raise ConcurrencyConflict(stream, expected_seq) from exc.__cause__
            raise
        return recorded

    async def _undo(self, first: int, ids: list[str]) -> None:
        """Delete what a failed insert wrote. The positions are ours alone; matching the
        event ids too keeps a counter gone wrong from costing another append its events."""
        with self._errors():
            await self._events.delete_many(
                {"_id": {"$gte": first, "$lt": first + len(ids)}, "id": {"$in": ids}})

    # --- reading -------------------------------------------------------------------------

    async def _visible_mark(self) -> int:
        """The highest position below which every append has finished (module docstring)."""
        with self._errors():
            counter = await self._counters.find_one({"_id": "events"})
            mark = 0 if counter is None else int(counter["n"])
            live = self._appending.find({"until": {"$gt": time.time()}}, projection={"floor": 1})
            async for doc in live:
                mark = min(mark, int(doc["floor"]))
        return mark

    async def _find(self, query: Doc, sort: list[tuple[str, int]],
                    limit: int = 0) -> list[RecordedEvent]:
        with self._errors():
            cursor = self._events.find(query, sort=sort, limit=limit)
            docs = await cursor.to_list()
        try:
            return [_decode(doc) for doc in docs]
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{self._where}: malformed event document: {exc}") from exc

    # --- helpers -------------------------------------------------------------------------

    async def _retry_upsert(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run an upsert; two racing upserts of a new _id may fail once with 11000."""
        for attempt in range(3):
            try:
                with self._errors():
                    return await op()
            except StoreError as exc:
                if attempt == 2 or not _is_duplicate(exc.__cause__):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover


def _is_duplicate(exc: BaseException | None) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors", [])
        return bool(errors) and all(e.get("code") == _DUPLICATE_KEY for e in errors)
    return False


def _record(stream: str, seq: int, position: int, new: NewEvent,
            prev_hash: str) -> RecordedEvent:
    data, meta = new.data_json(), canonical_json(dict(new.meta))
    return RecordedEvent(
        id=new.id, stream=stream, seq=seq, type=new.type, version=new.version, ts=new.ts,
        # Decoded from the stored JSON so the result equals what ``read`` returns later.
        data=json.loads(data), meta=json.loads(meta), position=position,
        hash=event_hash(stream, seq, new.id, new.type, new.version, new.ts, data, meta,
                        prev_hash),
        prev_hash=prev_hash,
    )


def _encode(event: RecordedEvent) -> Doc:
    return {
        "_id": event.position, "id": event.id, "stream": event.stream, "seq": event.seq,
        "type": event.type, "version": event.version, "ts": event.ts,
        "data": canonical_json(event.data), "meta": canonical_json(event.meta),
        "hash": event.hash, "prev_hash": event.prev_hash,
    }


def _decode(doc: Doc) -> RecordedEvent:
    return RecordedEvent(
        id=str(doc["id"]), stream=str(doc["stream"]), seq=int(doc["seq"]),
        type=str(doc["type"]), version=int(doc["version"]), ts=str(doc["ts"]),
        data=json.loads(doc["data"]), meta=json.loads(doc["meta"]), position=int(doc["_id"]),
        hash=str(doc.get("hash") or ""), prev_hash=str(doc.get("prev_hash") or ""),
    )

