"""The log server: persists the log lines workers ship on ``cyclone.logs``, and lets
readers follow a run's log as it grows.

A batch is committed on the bus only after the log store has it, and the store
drops a batch it already has (by batch id), so a crash at any point neither
loses nor doubles a line. Streaming to clients (SSE, websocket: ``http.py``)
reads the store, never the bus, so a reader that joins late or reconnects sees
exactly the stored lines, in index order.

Following. After each append the readers of that run are woken (no polling). A
reader takes the run's current wake-up event *before* reading the store, so a
batch appended while it reads still wakes it: no line is missed between "read to
the end" and "wait". Readers also re-check every ``recheck_s`` seconds, so a run
that ends without printing another line still ends its streams. Wake-up entries
exist only for runs somebody follows. Only this process's appends wake its readers:
with several log server replicas, a reader whose run is stored by another replica
sees new lines at the next re-check.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field

from shared.consume import consume
from shared.ports.bus import TOPIC_LOGS, Bus, Message
from shared.ports.logstore import LogStore, StoredLine
from shared.wire import decode_log_batch

__all__ = ["CHUNK_CHARS", "CHUNK_LINES", "RECHECK_S", "IsComplete", "LogServer"]

CHUNK_LINES = 500  # lines handed to a writer at once: one network write per chunk
CHUNK_CHARS = 256 * 1024  # ... unless their text is this long already (long lines)
RECHECK_S = 1.0  # a follower re-checks completeness at least this often

# Given the index of the next line a follower would deliver: is the log complete?
IsComplete = Callable[[int], Awaitable[bool]]


@dataclass
class _Wakeup:
    """The followers of one run. ``event`` is set (and replaced) on each append."""

    followers: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)


class LogServer:
    def __init__(self, bus: Bus, logs: LogStore, group: str = "logserver",
                 recheck_s: float = RECHECK_S) -> None:
        self.bus = bus
        self.logs = logs
        self.group = group
        self.recheck_s = recheck_s
        self._wakeups: dict[str, _Wakeup] = {}

    async def run(self) -> None:
        await consume(self.bus, TOPIC_LOGS, self.group, self.handle)

    async def handle(self, message: Message) -> None:
        run_id, batch_id, lines = decode_log_batch(message.value)
        await self.logs.append(run_id, lines, batch_id)
        self._wake(run_id)

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
        is one chunk, whatever the log's size.
        """
        wakeup = self._wakeups.setdefault(run_id, _Wakeup())
        wakeup.followers += 1
        try:
            next_index = max(from_index, 0)
            while True:
                woken = wakeup.event  # taken BEFORE reading: an append meanwhile sets it
                async with contextlib.aclosing(self.chunks(run_id, next_index)) as chunks:
                    async for chunk in chunks:
                        next_index = chunk[-1].index + 1
                        yield chunk
                if woken.is_set():
                    continue  # appended during the pass: read those lines first
                if await is_complete(next_index):
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), self.recheck_s)
                if not woken.is_set():
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

    def _wake(self, run_id: str) -> None:
        wakeup = self._wakeups.get(run_id)
        if wakeup is not None:
            wakeup.event.set()
            wakeup.event = asyncio.Event()
