"""The embedded log store: one newline-delimited JSON file per run.

Implements ``shared.ports.logstore.LogStore``; the port's docstring is the contract.

File format, ``<root>/<run_id>.ndjson``, one JSON object a line, one line a batch::

    {"i": 0, "n": 3, "batch": "<batch id>", "groups": [group, ...]}

``i`` is the index of the batch's first line, ``n`` how many it has, and ``groups``
holds them as column groups (``shared.wire.groups_of``: the job, step, stream and
attempt once per run of consecutive lines, then their stamps and texts), so reading
a line back costs a list item, not a JSON object of its own. Files written before
this format held a line a record, then a marker for its batch; they are still read
(also when a run's file has both, from an upgrade in the middle of a run)::

    {"i": 0, "job": "build", "step": "test", "stream": "stdout", "ts": "...", "text": "..."}
    {"batch": "<batch id>"}

A batch with more than ``RECORD_CHARS`` of text is split into records of about that
much (a reader holds a record whole); only the last carries ``batch``. ``append``
writes a batch in ONE write, so after a restart a redelivered batch is recognised by
its id and not stored twice.

Crash safety. The first time a run is used, its file is scanned once (which also
rebuilds the run's state: next index, a sparse offset index, the recent batch ids).
Anything after the last complete batch (a half-written line, the first records of a
batch whose write was cut short) is truncated, so a batch is stored entirely or not at
all and its redelivery stores it again.

Durability. Each batch is one unbuffered write into the operating system, with no
fsync (far too slow per batch): a stored batch survives the process crashing or
being killed, not a power loss or an OS crash.

Concurrency. Appends to one run are serialised by a per-run ``asyncio.Lock``; file
I/O runs in threads (``asyncio.to_thread``) so the loop never blocks. Run state is
cached per store object, so ONE store object (one process) must own the writes of a
root; readers in other processes see complete lines but the cached counts of this
object do not see their appends. A cancelled ``append`` or ``delete`` still completes.

Memory per run in use: the byte offset of the record holding every ``SPARSE_EVERY``th
line (so ``read`` can start near ``from_index``) and the last ``RECENT_BATCHES`` batch
ids; a batch id redelivered after that many newer batches of the same run would be
stored again. ``read`` streams the file in chunks of about ``CHUNK_BYTES``, each
parsed in one go.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from shared.errors import StoreError
from shared.ports.logstore import LogLine, StoredLine, numbered
from shared.wire import groups_of, lines_of_groups

__all__ = ["CHUNK_BYTES", "RECENT_BATCHES", "RECORD_CHARS", "SPARSE_EVERY", "FileLogStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

SPARSE_EVERY = 1000
RECENT_BATCHES = 10_000
CHUNK_BYTES = 256 * 1024
RECORD_CHARS = 256 * 1024  # of text in one record: a batch with more is split

# Run ids become file names: no separators, no dots, so no path can leave the root.
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")


@dataclass
class _RunState:
    """What this store knows of one run's file (mutated only on the event loop)."""

    next_index: int = 0
    size: int = 0  # bytes holding whole batches
    offsets: list[int] = field(default_factory=list)  # offsets[k]: line k * SPARSE_EVERY
    batches: OrderedDict[str, int] = field(default_factory=OrderedDict)  # id -> first index

    def remember(self, batch_id: str, first: int) -> None:
        self.batches[batch_id] = first
        while len(self.batches) > RECENT_BATCHES:
            self.batches.popitem(last=False)


@dataclass(frozen=True)
class _Written:
    end: int  # the file's size after the write
    sparse: list[int]  # offsets of the batch's lines whose index is a multiple of SPARSE_EVERY


