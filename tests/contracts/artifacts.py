"""The ArtifactStore contract (``shared/ports/artifacts.py``), run against every adapter.

Subclass ``ArtifactStoreContract`` as ``Test<Adapter>``, set ``BIG_BYTES`` (the size of
the flat-memory test's blob) and provide three fixtures:

* ``store``: an open, empty artifact store (closed by the fixture afterwards);
* ``reopen``: an async callable that closes the store it is given (waiting for what it
  runs in the background) and returns a new one on the same storage;
* ``raw``: a ``RawStorage``, to tamper with what is stored and to count what a put left
  behind, below the port.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import ClassVar, Protocol

import pytest

from shared.errors import BlobCorrupted, BlobNotFound, StoreError
from shared.ports.artifacts import CHUNK_BYTES, ArtifactStore, Blob

__all__ = ["ArtifactStoreContract", "RawStorage", "ReopenStore", "digest_of", "files_under",
           "pieces", "read_all", "sample"]

ReopenStore = Callable[[ArtifactStore], Awaitable[ArtifactStore]]
MB = 1024 * 1024


class RawStorage(Protocol):
    """The adapter's storage, seen from below the port."""

    async def change_byte(self, digest: str, at: int) -> None:
        """Flip the bits of the stored blob's byte ``at`` (its size stays)."""

    async def truncate(self, digest: str, size: int) -> None:
        """Cut the stored blob to its first ``size`` bytes."""

    async def orphans(self) -> int:
        """How many stored things (files, chunks) belong to no listed blob."""


