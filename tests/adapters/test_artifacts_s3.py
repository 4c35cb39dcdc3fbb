"""S3ArtifactStore: the ArtifactStore contract against versitygw (a real S3 server over a
POSIX directory), plus what the bucket shows of it: multipart puts, their failures and
cancellations, the copy past S3's single-copy limit, prefixes, and errors."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cyclone.ports import open_artifact_store
from shared.adapters.artifacts.s3 import S3ArtifactStore
from shared.adapters.artifacts.s3_url import S3Location
from shared.config import Settings
from shared.errors import StoreError
from shared.ports.artifacts import ArtifactStore
from tests.contracts.artifacts import (
    ArtifactStoreContract,
    RawStorage,
    ReopenStore,
    digest_of,
    failing,
    pieces,
    read_all,
    sample,
)
from tests.infra.s3 import S3Bucket, S3Server, s3_bucket, s3_server

__all__ = ["s3_bucket", "s3_server"]  # the fixtures this module uses

MB = 1024 * 1024
PART = S3ArtifactStore.PART_BYTES


class RawBucket:
    """The bucket below S3: its objects' files, changed as a disk error or a person with a
    shell would, and what S3 lists besides the blobs."""

    def __init__(self, bucket: S3Bucket, prefix: str = "") -> None:
        self.bucket = bucket
        self.prefix = prefix

    def path(self, digest: str) -> Path:
        return self.bucket.folder / f"{self.prefix}sha256" / digest.removeprefix("sha256:")

    async def change_byte(self, digest: str, at: int) -> None:
        with open(self.path(digest), "r+b") as file:
            file.seek(at)
            byte = file.read(1)
            file.seek(at)
            file.write(bytes([byte[0] ^ 0xFF]))

    async def truncate(self, digest: str, size: int) -> None:
        os.truncate(self.path(digest), size)

    async def keys(self) -> list[str]:
        async with self.bucket.server.client() as client:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket.name)
            return [item["Key"] async for page in pages for item in page.get("Contents", [])]

    async def uploads(self) -> list[str]:
        """The keys of the multipart uploads begun and neither completed nor aborted."""
        async with self.bucket.server.client() as client:
            listed = await client.list_multipart_uploads(Bucket=self.bucket.name)
        return [upload["Key"] for upload in listed.get("Uploads", [])]

    async def orphans(self) -> int:
        blobs = f"{self.prefix}sha256/"
        strays = [key for key in await self.keys() if not key.startswith(blobs)]
        return len(strays) + len(await self.uploads())


async def connect(url: str) -> S3ArtifactStore:
    return await S3ArtifactStore.connect(url)


class TestS3ArtifactStore(ArtifactStoreContract):
    # A few hundred MB: 32 parts go up and 256 chunks come down, so whatever held a
    # part per part (or a chunk per chunk) would show in this process's RSS.
    BIG_BYTES = 256 * MB

    @pytest.fixture
    async def store(self, s3_bucket: S3Bucket) -> AsyncIterator[ArtifactStore]:
        store = await connect(s3_bucket.url)
        yield store
        await store.close()

    @pytest.fixture
    async def reopen(self, s3_bucket: S3Bucket) -> AsyncIterator[ReopenStore]:
        opened: list[ArtifactStore] = []

        async def reopen(old: ArtifactStore) -> ArtifactStore:
            await old.close()  # "reopen": a new client on the same bucket
            opened.append(await connect(s3_bucket.url))
            return opened[-1]

        yield reopen
        for store in opened:
            await store.close()

    @pytest.fixture
    def raw(self, s3_bucket: S3Bucket) -> RawStorage:
        return RawBucket(s3_bucket)


@pytest.fixture
async def store(s3_bucket: S3Bucket) -> AsyncIterator[S3ArtifactStore]:
    store = await connect(s3_bucket.url)
    yield store
    await store.close()


# --- multipart puts ------------------------------------------------------------------------

async def test_a_blob_of_several_parts_is_one_object_any_s3_client_reads_by_its_digest(
    store: S3ArtifactStore, s3_bucket: S3Bucket
) -> None:
    data = sample(2 * PART + 12345)
    raw = RawBucket(s3_bucket)

    blob = await store.put(pieces(data))

    assert blob.digest == digest_of(data)
    assert await raw.keys() == [f"sha256/{blob.digest.removeprefix('sha256:')}"]
    assert await raw.orphans() == 0
    async with s3_bucket.server.client() as client:
        reply = await client.get_object(Bucket=s3_bucket.name, Key=(await raw.keys())[0])
        assert await reply["Body"].read() == data


async def test_the_same_parts_twice_and_at_once_leave_one_object_and_no_upload(
    store: S3ArtifactStore, s3_bucket: S3Bucket
) -> None:
    data = sample(PART + 7)
    raw = RawBucket(s3_bucket)

    await asyncio.gather(*(store.put(pieces(data)) for _ in range(3)))
    await store.put(pieces(data))  # stored before: its upload is aborted, not completed

    assert len(await raw.keys()) == 1
    assert await raw.orphans() == 0
    assert b"".join(await read_all(store, digest_of(data))) == data


async def test_a_multipart_put_whose_source_fails_aborts_its_upload(
    store: S3ArtifactStore, s3_bucket: S3Bucket
) -> None:
    data = sample(4 * PART)
    raw = RawBucket(s3_bucket)

    with pytest.raises(ConnectionResetError):  # the source's own error, as it was
        await store.put(failing(data, after=2 * PART + MB))

    assert await raw.keys() == []
    assert await raw.uploads() == []


async def test_a_multipart_put_cancelled_after_two_parts_aborts_its_upload(
    store: S3ArtifactStore, s3_bucket: S3Bucket
) -> None:
    raw = RawBucket(s3_bucket)
    sent_two, never = asyncio.Event(), asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        for n in range(3):
            yield sample(PART, seed=n)
        sent_two.set()  # asked for a fourth: two parts sent, the third in flight
        await never.wait()
        yield b"never"

    put = asyncio.ensure_future(store.put(stalls()))
    await sent_two.wait()
    begun = await raw.uploads()  # there is something to abort
    assert len(begun) == 1 and begun[0].startswith("tmp/"), begun
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put

    assert await raw.keys() == []
    assert await raw.uploads() == []


@pytest.mark.parametrize("at", [0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 1.0])
async def test_a_multipart_put_cancelled_at_any_time_leaves_a_whole_blob_or_nothing(
    s3_bucket: S3Bucket, at: float
) -> None:
    raw = RawBucket(s3_bucket)
    store = await connect(s3_bucket.url)
    started = time.monotonic()
    await store.put(pieces(sample(2 * PART + 3, seed=1)))  # how long a put takes here
    took = time.monotonic() - started
    data = sample(2 * PART + 3, seed=2)

    put = asyncio.ensure_future(store.put(pieces(data)))
    await asyncio.sleep(at * took)  # that far into the put (the last ones: its commit)
    put.cancel()
    await asyncio.gather(put, return_exceptions=True)
    await store.close()  # waits for a commit the cancelled put had begun

    assert await raw.orphans() == 0
    again = await connect(s3_bucket.url)
    try:
        blob = await again.stat(digest_of(data))
        if blob is not None:
            assert b"".join(await read_all(again, blob.digest)) == data
    finally:
        await again.close()


async def test_a_multipart_put_cancelled_while_it_commits_still_stores_its_blob(
    store: S3ArtifactStore, s3_bucket: S3Bucket
) -> None:
    # The commit (complete, copy, delete) is when a tmp/ object exists: the put is
    # cancelled once one is seen. 6 parts make the copy long enough to be seen; should the
    # put end first all the same (a loaded machine), another is tried.
    raw = RawBucket(s3_bucket)
    for seed in range(3):
        data = sample(6 * PART + 1, seed=seed)
        put = asyncio.ensure_future(store.put(pieces(data)))
        async with s3_bucket.server.client() as client:
            while not put.done():
                listed = await client.list_objects_v2(Bucket=s3_bucket.name, Prefix="tmp/")
                if listed.get("Contents"):
                    put.cancel()
                    break
        if put.cancelled() or not put.done():
            break
        await store.delete(digest_of(data))
    else:
        pytest.fail("the commit was never seen: every put ended first")
    with pytest.raises(asyncio.CancelledError):
        await put

    again = await connect(s3_bucket.url)
    await store.close()  # waits for the commit
    try:
        assert await raw.keys() == [f"sha256/{digest_of(data)[7:]}"]
        assert await raw.orphans() == 0
        assert b"".join(await read_all(again, digest_of(data))) == data
    finally:
        await again.close()


async def test_a_blob_past_one_copy_is_copied_in_ranges(s3_bucket: S3Bucket) -> None:
    class SmallCopies(S3ArtifactStore):
        COPY_BYTES = 5 * MB  # S3's smallest part: 2 parts of 8 MiB copy in 4 ranges

    data = sample(2 * PART + 3)
    store = await SmallCopies.connect(s3_bucket.url)
    try:
        blob = await store.put(pieces(data))
        assert b"".join(await read_all(store, blob.digest)) == data
    finally:
        await store.close()
    assert await RawBucket(s3_bucket).orphans() == 0


# --- where, and errors ---------------------------------------------------------------------

async def test_stores_under_two_prefixes_of_a_bucket_keep_apart(s3_bucket: S3Bucket) -> None:
    left = await connect(s3_bucket.url.replace("?", "/ci/left/?"))
    right = await connect(s3_bucket.url.replace("?", "/ci/right?"))
    try:
        blob = await left.put(pieces(b"left"))
        await right.put(pieces(b"right"))

        assert [b async for b in left.blobs()] == [blob]
        assert await right.stat(blob.digest) is None
        assert sorted(await RawBucket(s3_bucket).keys()) == sorted(
            [f"ci/left/sha256/{digest_of(b'left')[7:]}",
             f"ci/right/sha256/{digest_of(b'right')[7:]}"])
    finally:
        await left.close()
        await right.close()


async def test_cyclone_artifact_store_set_to_an_s3_url_opens_this_store(
    s3_bucket: S3Bucket
) -> None:
    env = {"CYCLONE_BUS": "kafka://k:9092", "CYCLONE_STORE": "mongodb://m:27017",
           "CYCLONE_COORD": "etcd://e:2379", "CYCLONE_LOG_STORE": "mongodb://m:27017",
           "CYCLONE_ARTIFACT_STORE": s3_bucket.url}
    infra = Settings.from_env(env).require_infra()

    store = await open_artifact_store(infra.artifacts_url)
    try:
        assert isinstance(store, S3ArtifactStore)
        blob = await store.put(pieces(b"through the settings"))
        assert await RawBucket(s3_bucket).keys() == [f"sha256/{blob.digest[7:]}"]
    finally:
        await store.close()


async def test_a_server_gone_mid_read_is_a_store_error(tmp_path: Path) -> None:
    server = S3Server(tmp_path / "data", tmp_path / "versitygw.log")
    await asyncio.to_thread(server.start)
    try:
        async with server.client() as client:
            await client.create_bucket(Bucket="gone")
        store = await connect(server.url("gone"))
        blob = await store.put(pieces(sample(64 * MB)))
        chunks = aiter(store.get(blob.digest))
        await anext(chunks)
        server.stop(kill=True)  # a crash: the connection is cut mid-body

        with pytest.raises(StoreError) as caught:
            async for _ in chunks:  # what was already buffered, then the cut
                pass
        with pytest.raises(StoreError):
            await store.stat(blob.digest)
        await store.close()
    finally:
        server.stop()
    assert server.secret_key not in str(caught.value)


async def test_connecting_names_what_is_wrong_without_the_secret(
    s3_bucket: S3Bucket, s3_server: S3Server
) -> None:
    url = s3_bucket.url
    secret = s3_server.secret_key
    dead = url.replace(f":{s3_server.port}/", f":{_closed_port()}/")
    cases = [
        (dead, "no S3 server reachable"),
        (url.replace(secret, "wrong-secret"), "denied"),
        (url.replace(f"/{s3_bucket.name}?", "/no-such-bucket?"), "no bucket 'no-such-bucket'"),
        (url.replace("tls=0", "tls=maybe"), "option tls='maybe'"),
        (url.replace("s3://", "s4://"), "expected s3://"),
    ]
    for bad, why in cases:
        with pytest.raises(StoreError, match=why) as caught:
            await S3ArtifactStore.connect(bad, timeout_s=0.5)
        assert secret not in str(caught.value) and "wrong-secret" not in str(caught.value)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the URL -------------------------------------------------------------------------------

def test_an_s3_url_names_the_endpoint_bucket_prefix_and_keys() -> None:
    where = S3Location.parse("s3://AKIA:se%2Fcr%2Bet@minio.local:9000/blobs/ci/cyclone/"
                             "?region=eu-west-1&tls=0&style=virtual")

    assert where == S3Location("http://minio.local:9000", "blobs", "ci/cyclone/", "eu-west-1",
                               "virtual", "AKIA", "se/cr+et")
    assert "se/cr+et" not in repr(where) and "AKIA" not in where.where
    assert S3Location.parse("s3://s3.amazonaws.com/blobs") == S3Location(
        "https://s3.amazonaws.com", "blobs", "")  # keys from botocore's chain


@pytest.mark.parametrize(("url", "why"), [
    ("mongodb://host/blobs", "expected s3://"),
    ("s3:///blobs", "expected s3://"),
    ("s3://host", "bucket ''"),
    ("s3://host/Blobs", "bucket 'Blobs'"),
    ("s3://host:99999/blobs", "not a URL"),
    ("s3://key@host/blobs", "ACCESS:SECRET@"),
    ("s3://host/blobs?tls=yes", "option tls='yes'"),
    ("s3://host/blobs?style=dns", "option style='dns'"),
    ("s3://host/blobs?region=", "option region=''"),
    ("s3://host/blobs?endpoint=x", "unknown option 'endpoint'"),
])
def test_a_malformed_s3_url_says_what_is_wrong(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("?", r"\?")):
        S3Location.parse(url)
