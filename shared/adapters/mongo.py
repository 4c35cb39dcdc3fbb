"""What the MongoDB adapters share: the client, its settings, error mapping, closing.

Each adapter (event store, log store, run views) is a ``MongoResource``: it is made by
``connect`` (a client with Cyclone's settings, then the adapter's indexes, created
idempotently; the client is closed again if that fails), every PyMongo error raised
inside ``_errors()`` becomes a ``StoreError`` naming the URL without its password, and
``close`` is idempotent, waits for the writes it runs in their own tasks (``_detached``:
a cancelled caller must not leave half a write) and makes every later call fail.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Self, TypeVar

from pymongo import ASCENDING, AsyncMongoClient, ReadPreference
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError, ServerSelectionTimeoutError
from pymongo.write_concern import WriteConcern

from shared.errors import StoreError

__all__ = ["DEFAULT_TIMEOUT_S", "Doc", "Index", "MongoResource", "mask_url", "open_database",
           "translate_errors"]

T = TypeVar("T")
Doc = dict[str, Any]

# How long to look for a server before an operation fails (unless the URL says otherwise).
DEFAULT_TIMEOUT_S = 5.0

_CREDENTIALS = re.compile(r"(?<=://)[^/@]*@")


def mask_url(url: str) -> str:
    """``url`` without its user and password (``mongodb://***@host/``)."""
    return _CREDENTIALS.sub("***@", url)


@contextmanager
def translate_errors(where: str, timeout_s: float | None = None) -> Iterator[None]:
    """Turn PyMongo errors raised inside into ``StoreError`` naming ``where``."""
    try:
        yield
    except DuplicateKeyError as exc:
        raise StoreError(f"{where}: duplicate key: {exc.details}") from exc
    except ServerSelectionTimeoutError as exc:
        within = "" if timeout_s is None else f" within {timeout_s:g}s"
        raise StoreError(f"{where}: no MongoDB server reachable{within}") from exc
    except PyMongoError as exc:
        raise StoreError(f"{where}: {exc}") from exc


def open_database(
    url: str, database: str | None, timeout_s: float
) -> tuple[AsyncMongoClient[Doc], AsyncDatabase[Doc]]:
    """A client for ``url`` (no I/O yet) and its ``database``, with Cyclone's settings.

    ``database`` None: the one the URL names (``mongodb://host/NAME``), else "cyclone".

    ``timeout_s`` bounds server selection and connecting unless the URL sets
    ``serverSelectionTimeoutMS`` / ``connectTimeoutMS`` itself.
    """
    where = f"MongoDB {mask_url(url)}"
    if not url.startswith(("mongodb://", "mongodb+srv://")):
        raise StoreError(f"{where}: the URL must start with mongodb:// or mongodb+srv://")
    options: dict[str, Any] = {"appname": "cyclone"}
    lowered = url.lower()
    if "serverselectiontimeoutms" not in lowered:
        options["serverSelectionTimeoutMS"] = int(timeout_s * 1000)
    if "connecttimeoutms" not in lowered:
        options["connectTimeoutMS"] = int(timeout_s * 1000)
    with translate_errors(where):
        client: AsyncMongoClient[Doc] = AsyncMongoClient(url, **options)
    db = client.get_database(
        database or client.get_default_database(default="cyclone").name,
        write_concern=WriteConcern(w="majority", j=True),
        read_preference=ReadPreference.PRIMARY,
    )
    return client, db


class Index:
    """An index an adapter needs: on ``collection``, ascending ``keys``."""

    def __init__(self, collection: str, *keys: str, unique: bool = False) -> None:
        self.collection = collection
        self.keys = keys
        self.unique = unique

    async def create(self, db: AsyncDatabase[Doc]) -> None:
        spec = [(key, ASCENDING) for key in self.keys]
        await db[self.collection].create_index(spec, unique=self.unique)


class MongoResource:
    """The base of an adapter on one MongoDB database (see the module's docstring)."""

    KIND = "mongo"  # what the adapter is, for its error messages
    INDEXES: Sequence[Index] = ()

    def __init__(self, client: AsyncMongoClient[Doc], db: AsyncDatabase[Doc], where: str,
                 timeout_s: float) -> None:
        self._client = client
        self._db = db
        self._where = where
        self._timeout_s = timeout_s
        self._tasks: set[asyncio.Future[Any]] = set()
        self._closed = False

    @classmethod
    async def connect(cls, url: str, database: str | None = None,
                      timeout_s: float = DEFAULT_TIMEOUT_S) -> Self:
        """The adapter on ``database`` (default: the URL's, else "cyclone") at ``url``;
        creates its indexes (idempotent)."""
        client, db = open_database(url, database, timeout_s)
        adapter = cls(client, db, f"{cls.KIND} {mask_url(url)} db {db.name!r}", timeout_s)
        try:
            with adapter._errors():
                for index in cls.INDEXES:
                    await index.create(db)
        except BaseException:
            await adapter.close()
            raise
        return adapter

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        await self._client.close()

    async def _detached(self, write: Awaitable[T]) -> T:
        """``write`` in its own task: it completes even when the caller is cancelled, and
        ``close`` waits for it."""
        task = asyncio.ensure_future(write)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    def _errors(self) -> AbstractContextManager[None]:
        return translate_errors(self._where, self._timeout_s)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self._where} is closed")
