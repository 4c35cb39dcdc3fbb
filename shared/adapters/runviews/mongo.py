"""Run views in MongoDB, through PyMongo's asyncio API: the distributed ``RunViews``.

Implements ``shared.ports.runviews.RunViews``; the port's docstring is the contract.
Open with ``await MongoRunViews.connect("mongodb://host/", database="cyclone")``; the
api replicas of a cluster share the collection, so any of them answers from the same
views, and a restarted replica starts from what is stored instead of replaying history.

Storage (database ``database``)::

    run_views  {_id: run id, project, status, branch, trigger, done, last_seq,
                durations: [step duration_s, ...], view: JSON text}
               indexes (project, _id), (status, _id), (done, project, _id)

``view`` is ``RunView.to_data()`` as JSON text (like the event store's ``data``): user
keys with ``.`` or ``$`` (params, the plan's env) need no escaping, and ``get`` returns
a view equal to the one put. The other fields are copies for queries: ``page`` filters
on them and sorts by ``_id`` (run ids sort by creation time; an index is walked either
way, so ascending indexes serve the newest-first order), ``unfinished`` uses ``done``,
``counts_by_status`` groups by ``status``, ``step_durations`` unwinds ``durations``. A
``branch`` or ``trigger`` filter without a project walks the ``_id`` index. ``trigger``
was added later: a view stored before (a run that has not changed since) has none, and a
``trigger`` filter passes it over until ``cyclone replay`` writes the views again.

``put`` is one conditional upsert, ``replace_one({_id, last_seq: {$lt: new}}, view,
upsert=True)``: it replaces an older view, inserts a new run's, and, when a view with
that ``last_seq`` or a later one is stored, tries to insert a second document with that
``_id``, which the unique ``_id`` index refuses (duplicate key: nothing stored). Two
first puts of one run racing: the loser's duplicate key is tried once more, now as a
plain conditional replace. No transactions (the test stand-in has none).

Durability, reads from the primary and error translation are as in
``shared.adapters.eventstore.mongo``, whose connection helpers this uses.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.adapters.mongo import Doc, Index, MongoResource
from shared.errors import StoreError
from shared.ports.runviews import DEFAULT_PAGE, DurationHistogram, step_durations_of
from shared.projections.runs import RunView

__all__ = ["COLLECTION", "MongoRunViews"]


COLLECTION = "run_views"
_INDEXES = (("project", "_id"), ("status", "_id"), ("done", "project", "_id"))


class MongoRunViews(MongoResource):
    """A ``RunViews`` in a MongoDB collection. Use ``await MongoRunViews.connect(url)``.

    ``close`` is idempotent; any call after it raises ``StoreError``.
    """

    KIND = "mongo run views"
    INDEXES = tuple(Index(COLLECTION, *keys) for keys in _INDEXES)

    def __init__(self, client: AsyncMongoClient[Doc], db: AsyncDatabase[Doc], where: str,
                 timeout_s: float) -> None:
        super().__init__(client, db, where, timeout_s)
        self._views: AsyncCollection[Doc] = db[COLLECTION]

    # --- the port ------------------------------------------------------------------------

    async def get(self, run_id: str) -> RunView | None:
        self._check_open()
        with self._errors():
            doc = await self._views.find_one({"_id": run_id}, projection={"view": 1})
        return None if doc is None else self._decode(doc)

    async def put(self, view: RunView) -> bool:
        """Store ``view`` if no view of its run with that ``last_seq`` or later is stored."""
        self._check_open()
        doc = _encode(view)
        newer = {"_id": view.id, "last_seq": {"$lt": view.last_seq}}
        for _ in range(2):
            with self._errors():
                try:
                    await self._views.replace_one(newer, doc, upsert=True)
                    return True
                except DuplicateKeyError:
                    # A view as new or newer is stored; or another first put of this run
                    # inserted just before ours: then the second try replaces it if older.
                    pass
        return False

    async def page(self, *, project: str = "", status: str = "", branch: str = "",
                   before: str | None = None, limit: int = DEFAULT_PAGE,
                   within: Collection[str] | None = None, trigger: str = "") -> list[RunView]:
        self._check_open()
        if limit < 1:
            return []
        query: Doc = {}
        if before is not None:
            query["_id"] = {"$lt": before}
        for key, value in (("project", project), ("status", status), ("branch", branch),
                           ("trigger", trigger)):
            if value:
                query[key] = value
        if within is not None:
            if project and project not in within:
                return []
            if not project:
                query["project"] = {"$in": sorted(within)}
        return await self._find(query, DESCENDING, limit)

    async def unfinished(self, project: str = "") -> list[RunView]:
        self._check_open()
        query: Doc = {"done": False}
        if project:
            query["project"] = project
        return await self._find(query, ASCENDING)

    async def counts_by_status(self) -> dict[str, int]:
        self._check_open()
        with self._errors():
            cursor = await self._views.aggregate(
                [{"$group": {"_id": "$status", "n": {"$sum": 1}}}])
            return {str(doc["_id"]): int(doc["n"]) async for doc in cursor}

    async def step_durations(self, bounds: Sequence[float]) -> DurationHistogram:
        self._check_open()
        group: Doc = {"_id": None, "count": {"$sum": 1}, "total": {"$sum": "$durations"}}
        for i, bound in enumerate(bounds):
            group[f"le{i}"] = {"$sum": {"$cond": [{"$lte": ["$durations", bound]}, 1, 0]}}
        with self._errors():
            cursor = await self._views.aggregate([{"$unwind": "$durations"}, {"$group": group}])
            found = [doc async for doc in cursor]
        if not found:
            return DurationHistogram.of(bounds, [])
        doc = found[0]
        return DurationHistogram(bounds=tuple(bounds),
                                 le=tuple(int(doc[f"le{i}"]) for i in range(len(bounds))),
                                 count=int(doc["count"]), total=float(doc["total"]))

    # --- helpers -------------------------------------------------------------------------

    async def _find(self, query: Doc, order: int, limit: int = 0) -> list[RunView]:
        with self._errors():
            cursor = self._views.find(query, projection={"view": 1}, sort=[("_id", order)],
                                      limit=limit)
            docs = await cursor.to_list()
        return [self._decode(doc) for doc in docs]

    def _decode(self, doc: Doc) -> RunView:
        try:
            return RunView.from_data(json.loads(doc["view"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{self._where}: malformed run view {doc.get('_id')!r}: "
                             f"{exc!r}") from exc


def _encode(view: RunView) -> Doc:
    return {
        "_id": view.id, "project": view.project, "status": view.status,
        "branch": view.branch, "trigger": view.trigger, "done": view.done,
        "last_seq": view.last_seq,
        "durations": step_durations_of(view),
        "view": json.dumps(view.to_data(), separators=(",", ":")),
    }
