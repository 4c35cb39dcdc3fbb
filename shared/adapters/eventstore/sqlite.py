"""The embedded event store: one SQLite file, shared safely by several processes.

Implements ``shared.ports.eventstore.EventStore``; the port's docstring is the contract.

Storage::

    events(position INTEGER PRIMARY KEY AUTOINCREMENT, id UNIQUE, stream, seq, type,
           version, ts, data JSON, meta JSON, hash, prev_hash, UNIQUE(stream, seq))
    checkpoints(name PRIMARY KEY, position)

``hash`` and ``prev_hash`` are the audit chain (``shared.audit``), computed by ``append``
from the stream's last event, read in the same write transaction as its seq. A file
made before they existed gets the columns when opened; its old events keep "" there.

Concurrency. Every sqlite3 call runs in ONE worker thread owned by the store (with
its own connection), so calls of one store are serialised and the event loop never
blocks on disk. Across store objects and processes, ``append`` takes SQLite's write
lock up front (``BEGIN IMMEDIATE``), checks the stream's last seq and inserts, so
positions are assigned in commit order and a reader never sees a gap filled later.
A writer that finds the file locked waits up to ``BUSY_TIMEOUT_S`` before failing
with ``StoreError``. Because of the single worker, a slow append delays the reads of
the same store object; open a second store for a reader that must not wait.

Durability. The file is in WAL mode with ``synchronous=NORMAL``: a committed append
is in the operating system's hands when ``append`` returns, so it survives the
process crashing or being killed (SIGKILL). It does NOT survive a power loss or an
OS crash before the next WAL checkpoint: the last transactions may be rolled back
then (the database stays consistent, it only loses its newest commits). WAL needs a
local file system; do not put the file on NFS or SMB.

Cancellation: if the task awaiting ``append`` is cancelled, the transaction already
handed to the worker still completes; re-read the stream to learn whether it did.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from shared.audit import GENESIS, canonical_json, event_hash
from shared.errors import ConcurrencyConflict, StoreError
from shared.events import NewEvent, RecordedEvent

__all__ = ["BUSY_TIMEOUT_S", "SqliteEventStore"]

T = TypeVar("T")

# How long a writer waits for another connection's (or process's) write lock.
BUSY_TIMEOUT_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT    NOT NULL UNIQUE,
    stream   TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    type     TEXT    NOT NULL,
    version  INTEGER NOT NULL,
    ts       TEXT    NOT NULL,
    data     TEXT    NOT NULL,
    meta     TEXT    NOT NULL,
    hash     TEXT    NOT NULL DEFAULT '',
    prev_hash TEXT   NOT NULL DEFAULT '',
    UNIQUE (stream, seq)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    name     TEXT    PRIMARY KEY,
    position INTEGER NOT NULL
);
"""