def sample(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


async def pieces(data: bytes, sizes: Sequence[int] = (300_000, 1, 2 * MB + 5, 4096)
                 ) -> AsyncIterator[bytes]:
    """``data`` in pieces of ``sizes`` (cycled): sources never yield what the store reads."""
    at, k = 0, 0
    while at < len(data):
        yield data[at:at + sizes[k % len(sizes)]]
        at, k = at + sizes[k % len(sizes)], k + 1


async def read_all(store: ArtifactStore, digest: str) -> list[bytes]:
    return [chunk async for chunk in store.get(digest)]


async def failing(data: bytes, after: int) -> AsyncIterator[bytes]:
    """``data`` a chunk at a time, then an error once ``after`` bytes were yielded."""
    sent = 0
    async for chunk in pieces(data, [CHUNK_BYTES // 2]):
        if sent >= after:
            raise ConnectionResetError("the source went away")
        sent += len(chunk)
        yield chunk


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_peak_rss() -> int:
    """Reset this process's peak resident set (Linux's VmHWM); the resident set now."""
    if not sys.platform.startswith("linux"):
        pytest.skip("peak RSS is read from Linux's /proc/self/status")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # 5: reset the peak RSS to the current RSS
    return _status_bytes("VmRSS")


def peak_rss() -> int:
    return _status_bytes("VmHWM")


class ArtifactStoreContract:
    BIG_BYTES: ClassVar[int] = 1024 * MB  # the flat-memory test's blob

    @pytest.fixture
    async def store(self) -> AsyncIterator[ArtifactStore]:
        raise NotImplementedError("subclass provides the store fixture")
        yield  # pragma: no cover

    @pytest.fixture
    def reopen(self) -> ReopenStore:
        raise NotImplementedError("subclass provides the reopen fixture")

    @pytest.fixture
    def raw(self) -> RawStorage:
        raise NotImplementedError("subclass provides the raw fixture")

    # --- streams -----------------------------------------------------------------------------

    async def test_a_multi_chunk_stream_round_trips(self, store: ArtifactStore) -> None:
        data = sample(3 * CHUNK_BYTES + 12345)

        blob = await store.put(pieces(data))
        chunks = await read_all(store, blob.digest)

        assert blob == Blob(digest_of(data), len(data))
        assert b"".join(chunks) == data
        assert len(chunks) >= 4 and max(map(len, chunks)) <= CHUNK_BYTES

    async def test_an_empty_blob_round_trips(self, store: ArtifactStore) -> None:
        async def nothing() -> AsyncIterator[bytes]:
            for empty in (b"", b""):
                yield empty

        blob = await store.put(nothing())

        assert blob == Blob(digest_of(b""), 0)
        assert b"".join(await read_all(store, blob.digest)) == b""
        assert await store.stat(blob.digest) == blob

    async def test_blobs_survive_reopen(self, store: ArtifactStore,
                                        reopen: ReopenStore) -> None:
        data = sample(CHUNK_BYTES + 1)
        blob = await store.put(pieces(data))

        again = await reopen(store)

        assert await again.stat(blob.digest) == blob
        assert b"".join(await read_all(again, blob.digest)) == data

    # --- content addressing --------------------------------------------------------------------

    async def test_the_same_bytes_twice_are_stored_once(self, store: ArtifactStore) -> None:
        data = sample(2 * CHUNK_BYTES + 7)

        first = await store.put(pieces(data))
        second = await store.put(pieces(data, [CHUNK_BYTES, 99]))

        assert first == second == Blob(digest_of(data), len(data))
        assert [blob async for blob in store.blobs()] == [first]
        assert await store.used_bytes() == len(data)

    async def test_the_same_bytes_put_at_once_are_stored_once(
        self, store: ArtifactStore, reopen: ReopenStore, raw: RawStorage
    ) -> None:
        data = sample(2 * CHUNK_BYTES + 7)

        results = await asyncio.gather(*(store.put(pieces(data)) for _ in range(4)))

        again = await reopen(store)
        assert set(results) == {Blob(digest_of(data), len(data))}
        assert [blob async for blob in again.blobs()] == [results[0]]
        assert await raw.orphans() == 0
        assert b"".join(await read_all(again, results[0].digest)) == data

    async def test_stat_blobs_and_used_bytes(self, store: ArtifactStore) -> None:
        datas = [sample(size, seed) for seed, size in enumerate([10, CHUNK_BYTES, 3 * MB + 1])]

        blobs = [await store.put(pieces(data)) for data in datas]

        for blob, data in zip(blobs, datas, strict=True):
            assert await store.stat(blob.digest) == Blob(digest_of(data), len(data))
        assert sorted([blob async for blob in store.blobs()], key=str) == sorted(blobs, key=str)
        assert await store.used_bytes() == sum(map(len, datas))

    async def test_delete(self, store: ArtifactStore) -> None:
        keep, drop = await store.put(pieces(b"keep")), await store.put(pieces(b"drop"))

        assert await store.delete(drop.digest) is True
        assert await store.delete(drop.digest) is False

        assert await store.stat(drop.digest) is None
        with pytest.raises(BlobNotFound):
            await read_all(store, drop.digest)
        assert [blob async for blob in store.blobs()] == [keep]
        assert await store.used_bytes() == 4
        assert await store.put(pieces(b"drop")) == drop  # and it can be stored again
        assert b"".join(await read_all(store, drop.digest)) == b"drop"

    # --- what is not there ---------------------------------------------------------------------

    async def test_an_unknown_digest_is_not_found(self, store: ArtifactStore) -> None:
        unknown = digest_of(b"never stored")

        with pytest.raises(BlobNotFound):
            await read_all(store, unknown)
        assert await store.stat(unknown) is None
        assert await store.delete(unknown) is False
        assert [blob async for blob in store.blobs()] == []
        assert await store.used_bytes() == 0

    @pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "0" * 32, "sha256:" + "A" * 64,
                                     "sha256:../../" + "0" * 58, "", "0" * 64])
    async def test_a_malformed_digest_is_a_store_error(self, store: ArtifactStore,
                                                       bad: str) -> None:
        with pytest.raises(StoreError, match="invalid digest"):
            await read_all(store, bad)
        with pytest.raises(StoreError, match="invalid digest"):
            await store.stat(bad)
        with pytest.raises(StoreError, match="invalid digest"):
            await store.delete(bad)

    # --- integrity -----------------------------------------------------------------------------

    async def test_a_changed_byte_is_found_after_the_last_chunk(
        self, store: ArtifactStore, raw: RawStorage
    ) -> None:
        data = sample(3 * CHUNK_BYTES)
        blob = await store.put(pieces(data))
        await raw.change_byte(blob.digest, CHUNK_BYTES + 10)

        read = bytearray()
        with pytest.raises(BlobCorrupted):
            async for chunk in store.get(blob.digest):
                read += chunk

        assert len(read) == len(data)  # every chunk came, then the error instead of the end
        assert read != data

    @pytest.mark.parametrize("keep", [0, CHUNK_BYTES, 2 * CHUNK_BYTES + 5])
    async def test_a_truncated_blob_is_corrupted(self, store: ArtifactStore, raw: RawStorage,
                                                 keep: int) -> None:
        data = sample(3 * CHUNK_BYTES)
        blob = await store.put(pieces(data))
        await raw.truncate(blob.digest, keep)

        with pytest.raises(BlobCorrupted):
            await read_all(store, blob.digest)

    # --- failures ------------------------------------------------------------------------------

    async def test_a_put_whose_source_fails_leaves_nothing(self, store: ArtifactStore,
                                                           raw: RawStorage) -> None:
        data = sample(4 * CHUNK_BYTES)

        with pytest.raises(ConnectionResetError):  # the source's own error, as it was
            await store.put(failing(data, after=2 * CHUNK_BYTES))

        assert [blob async for blob in store.blobs()] == []
        assert await store.used_bytes() == 0
        assert await raw.orphans() == 0

    async def test_a_put_cancelled_half_way_leaves_nothing(self, store: ArtifactStore,
                                                           raw: RawStorage) -> None:
        halfway, never = asyncio.Event(), asyncio.Event()

        async def stalls() -> AsyncIterator[bytes]:
            for n in range(3):
                yield sample(CHUNK_BYTES, seed=n)
            halfway.set()
            await never.wait()
            yield b"never"

        put = asyncio.ensure_future(store.put(stalls()))
        await halfway.wait()
        put.cancel()
        with pytest.raises(asyncio.CancelledError):
            await put

        assert [blob async for blob in store.blobs()] == []
        assert await raw.orphans() == 0

    async def test_puts_cancelled_at_any_point_leave_whole_blobs_or_nothing(
        self, store: ArtifactStore, reopen: ReopenStore, raw: RawStorage
    ) -> None:
        datas = [sample(2 * CHUNK_BYTES + k, seed=k) for k in range(12)]
        for k, data in enumerate(datas):
            put = asyncio.ensure_future(store.put(pieces(data)))
            for _ in range(k * 3):  # a different point of the put each time
                await asyncio.sleep(0)
            put.cancel()
            await asyncio.gather(put, return_exceptions=True)

        again = await reopen(store)  # waits for what the cancelled puts still finish
        stored = [blob async for blob in again.blobs()]
        assert await raw.orphans() == 0
        for blob in stored:
            data = next(d for d in datas if digest_of(d) == blob.digest)
            assert blob.size == len(data)
            assert b"".join(await read_all(again, blob.digest)) == data

    async def test_calls_after_close_are_store_errors(self, store: ArtifactStore) -> None:
        blob = await store.put(pieces(b"x"))
        await store.close()
        await store.close()  # idempotent

        with pytest.raises(StoreError, match="closed"):
            await store.put(pieces(b"y"))
        with pytest.raises(StoreError, match="closed"):
            await read_all(store, blob.digest)
        with pytest.raises(StoreError, match="closed"):
            await store.stat(blob.digest)

    # --- memory --------------------------------------------------------------------------------

    async def test_a_big_blob_streams_in_and_out_with_flat_memory(
        self, store: ArtifactStore
    ) -> None:
        pattern = sample(CHUNK_BYTES + 4321)  # not a multiple of the chunk: pieces re-cut
        sha = hashlib.sha256()

        async def big() -> AsyncIterator[bytes]:
            left = self.BIG_BYTES
            while left:
                piece = pattern[:left]  # the same object while whole: no new memory
                sha.update(piece)
                left -= len(piece)
                yield piece

        before = reset_peak_rss()
        blob = await store.put(big())
        read = 0
        async for chunk in store.get(blob.digest):  # integrity is checked by get itself
            read += len(chunk)
        growth = peak_rss() - before

        assert blob == Blob(f"sha256:{sha.hexdigest()}", self.BIG_BYTES)
        assert read == self.BIG_BYTES
        assert growth < 64 * MB, f"RSS grew by {growth / MB:.0f} MB for {read / MB:.0f} MB"


def files_under(root: Path) -> list[Path]:
    """Every file under ``root`` (for harnesses that count what a put left)."""
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []
