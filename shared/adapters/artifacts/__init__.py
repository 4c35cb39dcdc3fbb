"""Artifact store adapters (``shared.ports.artifacts.ArtifactStore``): files and GridFS.

What both share: a digest's spelling, checked before it names a file or a document;
``rechunk``, which turns whatever pieces a source yields into ``CHUNK_BYTES`` pieces
(GridFS needs every chunk but the last to be exactly its chunk size; the files adapter
writes in large pieces to cross into a thread less often); and ``InFlight``, which lets
a put fetch chunk N+1 from its source while chunk N is being written.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

from shared.errors import StoreError

__all__ = ["DIGEST", "InFlight", "check_digest", "rechunk"]

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def check_digest(digest: str) -> str:
    """``digest``'s hex part; ``StoreError`` when it is not ``sha256:<64 lower-case hex>``
    (a digest becomes a path: nothing else may reach the file system)."""
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise StoreError(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
    return digest.removeprefix("sha256:")


async def rechunk(chunks: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """The bytes of ``chunks`` in pieces of exactly ``size`` (the last may be shorter,
    never empty); at most one piece is buffered."""
    buffer = bytearray()
    async for piece in chunks:
        if not buffer and len(piece) == size:  # the common case: no copy
            yield bytes(piece)
            continue
        buffer += piece
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


class InFlight:
    """At most one write in flight, started without waiting for it to end.

    A write is never cancelled half-way: a cancelled caller stops waiting, the write goes
    on, and ``settle`` waits for it before the caller cleans up after it (a temp file
    closed under a write, chunks deleted while one is still being inserted).
    """

    def __init__(self) -> None:
        self._job: asyncio.Future[Any] | None = None

    async def then(self, start: Callable[[], Awaitable[object]]) -> None:
        """Wait for the write before (raising its error), then start ``start()``."""
        await self.wait()
        self._job = asyncio.ensure_future(start())

    async def wait(self) -> None:
        """Wait for the write in flight; its error is raised here."""
        if self._job is not None:
            await asyncio.shield(self._job)

    async def settle(self) -> None:
        """Wait for the write in flight to end, however it ends; raises nothing."""
        job = self._job
        if job is not None:
            await asyncio.wait([job])
            if not job.cancelled():
                job.exception()  # seen: it is the error being raised, or one before it