class FileLogStore:
    """A ``LogStore`` in a directory of ``<run_id>.ndjson`` files.

    Run ids may only hold ``[A-Za-z0-9_-]``; anything else is a ``StoreError``.
    ``close`` waits for writes in flight; any call after it raises ``StoreError``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._states: dict[str, _RunState] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: set[asyncio.Task[Any]] = set()
        self._closed = False

    async def append(self, run_id: str, lines: Sequence[LogLine], batch_id: str) -> int:
        """Store ``lines`` after the run's lines; the index of the first of them.

        A batch id already stored returns the index it was stored at, storing nothing.
        """
        path = self._path(run_id)
        return await self._shielded(self._append(run_id, path, list(lines), batch_id))

    async def read(self, run_id: str, from_index: int = 0) -> AsyncIterator[StoredLine]:
        """Yield lines with ``index >= from_index``, up to the end of the file as it is
        when the reader gets there (lines appended meanwhile are included)."""
        path = self._path(run_id)
        state = await self._loaded(run_id, path)
        want = max(from_index, 0)
        k = min(want // SPARSE_EVERY, len(state.offsets) - 1)
        offset = state.offsets[k] if k >= 0 else 0
        # No file handle is held across a yield: an abandoned reader leaks nothing.
        while self._states.get(run_id) is state:  # stop if the run was deleted meanwhile
            chunk, end = await _io(_read_chunk, path, offset, want)
            if end == offset:
                return
            for stored in chunk:
                yield stored
            if chunk:
                want = chunk[-1].index + 1
            offset = end

    async def count(self, run_id: str) -> int:
        return (await self._loaded(run_id, self._path(run_id))).next_index

    async def delete(self, run_id: str) -> None:
        """Remove the run's lines (and its batch ids: a later batch starts at index 0)."""
        path = self._path(run_id)
        await self._shielded(self._delete(run_id, path))

    async def close(self) -> None:
        self._closed = True
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    # --- internals ------------------------------------------------------------------------

    def _path(self, run_id: str) -> Path:
        if self._closed:
            raise StoreError(f"log store {self.root} is closed")
        if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
            raise StoreError(f"invalid run id {run_id!r}: only letters, digits, _ and -")
        return self.root / f"{run_id}.ndjson"

    def _lock(self, run_id: str) -> asyncio.Lock:
        return self._locks.setdefault(run_id, asyncio.Lock())

    async def _shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        # A write must finish together with its state update even if the caller is
        # cancelled, else the cached state and the file disagree.
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(_settle(self._pending))
        return await asyncio.shield(task)

    async def _loaded(self, run_id: str, path: Path) -> _RunState:
        state = self._states.get(run_id)
        if state is not None:
            return state
        async with self._lock(run_id):
            return await self._state(run_id, path)

    async def _state(self, run_id: str, path: Path) -> _RunState:
        """The run's state, loading (and repairing) its file once. Caller holds the lock."""
        state = self._states.get(run_id)
        if state is None:
            state = await _io(_load, path)
            self._states[run_id] = state
        return state

    async def _append(self, run_id: str, path: Path, lines: list[LogLine], batch_id: str) -> int:
        async with self._lock(run_id):
            state = await self._state(run_id, path)
            if batch_id in state.batches:
                return state.batches[batch_id]
            first = state.next_index
            if not lines:
                return first
            written = await _io(_write_batch, path, first, lines, batch_id)
            state.next_index += len(lines)
            state.size = written.end
            state.offsets.extend(written.sparse)
            state.remember(batch_id, first)
            return first

    async def _delete(self, run_id: str, path: Path) -> None:
        async with self._lock(run_id):
            await _io(path.unlink, True)  # missing_ok
            self._states.pop(run_id, None)