_COLUMNS = "position, id, stream, seq, type, version, ts, data, meta, hash, prev_hash"
_INSERT = (
    "INSERT INTO events (id, stream, seq, type, version, ts, data, meta, hash, prev_hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_CHAIN_COLUMNS = ("hash", "prev_hash")  # added to files made before the audit chain


class SqliteEventStore:
    """An ``EventStore`` in one SQLite file. Use ``await SqliteEventStore.open(path)``.

    The constructor does no I/O; the connection (and the directory and schema) is
    made by ``open`` or, failing that, by the first call. ``close`` is idempotent;
    any other call after it raises ``StoreError``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # One worker: serialises this store's transactions and owns its connection.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cyclone-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path) -> SqliteEventStore:
        """A store on ``path``, its directory and schema created if missing."""
        store = cls(path)
        try:
            await store._run(lambda conn: None)
        except BaseException:
            await store.close()
            raise
        return store

    # --- the port ------------------------------------------------------------------------

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_seq: int
    ) -> list[RecordedEvent]:
        batch = list(events)
        return await self._run(lambda conn: _append(conn, stream, batch, expected_seq))

    async def read(self, stream: str, from_seq: int = 1) -> list[RecordedEvent]:
        sql = f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND seq >= ? ORDER BY seq"
        return await self._run(lambda conn: _query(conn, sql, (stream, from_seq)))

    async def read_last(self, stream: str, count: int) -> list[RecordedEvent]:
        if count <= 0:
            return []  # LIMIT -1 would read them all
        sql = f"SELECT {_COLUMNS} FROM events WHERE stream = ? ORDER BY seq DESC LIMIT ?"
        newest_first = await self._run(lambda conn: _query(conn, sql, (stream, count)))
        return newest_first[::-1]

    async def read_all(self, from_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        if limit <= 0:
            return []  # SQLite reads LIMIT -1 as "no limit"; the caller asked for nothing.
        sql = f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
        return await self._run(lambda conn: _query(conn, sql, (from_position, limit)))

    async def last_position(self) -> int:
        sql = "SELECT coalesce(max(position), 0) FROM events"
        return await self._run(lambda conn: int(conn.execute(sql).fetchone()[0]))

    async def streams(self, prefix: str = "") -> list[str]:
        """Stream names starting with ``prefix`` (case-sensitive), sorted."""
        # Not LIKE: it is case-insensitive and treats % and _ in the prefix as wildcards.
        sql = (
            "SELECT DISTINCT stream FROM events"
            " WHERE stream >= ? AND substr(stream, 1, ?) = ? ORDER BY stream"
        )
        args = (prefix, len(prefix), prefix)
        return await self._run(lambda conn: [row[0] for row in conn.execute(sql, args)])

    async def checkpoint(self, name: str) -> int:
        """The position saved under ``name``; 0 if none was saved."""
        sql = "SELECT position FROM checkpoints WHERE name = ?"

        def get(conn: sqlite3.Connection) -> int:
            row = conn.execute(sql, (name,)).fetchone()
            return 0 if row is None else int(row[0])

        return await self._run(get)

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save ``position`` under ``name`` (overwrites; a reset may move it back)."""
        sql = (
            "INSERT INTO checkpoints (name, position) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position"
        )
        await self._run(lambda conn: conn.execute(sql, (name, position)))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            # Queued behind any call still in flight, so those finish on an open connection.
            await loop.run_in_executor(self._executor, self._disconnect)
        finally:
            self._executor.shutdown(wait=True)  # the worker is idle now: returns at once

    # --- the worker thread ---------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError(f"event store {self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the connection, translating driver errors (worker thread only)."""
        try:
            return fn(self._connection())
        except (sqlite3.Error, OSError, ValueError) as exc:
            # ValueError: a stored data/meta column that is not JSON.
            raise StoreError(f"sqlite event store {self.path}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                check_same_thread=False,
            )
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                # 32 MB of pages (the default is 2 MB): a long history's indexes stay
                # in memory, so an append or a read costs what it does on a new store.
                conn.execute("PRAGMA cache_size = -32768")
                conn.executescript(_SCHEMA)
                _add_chain_columns(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _add_chain_columns(conn: sqlite3.Connection) -> None:
    have = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    for column in _CHAIN_COLUMNS:
        if column not in have:
            try:
                conn.execute(f"ALTER TABLE events ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
            except sqlite3.OperationalError as exc:  # another process added it meanwhile
                if "duplicate column" not in str(exc):
                    raise


def _append(
    conn: sqlite3.Connection, stream: str, events: list[NewEvent], expected_seq: int
) -> list[RecordedEvent]:
    """Check ``expected_seq`` and insert ``events`` in one write transaction."""
    # IMMEDIATE takes the write lock now, so the seq check and the inserts see one state
    # even when another process appends to the same file.
    conn.execute("BEGIN IMMEDIATE")
    try:
        last = conn.execute(
            "SELECT seq, hash FROM events WHERE stream = ? ORDER BY seq DESC LIMIT 1", (stream,)
        ).fetchone()
        actual, prev_hash = (0, GENESIS) if last is None else (int(last[0]), str(last[1]))
        if actual != expected_seq:
            raise ConcurrencyConflict(stream, expected_seq, actual)
        recorded: list[RecordedEvent] = []
        for n, new in enumerate(events, 1):
            recorded.append(_insert(conn, stream, expected_seq + n, new, prev_hash))
            prev_hash = recorded[-1].hash
        conn.execute("COMMIT")
    except sqlite3.IntegrityError as exc:
        # (stream, seq) taken or an event id that exists: someone else's write won.
        _rollback(conn)
        raise ConcurrencyConflict(stream, expected_seq) from exc
    except BaseException:
        _rollback(conn)
        raise
    return recorded


def _insert(conn: sqlite3.Connection, stream: str, seq: int, new: NewEvent,
            prev_hash: str) -> RecordedEvent:
    data = new.data_json()
    meta = canonical_json(dict(new.meta))
    hash_ = event_hash(stream, seq, new.id, new.type, new.version, new.ts, data, meta, prev_hash)
    cursor = conn.execute(
        _INSERT, (new.id, stream, seq, new.type, new.version, new.ts, data, meta, hash_,
                  prev_hash)
    )
    if cursor.lastrowid is None:  # pragma: no cover - SQLite always sets it for an INSERT
        raise StoreError("sqlite did not report the new event's position")
    return RecordedEvent(
        id=new.id, stream=stream, seq=seq, type=new.type, version=new.version, ts=new.ts,
        # Decoded from the stored JSON so the result equals what ``read`` returns later.
        data=json.loads(data), meta=json.loads(meta), position=cursor.lastrowid,
        hash=hash_, prev_hash=prev_hash,
    )


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _query(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[RecordedEvent]:
    return [_decode(row) for row in conn.execute(sql, args)]


def _decode(row: tuple[Any, ...]) -> RecordedEvent:
    position, id_, stream, seq, type_, version, ts, data, meta, hash_, prev_hash = row
    return RecordedEvent(
        id=id_, stream=stream, seq=seq, type=type_, version=version, ts=ts,
        data=json.loads(data), meta=json.loads(meta), position=position,
        hash=hash_, prev_hash=prev_hash,
    )
