"""FileArtifactStore: the ArtifactStore contract, plus what the files show of it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.adapters.artifacts.files import FileArtifactStore
from shared.errors import StoreError
from shared.ports.artifacts import CHUNK_BYTES, ArtifactStore
from tests.contracts.artifacts import (
    ArtifactStoreContract,
    RawStorage,
    ReopenStore,
    digest_of,
    files_under,
    pieces,
    read_all,
    sample,
)


class RawFiles:
    """The blobs' files, changed as a disk error or a person with a shell would."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        return FileArtifactStore(self.root).path_of(digest)

    async def change_byte(self, digest: str, at: int) -> None:
        path = self.path(digest)
        path.chmod(0o644)
        with open(path, "r+b") as file:
            file.seek(at)
            byte = file.read(1)
            file.seek(at)
            file.write(bytes([byte[0] ^ 0xFF]))

    async def truncate(self, digest: str, size: int) -> None:
        path = self.path(digest)
        path.chmod(0o644)
        os.truncate(path, size)

    async def orphans(self) -> int:
        return len(files_under(self.root / "tmp"))


class TestFileArtifactStore(ArtifactStoreContract):
    # 1 GB: a file of it is written and read back (about 10 s here, much of it fsync).
    BIG_BYTES = 1024 * 1024 * 1024

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[ArtifactStore]:
        store = FileArtifactStore(tmp_path / "artifacts")
        yield store
        await store.close()

    @pytest.fixture
    async def reopen(self, tmp_path: Path) -> ReopenStore:
        async def reopen(old: ArtifactStore) -> ArtifactStore:
            await old.close()
            return FileArtifactStore(tmp_path / "artifacts")

        return reopen

    @pytest.fixture
    def raw(self, tmp_path: Path) -> RawStorage:
        return RawFiles(tmp_path / "artifacts")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


async def test_a_blob_is_one_read_only_file_named_by_its_digest(root: Path) -> None:
    data = sample(CHUNK_BYTES + 1)
    store = FileArtifactStore(root)

    blob = await store.put(pieces(data))
    await store.put(pieces(data))

    hex_digest = digest_of(data).removeprefix("sha256:")
    path = root / "sha256" / hex_digest[:2] / hex_digest
    assert files_under(root) == [path]
    assert path.read_bytes() == data
    assert path.stat().st_mode & 0o222 == 0
    assert blob.digest == digest_of(data)


async def test_a_damaged_copy_is_healed_by_putting_the_bytes_again(root: Path) -> None:
    data = sample(CHUNK_BYTES + 1)
    store = FileArtifactStore(root)
    blob = await store.put(pieces(data))
    await RawFiles(root).change_byte(blob.digest, 5)

    assert await store.put(pieces(data)) == blob
    assert b"".join(await read_all(store, blob.digest)) == data


async def test_a_reader_started_before_a_delete_reads_the_blob_whole(root: Path) -> None:
    data = sample(3 * CHUNK_BYTES)
    store = FileArtifactStore(root)
    blob = await store.put(pieces(data))

    read = bytearray()
    async for chunk in store.get(blob.digest):
        if not read:
            assert await store.delete(blob.digest)
        read += chunk

    assert read == data


async def test_temp_files_of_a_killed_process_are_not_blobs(root: Path) -> None:
    (root / "tmp").mkdir(parents=True)
    (root / "tmp" / ".put-killed").write_bytes(b"half a blob")
    (root / "sha256" / "ab").mkdir(parents=True)
    (root / "sha256" / "ab" / "not-a-digest").write_bytes(b"x")
    store = FileArtifactStore(root)

    assert [blob async for blob in store.blobs()] == []
    assert await store.used_bytes() == 0


async def test_a_disk_error_is_a_store_error(root: Path) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    root.write_bytes(b"a file where the root directory should be")
    store = FileArtifactStore(root)

    with pytest.raises(StoreError, match="artifact store"):
        await store.put(pieces(b"data"))
