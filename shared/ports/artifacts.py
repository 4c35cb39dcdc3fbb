"""Artifact store port: content-addressed blobs (job artifacts, caches, test reports).

Contract (every adapter; ``tests/contracts/artifacts.py`` checks it):

* ``put(chunks)`` stores the bytes the async iterable yields and returns their
  ``Blob`` (``sha256:<hex>`` digest and size). Streamed: a 2 GB blob is never held in
  memory. Content addressed: putting the same bytes twice stores them once and gives
  the same digest. Durable once it returns; a put that fails or is cancelled half-way
  leaves nothing behind (no blob under any digest, no partial file).
* ``get(digest)`` yields the blob's bytes in chunks, without holding it in memory;
  ``BlobNotFound`` for a digest not stored. Integrity is checked on the way out: when
  what was read does not hash to ``digest`` (the stored bytes were changed or cut),
  the iterator raises ``BlobCorrupted`` after the last chunk instead of ending, so a
  consumer that reads to the end never takes corrupt data as complete.
* ``stat(digest)`` is the ``Blob`` (``None`` when not stored); ``delete(digest)``
  removes it (``False`` when it was not there); ``blobs()`` lists every stored blob
  (for retention and ``/metrics``); ``used_bytes()`` is the sum of their sizes.

What a blob *is* (an artifact of which run, a cache entry of which project) is
recorded in the event store, never here: this port only keeps bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

__all__ = ["CHUNK_BYTES", "ArtifactStore", "Blob"]

CHUNK_BYTES = 1024 * 1024  # what adapters read and yield at a time


@dataclass(frozen=True)
class Blob:
    digest: str  # "sha256:<64 hex>"
    size: int  # bytes


class ArtifactStore(Protocol):
    async def put(self, chunks: AsyncIterable[bytes]) -> Blob: ...

    def get(self, digest: str) -> AsyncIterator[bytes]: ...

    async def stat(self, digest: str) -> Blob | None: ...

    async def delete(self, digest: str) -> bool: ...

    def blobs(self) -> AsyncIterator[Blob]: ...

    async def used_bytes(self) -> int: ...

    async def close(self) -> None: ...