def _settle(pending: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        pending.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the caller, if still waiting, gets it via shield

    return done


async def _io(fn: Callable[..., T], *args: Any) -> T:
    try:
        return await asyncio.to_thread(fn, *args)
    except OSError as exc:
        raise StoreError(f"log store: {exc}") from exc


# --- file format (these run in worker threads) ---------------------------------------------

_new = tuple.__new__  # a LogLine / StoredLine from fields whose types are checked


def _encode(record: dict[str, Any]) -> bytes:
    # surrogatepass: step output decoded with surrogateescape must not fail the batch.
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass") + b"\n"


def _parse(raw: bytes) -> dict[str, Any] | None:
    """The JSON object on a complete line; None for a partial or malformed one."""
    return _decode(raw[:-1]) if raw.endswith(b"\n") else None


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw.decode("utf-8", "surrogatepass"))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _load(path: Path) -> _RunState:
    """Scan ``path`` once; truncate whatever follows the last complete batch."""
    state = _RunState()
    try:
        file = open(path, "r+b")
    except FileNotFoundError:
        return state
    with file:
        offset, index, batch_first, sparse = 0, 0, -1, []
        for raw in file:
            record = _parse(raw)
            if record is None:
                break
            if "groups" in record:  # a batch, or a part of one
                n = _record_size(record, index)
                if n is None:
                    break
                sparse += [offset] * len(range(-index % SPARSE_EVERY, n, SPARSE_EVERY))
                batch_first = index if batch_first < 0 else batch_first
                index += n
                offset += len(raw)
                if "batch" in record:  # its last part: the batch is whole
                    state.remember(record["batch"], batch_first)
                    state.next_index, state.size, batch_first = index, offset, -1
                continue
            if isinstance(record.get("batch"), str):  # the marker after an older batch
                state.remember(record["batch"], index if batch_first < 0 else batch_first)
                offset += len(raw)
                state.next_index, state.size, batch_first = index, offset, -1
                continue
            if record.get("i") != index:  # lines carry contiguous indices; else corrupt
                break
            if index % SPARSE_EVERY == 0:
                sparse.append(offset)
            batch_first = index if batch_first < 0 else batch_first
            index += 1
            offset += len(raw)
        state.offsets = sparse[: -(-state.next_index // SPARSE_EVERY)]
        end = file.seek(0, os.SEEK_END)
        if end > state.size:
            log.warning(
                "log file %s: truncating %d bytes after the last complete batch",
                path, end - state.size,
            )
            file.truncate(state.size)
    return state


def _record_size(record: dict[str, Any], index: int) -> int | None:
    """How many lines a batch's record holds, if it is well-formed and starts at ``index``."""
    n = record.get("n")
    if (record.get("i") != index or type(n) is not int
            or not isinstance(record.get("batch", ""), str)):
        return None
    try:
        return n if len(lines_of_groups(record["groups"], "log file")) == n else None
    except ValueError:
        return None


def _write_batch(path: Path, first: int, lines: list[LogLine], batch_id: str) -> _Written:
    payload = b"".join(_records_of(first, lines, batch_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unbuffered: each write goes straight to the OS, and a failed one can be undone.
    with open(path, "ab", buffering=0) as file:
        start = file.seek(0, os.SEEK_END)
        try:
            _write_all(file.fileno(), payload)
        except BaseException:
            file.truncate(start)  # no half batch left behind a later one
            raise
    # the batch holds these lines whose index is a multiple of SPARSE_EVERY
    marks = len(range(-first % SPARSE_EVERY, len(lines), SPARSE_EVERY))
    return _Written(end=start + len(payload), sparse=[start] * marks)


def _records_of(first: int, lines: list[LogLine], batch_id: str) -> list[bytes]:
    """A batch's records: one, unless its text is longer than ``RECORD_CHARS`` (a reader
    holds a record whole, so that bounds its memory); the last carries the batch id."""
    if sum(len(line.text) for line in lines) < RECORD_CHARS:
        return [_encode({"i": first, "n": len(lines), "batch": batch_id,
                         "groups": groups_of(lines)})]
    records, start, chars = [], 0, 0
    for end, line in enumerate(lines, 1):
        chars += len(line.text)
        if chars >= RECORD_CHARS or end == len(lines):
            last = {"batch": batch_id} if end == len(lines) else {}
            records.append(_encode({"i": first + start, "n": end - start, **last,
                                    "groups": groups_of(lines[start:end])}))
            start, chars = end, 0
    return records


def _write_all(fd: int, payload: bytes) -> None:
    """One write call, unless the OS takes the payload in pieces."""
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _read_chunk(path: Path, offset: int, want: int) -> tuple[list[StoredLine], int]:
    """Lines with index >= ``want`` among the complete lines from ``offset`` on.

    Returns them and the offset after the last complete line read (``offset`` itself
    when there is nothing more).
    """
    try:
        file = open(path, "rb")
    except FileNotFoundError:
        return [], offset
    with file:
        file.seek(offset)
        data = file.read(CHUNK_BYTES)
        while b"\n" not in data:  # a line longer than a chunk, or a partial last line
            more = file.read(CHUNK_BYTES)
            if not more:
                return [], offset
            data += more
    complete = data[: data.rfind(b"\n")]
    end = offset + len(complete) + 1
    if want:
        # Skip the lines before ``want`` unparsed: a record starts with '{"i":<index>,'
        # (json.dumps puts a '"' inside a string as '\"': nothing else can look like it).
        at = complete.find(b'{"i":%d,' % want)
        if at > 0 and complete[at - 1] == ord("\n"):
            complete = complete[at:]
    lines = _records(complete)
    if lines is None:  # something is malformed: line by line, skipping what is
        lines = [s for raw in complete.split(b"\n") for s in _stored(_decode(raw))]
    if lines and lines[0].index < want:
        lines = [stored for stored in lines if stored.index >= want]
    return lines, end


def _records(complete: bytes) -> list[StoredLine] | None:
    """The stored lines of whole lines of the file, parsed as ONE JSON array (several
    times cheaper than a ``json.loads`` a line); None if any record is malformed, for
    ``_stored`` to deal with record by record."""
    try:
        text = complete.decode("utf-8", "surrogatepass")
        records = json.loads("[" + text.replace("\n", ",") + "]")
        lines: list[StoredLine] = []
        for record in records:
            index = record.get("i")
            if "groups" in record:
                batch = lines_of_groups(record["groups"], "log file")
                if type(index) is not int or len(batch) != record["n"]:
                    return None
                lines += numbered(batch, index)
                continue
            if index is None and "batch" in record:
                continue  # an older batch's marker
            line = (record["job"], record["step"], record["stream"], record["ts"],
                    record["text"], record.get("attempt", 1))
            if not (type(index) is int and type(line[0]) is str and type(line[1]) is str
                    and type(line[2]) is str and type(line[3]) is str
                    and type(line[4]) is str and type(line[5]) is int):
                return None
            lines.append(_new(StoredLine, (index, _new(LogLine, line))))
    except (ValueError, KeyError, AttributeError, TypeError):
        return None
    return lines


def _stored(record: dict[str, Any] | None) -> list[StoredLine]:
    """The stored lines a record holds: none for a marker or a malformed record."""
    if record is None or not isinstance(record.get("i"), int):
        return []
    try:
        if "groups" in record:
            return numbered(lines_of_groups(record["groups"], "log file"), record["i"])
        return [StoredLine(index=record["i"], line=LogLine.from_json(record))]
    except (KeyError, TypeError, ValueError):
        return []
