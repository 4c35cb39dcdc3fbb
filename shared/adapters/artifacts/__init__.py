"""Artifact store adapters (``shared.ports.artifacts.ArtifactStore``): files, GridFS, S3.

What they share: a digest's spelling, checked before it names a file, a document or a
key; ``rechunk``, which turns whatever pieces a source yields into pieces of one size
(GridFS needs every chunk but the last to be exactly its chunk size; the files adapter
writes in large pieces to cross into a thread less often; S3 uploads parts of at least
5 MiB); and ``InFlight``, which lets a put fetch chunk N+1 from its source while chunk N
is being written.
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
    never empty); at most one piece is buffered.

    What comes is kept as it came (views of it) until a piece is full, then joined: one
    copy a piece, so at most twice ``size`` is held at once (the S3 adapter's parts are
    8 MiB)."""
    held: list[memoryview] = []
    count = 0
    async for chunk in chunks:
        # bytes() is the chunk itself when it is bytes, else a copy: a source may reuse
        # its bytearray, and a view of it kept here would change under us.
        data = bytes(chunk)
        if not held and len(data) == size:  # the common case: no copy
            yield data
            continue
        view = memoryview(data)
        while count + len(view) >= size:
            cut = size - count
            piece = b"".join([*held, view[:cut]])
            held, count, view = [], 0, view[cut:]
            yield piece
            del piece  # not kept while the next one is gathered
        if view:
            held.append(view)
            count += len(view)
    if held:
        yield b"".join(held)


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
