"""The log server: persists the log lines workers ship on ``cyclone.logs``, and lets
readers follow a run's log as it grows.

A batch is committed on the bus only after the log store has it, and the store
drops a batch it already has (by batch id), so a crash at any point neither
loses nor doubles a line. Streaming to clients (SSE, websocket: ``http.py``)
reads the store (or the lines the store has just given their indexes: the live
tail, below), never the bus, so a reader that joins late or reconnects sees exactly
the stored lines, in index order.

Following. After each append the readers of that run are woken (no polling), and a
notice ``{"run", "end"}`` goes out on ``cyclone.logs.stored`` (coalesced per run, in the
background: appends never wait for it), so that readers in other processes (the api
replicas) are woken too: they call ``wake`` when they see one, and when the run's
events change (its end). A reader takes the run's current wake-up event *before*
reading the store, so a batch appended while it reads still wakes it: no line is
missed between "read to the end" and "wait". A notice lost on the way only delays:
readers re-check every ``recheck_s`` seconds all the same. Wake-up entries exist only
for runs somebody follows.

The live tail. For a run somebody follows, the server also keeps the lines it has just
stored (the last ``TAIL_LINES`` at most, ``TAIL_CHARS`` of text at most, with their
indexes): a follower takes new lines from there instead of reading them back from the
store and parsing them again. The tail holds contiguous indexes only, exactly as the
store gave them (``append`` returns each batch's first index). A follower reads the store
whenever the tail does not hold its next line (it fell behind, or joined late), and also
at the tail's end when it was woken from outside (``wake``: a notice of lines another
process stored, or the run's events) or re-checks: lines stored elsewhere are never
skipped, and a follower at the tail's end woken by this server's own appends finds them
in the tail. It lives and dies with the run's wake-up entry.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, Metric

from shared.consume import consume
from shared.metrics import FunctionCollector
from shared.ports.bus import TOPIC_LOGS, TOPIC_LOGS_STORED, Bus, Message
from shared.ports.logstore import LogLine, LogStore, StoredLine, numbered
from shared.retry import Backoff, is_transient
from shared.wire import decode_log_batch, encode_log_stored

__all__ = ["CHUNK_CHARS", "CHUNK_LINES", "RECHECK_S", "TAIL_CHARS", "TAIL_LINES", "IsComplete",
           "LogServer", "StoredNotices"]

log = logging.getLogger(__name__)

CHUNK_LINES = 500  # lines handed to a writer at once: one network write per chunk
CHUNK_CHARS = 256 * 1024  # ... unless their text is this long already (long lines)
RECHECK_S = 5.0  # a follower re-checks at least this often, should a wake-up be lost
TAIL_LINES = 10_000  # a followed run's live tail holds at most this many lines ...
TAIL_CHARS = 4 * 1024 * 1024  # ... and this much text (when trimmed: half of each)

# Given the index of the next line a follower would deliver: is the log complete?
IsComplete = Callable[[int], Awaitable[bool]]


class _Tail:
    """The lines last stored for one run, indexes ``start .. end - 1`` with no gap."""

    def __init__(self) -> None:
        self.start = self.end = 0
        self.lines: list[StoredLine] = []
        self.chars = [0]  # chars[k]: text length of lines[:k] (prefix sums)

    def add(self, first: int, lines: Sequence[LogLine]) -> None:
        """Lines the store has just stored at ``first``, ``first + 1``, ..."""
        if not lines or first < self.end:
            return  # a batch the store already had (redelivered): held or trimmed away
        if first > self.end or not self.lines:  # a gap (another writer): start afresh
            self.start = self.end = first
            self.lines, self.chars = [], [0]
        self.lines += numbered(lines, first)
        total = self.chars[-1]
        self.chars += [total := total + len(line.text) for line in lines]
        self.end = first + len(lines)
        if len(self.lines) > TAIL_LINES or total > TAIL_CHARS:
            # the oldest go, down to half of each bound: trimming is rare and amortised
            drop = max(len(self.lines) - TAIL_LINES // 2,
                       bisect.bisect_left(self.chars, total - TAIL_CHARS // 2))
            del self.lines[:drop], self.chars[:drop]
            self.start += drop

    def holds(self, index: int) -> bool:
        return self.start <= index < self.end

    def chunk(self, index: int) -> list[StoredLine]:
        """The lines from ``index`` on, up to a chunk's worth; [] unless ``holds(index)``."""
        if not self.start <= index < self.end:
            return []
        at = index - self.start
        limit = min(at + CHUNK_LINES, len(self.lines))
        # the line that reaches CHUNK_CHARS is the chunk's last (as in LogServer.chunks)
        return self.lines[at:bisect.bisect_left(self.chars, self.chars[at] + CHUNK_CHARS,
                                                at + 1, limit)]


@dataclass
class _Wakeup:
    """The followers of one run. ``event`` is set (and replaced) on each append and each
    ``wake``; ``outside`` counts the ``wake`` calls (news the tail may not have)."""

    followers: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)
    tail: _Tail = field(default_factory=_Tail)
    outside: int = 0

    def set(self) -> None:
        self.event.set()
        self.event = asyncio.Event()


class LogServer:
    def __init__(self, bus: Bus, logs: LogStore, group: str = "logserver",
                 recheck_s: float = RECHECK_S) -> None:
        self.bus = bus
        self.logs = logs
        self.group = group
        self.recheck_s = recheck_s
        self.batches_handled = 0  # batches stored by this process (redeliveries too)
        self.lines_handled = 0  # ... and their lines
        self._wakeups: dict[str, _Wakeup] = {}
        self._notices = StoredNotices(bus)

    async def run(self) -> None:
        """Store what ``cyclone.logs`` brings, announcing it on ``cyclone.logs.stored``."""
        async with asyncio.TaskGroup() as group:
            announcing = group.create_task(self._notices.run())
            await consume(self.bus, TOPIC_LOGS, self.group, self.handle, commit_behind=True)
            announcing.cancel()

    async def handle(self, message: Message) -> None:
        run_id, batch_id, lines = decode_log_batch(message.value)
        first = await self.logs.append(run_id, lines, batch_id)
        self.batches_handled += 1
        self.lines_handled += len(lines)
        wakeup = self._wakeups.get(run_id)
        if wakeup is not None:
            wakeup.tail.add(first, lines)
            wakeup.set()
        self._notices.note(run_id, first + len(lines))

    def collector(self) -> FunctionCollector:
        """``cyclone_log_lines_stored_total`` and ``cyclone_log_batches_stored_total``:
        what this process has stored (a redelivered batch counts again)."""
        def collect() -> Iterable[Metric]:
            yield CounterMetricFamily("cyclone_log_lines_stored",
                                      "Log lines this process has stored",
                                      value=self.lines_handled)
            yield CounterMetricFamily("cyclone_log_batches_stored",
                                      "Batches of log lines this process has stored",
                                      value=self.batches_handled)
        return FunctionCollector(collect)

    def following(self) -> frozenset[str]:
        """The runs that have followers right now."""
        return frozenset(self._wakeups)

    async def follow(self, run_id: str, from_index: int,
                     is_complete: IsComplete) -> AsyncGenerator[StoredLine, None]:
        """The run's stored lines from ``from_index`` on, in order, then each new one
        as it is stored; ends once ``await is_complete(next_index)`` is true."""
        chunks = self.follow_chunks(run_id, from_index, is_complete)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                for stored in chunk:
                    yield stored

    async def follow_chunks(self, run_id: str, from_index: int, is_complete: IsComplete,
                            ) -> AsyncGenerator[list[StoredLine], None]:
        """``follow`` in chunks of up to ``CHUNK_LINES`` lines (or ``CHUNK_CHARS`` of text).

        Lines are handed over as soon as the store has no more to give right now, so a
        chunk is never held back waiting to fill. An EMPTY chunk means "nothing new
        since the last re-check, still following": a writer can use it to send
        keep-alives or notice that its client has gone.

        ``is_complete`` is asked after each pass over the store, on each wake-up and at
        least every ``recheck_s`` seconds. The store is read in a streaming way: memory
        is one chunk, whatever the log's size. New lines come from the run's live tail
        while it holds them; the store is read when it does not, on the first pass, after
        a ``wake`` and on re-checks (see the module docstring).
        """
        wakeup = self._wakeups.setdefault(run_id, _Wakeup())
        wakeup.followers += 1
        tail = wakeup.tail
        looked = -1  # wakeup.outside when this follower last read the store; -1: read it
        try:
            next_index = max(from_index, 0)
            while True:
                woken = wakeup.event  # taken BEFORE reading: an append meanwhile sets it
                while chunk := tail.chunk(next_index):
                    next_index = chunk[-1].index + 1
                    yield chunk
                if next_index != tail.end or looked != wakeup.outside:
                    looked = wakeup.outside
                    async with contextlib.aclosing(self.chunks(run_id, next_index)) as chunks:
                        async for chunk in chunks:
                            next_index = chunk[-1].index + 1
                            yield chunk
                            if tail.holds(next_index):
                                break  # caught up with the tail: the rest from there
                if tail.holds(next_index) or woken.is_set():
                    continue  # appended during the pass: read those lines first
                if await is_complete(next_index):
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.recheck_s):  # wait_for: see outbox.py
                        await woken.wait()
                if not woken.is_set():
                    looked = -1  # a re-check reads the store, should a wake-up be lost
                    yield []  # a quiet interval
        finally:
            wakeup.followers -= 1
            if wakeup.followers == 0 and self._wakeups.get(run_id) is wakeup:
                del self._wakeups[run_id]

    async def chunks(self, run_id: str, from_index: int) -> AsyncGenerator[list[StoredLine], None]:
        """The stored lines from ``from_index`` to the store's end (as the reader finds
        it), in non-empty chunks of up to ``CHUNK_LINES`` lines: the history of a run."""
        lines = self.logs.read(run_id, from_index)
        try:
            chunk: list[StoredLine] = []
            chars = 0
            async for stored in lines:
                chunk.append(stored)
                chars += len(stored.line.text)
                if len(chunk) >= CHUNK_LINES or chars >= CHUNK_CHARS:
                    yield chunk
                    chunk, chars = [], 0
            if chunk:
                yield chunk
        finally:
            close = getattr(lines, "aclose", None)  # the port promises only an iterator
            if close is not None:
                await close()

    def wake(self, run_id: str) -> None:
        """Wake the run's followers: its log (stored by another process) or its state
        changed. They read the store."""
        wakeup = self._wakeups.get(run_id)
        if wakeup is not None:
            wakeup.outside += 1
            wakeup.set()


class StoredNotices:
    """Announces how far runs' logs are stored, on ``cyclone.logs.stored``: one message a
    run for all the appends made while the previous one went out, so a busy log costs a
    few notices a second, and an append never waits for the bus."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._pending: dict[str, int] = {}  # run id -> end of its stored lines
        self._noted = asyncio.Event()

    def note(self, run_id: str, end: int) -> None:
        self._pending[run_id] = max(end, self._pending.get(run_id, 0))
        self._noted.set()

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            await self._noted.wait()
            self._noted.clear()
            pending, self._pending = list(self._pending.items()), {}
            for done, (run_id, end) in enumerate(pending):
                try:
                    await self.bus.publish(TOPIC_LOGS_STORED, run_id,
                                           encode_log_stored(run_id, end))
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    log.warning("log stored notices not sent; trying again",
                                extra={"error": str(exc)})
                    for unsent, at in pending[done:]:
                        self.note(unsent, at)
                    await backoff.wait()
                    break
            else:
                backoff.reset()
