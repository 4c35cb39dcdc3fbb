"""The embedded artifact store: one file a blob under a root directory.

Implements ``shared.ports.artifacts.ArtifactStore``; the port's docstring is the contract.

Layout::

    <root>/sha256/<first 2 hex>/<64 hex>    a blob (read-only), named by its digest
    <root>/tmp/.put-<random>                a put in progress

``put`` writes into a temp file while hashing, then fsyncs it, renames it to its
digest's name and fsyncs the directory: the rename is the commit, so a blob is either
whole under its name or absent, and a put that fails or is cancelled removes its temp
file. Putting bytes already stored renames over the old file: stored once, and a
tampered copy is healed by the fresh one. A process killed mid-put leaves its temp
file, which is never listed as a blob (and holds no name another put could want).

Disk work (writing, reading, hashing, fsync) runs in threads, ``CHUNK_BYTES`` at a
time, so the event loop never waits on the disk. A put writes chunk N and hashes it in
two threads at once (SHA-256 is about as fast as the disk here) while it fetches chunk
N+1 from its source; ``get`` reads and hashes chunk N+1 while its reader uses chunk N.
A thread job is never cancelled half-way: the file is closed only once it has ended.
``get`` keeps its file open while it is read, so a blob replaced or deleted meanwhile
is still read whole.

Several processes may share a root (``cyclone up`` and ``cyclone run`` share a home):
every step is a single rename or unlink, safe against another process doing the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from shared.adapters.artifacts import DIGEST, InFlight, check_digest, rechunk
from shared.errors import BlobCorrupted, BlobNotFound, StoreError
from shared.ports.artifacts import CHUNK_BYTES, Blob

__all__ = ["FileArtifactStore"]

T = TypeVar("T")


class FileArtifactStore:
    """An ``ArtifactStore`` in the directory ``root`` (created when first written).

    ``close`` makes every later call raise ``StoreError``; puts in flight finish.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._closed = False

    async def put(self, chunks: AsyncIterable[bytes]) -> Blob:
        self._check_open()
        temp = await _TempFile.create(self.root / "tmp")
        try:
            blob = await temp.fill(chunks)
            await temp.then(_commit, temp.file, temp.path, self.path_of(blob.digest))
            await temp.wait()
        except BaseException:
            await temp.discard()
            raise
        return blob

    async def get(self, digest: str) -> AsyncIterator[bytes]:
        path = self.path_of(digest)
        file = await _io(_open_blob, path)
        if file is None:
            raise BlobNotFound(f"no blob {digest} in {self.root}")
        sha = hashlib.sha256()
        ahead = _ReadAhead(file, sha)
        try:
            while chunk := await ahead.next():
                yield chunk
        finally:
            await ahead.close()
        if f"sha256:{sha.hexdigest()}" != digest:
            raise BlobCorrupted(f"blob {digest} in {self.root} does not hash to its digest "
                                f"(read sha256:{sha.hexdigest()})")

    async def stat(self, digest: str) -> Blob | None:
        size = await _io(_size, self.path_of(digest))
        return None if size is None else Blob(digest, size)

    async def delete(self, digest: str) -> bool:
        return await _io(_unlink, self.path_of(digest))

    async def blobs(self) -> AsyncIterator[Blob]:
        """Every blob, a fan-out directory (a 256th of them) read at a time."""
        self._check_open()
        base = self.root / "sha256"
        for fan in await _io(_names, base):
            for blob in await _io(_blobs_in, base / fan):
                yield blob

    async def used_bytes(self) -> int:
        return sum([blob.size async for blob in self.blobs()])

    async def close(self) -> None:
        self._closed = True

    def path_of(self, digest: str) -> Path:
        """Where the blob ``digest`` is (or would be) stored."""
        self._check_open()
        hex_digest = check_digest(digest)
        return self.root / "sha256" / hex_digest[:2] / hex_digest

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"artifact store {self.root} is closed")


