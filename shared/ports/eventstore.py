"""Event store port: append-only streams with optimistic concurrency, plus a global order.

Contract (every adapter; ``tests/contracts/eventstore.py`` checks it):

* ``append(stream, events, expected_seq)`` writes all of ``events`` or none. The
  stream's last seq must equal ``expected_seq`` (0 for a new stream), else
  ``ConcurrencyConflict`` and nothing is written. New events get seq
  ``expected_seq + 1 ...`` and a ``position`` that increases across all streams in
  commit order. Event ids are unique; appending an id that exists is a conflict.
* ``read(stream, from_seq)`` returns the stream's events with ``seq >= from_seq`` in
  seq order (an empty list for an unknown stream).
* ``read_last(stream, count)`` returns the stream's last ``count`` events (fewer when
  it has fewer) in seq order: a bounded read of a long stream's recent end (a branch's
  ledger of run outcomes).
* ``read_all(from_position, limit)`` returns events of every stream with
  ``position > from_position`` in position order; what projections and replay use.
* ``checkpoint`` / ``save_checkpoint`` keep a named position (a consumer's
  progress, e.g. the outbox relay's), durable like the events.
* Safe for concurrent use by many tasks; durable once ``append`` returns.
* Errors are ``StoreError`` subclasses; no driver exception escapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from shared.events import NewEvent, RecordedEvent

__all__ = ["EventStore"]


class EventStore(Protocol):
    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_seq: int
    ) -> list[RecordedEvent]: ...

    async def read(self, stream: str, from_seq: int = 1) -> list[RecordedEvent]: ...

    async def read_last(self, stream: str, count: int) -> list[RecordedEvent]: ...

    async def read_all(self, from_position: int = 0, limit: int = 1000) -> list[RecordedEvent]: ...

    async def last_position(self) -> int: ...

    async def streams(self, prefix: str = "") -> list[str]: ...

    async def checkpoint(self, name: str) -> int: ...

    async def save_checkpoint(self, name: str, position: int) -> None: ...

    async def close(self) -> None: ...