class _TempFile:
    """A put's temp file, and the thread jobs working on it: one write (or the commit) at
    a time, and beside it the hashing of the chunk being written."""

    def __init__(self, file: BinaryIO, path: Path) -> None:
        self.file = file
        self.path = path
        self._jobs = InFlight()  # writes, then the commit
        self._hashing = InFlight()  # beside them, on a second thread

    @classmethod
    async def create(cls, directory: Path) -> _TempFile:
        job = asyncio.ensure_future(_io(_create_temp, directory))
        try:
            return cls(*await asyncio.shield(job))
        except asyncio.CancelledError:  # the file may be made all the same: remove it
            await asyncio.wait([job])
            if not job.cancelled() and job.exception() is None:
                await asyncio.to_thread(_discard, *job.result())
            raise

    async def fill(self, chunks: AsyncIterable[bytes]) -> Blob:
        """Write ``chunks`` into the file while hashing them; their ``Blob``. A chunk is
        written and hashed in two threads at once (hashing is as slow as the disk)."""
        sha, size = hashlib.sha256(), 0
        async for chunk in rechunk(chunks, CHUNK_BYTES):
            await self._hashing.then(functools.partial(asyncio.to_thread, sha.update, chunk))
            await self.then(self.file.write, chunk)
            size += len(chunk)
        await self._hashing.wait()
        await self.wait()
        return Blob(f"sha256:{sha.hexdigest()}", size)

    async def then(self, job: Callable[..., object], *args: Any) -> None:
        """Start ``job(*args)`` in a thread once the job before it has ended."""
        await self.wait()
        await self._jobs.then(functools.partial(asyncio.to_thread, job, *args))

    async def wait(self) -> None:
        try:
            await self._jobs.wait()
        except OSError as exc:
            raise StoreError(f"artifact store: cannot write {self.path}: {exc}") from exc

    async def discard(self) -> None:
        """Remove the temp file, once no job uses it any more."""
        await self._hashing.settle()
        await self._jobs.settle()
        await asyncio.shield(asyncio.to_thread(_discard, self.file, self.path))


class _ReadAhead:
    """A blob's chunks, read and hashed in a thread: chunk N+1 while chunk N is used."""

    def __init__(self, file: BinaryIO, sha: Any) -> None:
        self._file = file
        self._sha = sha
        self._next = self._start()

    def _start(self) -> asyncio.Future[bytes]:
        return asyncio.ensure_future(_io(_read_hashing, self._file, self._sha))

    async def next(self) -> bytes:
        """The next chunk; ``b""`` at the end."""
        chunk = await asyncio.shield(self._next)  # a read is never cancelled half-way
        if chunk:
            self._next = self._start()
        return chunk

    async def close(self) -> None:
        """Close the file once the read in flight has ended."""
        await asyncio.wait([self._next])
        if not self._next.cancelled():
            self._next.exception()  # seen: a reader that stops early does not want it
        self._file.close()  # opened for reading: closing it does not wait on the disk


async def _io(job: Callable[..., T], *args: Any) -> T:
    """``job(*args)`` in a thread; an ``OSError`` (disk full, no permission) is a
    ``StoreError`` (a job returns what "not found" means to it instead of raising)."""
    try:
        return await asyncio.to_thread(job, *args)
    except OSError as exc:
        raise StoreError(f"artifact store: {exc}") from exc


# --- in threads ------------------------------------------------------------------------------

def _create_temp(directory: Path) -> tuple[BinaryIO, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".put-", dir=directory)
    return os.fdopen(fd, "wb"), Path(name)


def _read_hashing(file: BinaryIO, sha: Any) -> bytes:
    chunk = file.read(CHUNK_BYTES)
    sha.update(chunk)
    return chunk


def _open_blob(path: Path) -> BinaryIO | None:
    try:
        return open(path, "rb")  # closed by the reader, after its last read
    except FileNotFoundError:
        return None


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _commit(file: BinaryIO, temp: Path, final: Path) -> None:
    """Make the temp file durable, then the blob ``final`` in one rename."""
    file.flush()
    os.fsync(file.fileno())
    file.close()
    os.chmod(temp, 0o444)  # a blob is never written again, only replaced whole
    created = not final.parent.is_dir()
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, final)
    _fsync_dir(final.parent)
    if created:  # the new fan-out directory's own entry
        _fsync_dir(final.parent.parent)


def _discard(file: BinaryIO, temp: Path) -> None:
    """Best effort: the error being raised is the one that made the put fail."""
    with contextlib.suppress(OSError):
        file.close()
    with contextlib.suppress(OSError):
        temp.unlink()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _names(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []


def _blobs_in(fan: Path) -> list[Blob]:
    blobs = []
    with contextlib.suppress(FileNotFoundError), os.scandir(fan) as entries:
        for entry in entries:
            digest = f"sha256:{entry.name}"
            if not DIGEST.fullmatch(digest) or not entry.name.startswith(fan.name):
                continue
            with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                blobs.append(Blob(digest, entry.stat().st_size))
    return sorted(blobs, key=lambda blob: blob.digest)
