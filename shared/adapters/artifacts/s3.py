"""The S3 artifact store: a blob is an object of an S3 bucket, through aiobotocore.

Implements ``shared.ports.artifacts.ArtifactStore``; the port's docstring is the contract.
Open with ``await S3ArtifactStore.connect("s3://ACCESS:SECRET@host:9000/bucket?tls=0")``
(the URL: ``shared.adapters.artifacts.s3_url``). Tested against versitygw v1.8.0, an S3
gateway over a POSIX directory (``tests/infra/s3.py``), not against AWS.

Keys, under the URL's prefix::

    sha256/<64 hex>   a blob, named by its digest
    tmp/<32 hex>      a multipart put's object, between its completion and its copy

``put`` cuts what its source yields into ``PART_BYTES`` parts, hashing them. A blob of
one part (test reports, most artifacts) is whole in memory before anything is sent: one
PutObject writes it under its digest, which S3 makes visible whole or not at all. A
bigger one is a multipart upload to a fresh ``tmp/`` key, a part in flight while the
next is fetched and hashed; once the digest is known the upload is completed, copied
inside the server to the digest's key (CopyObject; ranges of UploadPartCopy past
``COPY_BYTES``, S3's limit for one copy) and the temp object deleted. A put that fails or
is cancelled before that aborts its upload, once the part in flight has ended (the parts
of an aborted upload are freed). The commit runs in its own task, so a cancelled caller
leaves a whole blob or none, and ``close`` waits for it. Memory: about three parts (the
one in flight, aiohttp's copy of it, the next one being gathered); 24 MB measured for a
256 MB blob put and read back.

Stored once: a put asks (HeadObject) whether its digest is stored before it sends the
bytes of a one-part blob or completes an upload, and sends or completes nothing when it
is. Two puts of the same new bytes at once may both write them: the later object
replaces the earlier, with the same bytes. (If-None-Match would settle that in one
request, but versitygw ignores it on CopyObject.)

``get`` streams GetObject's body ``CHUNK_BYTES`` at a time, hashing it, and raises
``BlobCorrupted`` after the last chunk when the bytes do not hash to the digest.
``stat`` is HeadObject; ``delete`` HeadObject then DeleteObject (S3's delete does not
say whether the key was there); ``blobs`` lists ``sha256/`` a page (1,000 keys) at a
time, and ``used_bytes`` adds their sizes up.

A process killed mid-put leaves an incomplete multipart upload (its parts use space
under no key) or a ``tmp/`` object; neither is ever listed as a blob. On AWS a
lifecycle rule removes them (AbortIncompleteMultipartUpload; expiry of ``tmp/``).

Every botocore, aiohttp and socket error becomes a ``StoreError`` naming the endpoint,
bucket and prefix, never the keys; a missing key is ``BlobNotFound`` (``get``) or
``None`` (``stat``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
)

from shared.adapters.artifacts import DIGEST, InFlight, check_digest, rechunk
from shared.adapters.artifacts.s3_url import S3Location, mask
from shared.errors import BlobCorrupted, BlobNotFound, StoreError
from shared.ports.artifacts import CHUNK_BYTES, Blob

if TYPE_CHECKING:
    from aiobotocore.response import StreamingBody
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

__all__ = ["DEFAULT_TIMEOUT_S", "S3ArtifactStore"]

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TIMEOUT_S = 5.0  # to connect to the endpoint, unless connect() is told otherwise
READ_TIMEOUT_S = 60.0  # between two reads of a reply: a server that stalls this long fails
MAX_PARTS = 10_000  # S3's limit for one multipart upload
_BLOBS, _TEMP = "sha256/", "tmp/"
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


class S3ArtifactStore:
    """An ``ArtifactStore`` in an S3 bucket. Use ``await S3ArtifactStore.connect(url)``.

    ``close`` waits for commits and clean-ups in flight and is idempotent; any call after
    it raises ``StoreError``.
    """

    # 8 MiB: S3 wants 5 MiB at least (but for the last part), and a put holds about three.
    # At most MAX_PARTS of them: a blob is 78 GiB at most.
    PART_BYTES: ClassVar[int] = 8 * 1024 * 1024
    COPY_BYTES: ClassVar[int] = 5 * 1024 ** 3  # S3's limit for one CopyObject (and one part)

    def __init__(self, client: S3Client, location: S3Location, stack: AsyncExitStack) -> None:
        self._client = client
        self._bucket = location.bucket
        self._prefix = location.prefix
        self._where = location.where
        self._stack = stack
        self._tasks: set[asyncio.Future[Any]] = set()
        self._closed = False

    @classmethod
    async def connect(cls, url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> S3ArtifactStore:
        """The store at ``url``, once its bucket answers (``StoreError`` if it does not:
        unreachable, refused keys, no such bucket)."""
        try:
            location = S3Location.parse(url)
        except ValueError as exc:
            raise StoreError(f"S3 artifact store {mask(url)!r}: {exc}") from None
        stack = AsyncExitStack()
        try:
            with _translated(location.where, "connect"):
                client = await stack.enter_async_context(get_session().create_client(
                    "s3", endpoint_url=location.endpoint_url, region_name=location.region,
                    aws_access_key_id=location.access_key,
                    aws_secret_access_key=location.secret_key, config=_config(location, timeout_s)))
            store = cls(client, location, stack)
            await store._check_bucket()
        except BaseException:
            await stack.aclose()
            raise
        return store

    # --- the port ----------------------------------------------------------------------------

    async def put(self, chunks: AsyncIterable[bytes]) -> Blob:
        self._check_open()
        parts = aiter(rechunk(chunks, self.PART_BYTES))
        head = [await anext(parts, b"")]
        if (second := await anext(parts, None)) is None:  # one part: sent whole
            blob = Blob(await _digest_of(head[0]), len(head[0]))
            return await self._detached(self._put_whole(blob, head.pop()))
        head.append(second)
        del second  # the parts in flight are all a put holds: none stays here
        return await self._put_in_parts(_chain(head, parts))

    async def get(self, digest: str) -> AsyncIterator[bytes]:
        self._check_open()
        key = self._key_of(digest)
        body = await self._open(key, digest)
        sha = hashlib.sha256()
        try:
            async for chunk in rechunk(self._read(body, key), CHUNK_BYTES):
                sha.update(chunk)  # about a millisecond a chunk: not worth a thread
                yield chunk
        finally:
            body.close()
        if f"sha256:{sha.hexdigest()}" != digest:
            raise BlobCorrupted(f"{self._where}: blob {digest} does not hash to its digest "
                                f"(read sha256:{sha.hexdigest()})")

    async def stat(self, digest: str) -> Blob | None:
        self._check_open()
        size = await self._size_of(self._key_of(digest))
        return None if size is None else Blob(digest, size)

    async def delete(self, digest: str) -> bool:
        self._check_open()
        key = self._key_of(digest)
        if await self._size_of(key) is None:
            return False
        with self._errors(f"DeleteObject {key}"):
            await self._client.delete_object(Bucket=self._bucket, Key=key)
        return True

    async def blobs(self) -> AsyncIterator[Blob]:
        self._check_open()
        keys = self._prefix + _BLOBS
        pages = aiter(self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=keys))
        while True:
            with self._errors(f"ListObjectsV2 {keys}"):
                page = await anext(pages, None)
            if page is None:
                return
            for item in page.get("Contents", []):
                digest = "sha256:" + item["Key"].removeprefix(keys)
                if DIGEST.fullmatch(digest):  # anything else under sha256/ is not ours
                    yield Blob(digest, item["Size"])

    async def used_bytes(self) -> int:
        return sum([blob.size async for blob in self.blobs()])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        await self._stack.aclose()

    # --- putting -------------------------------------------------------------------------------

    async def _put_whole(self, blob: Blob, data: bytes) -> Blob:
        key = self._key_of(blob.digest)
        if await self._size_of(key) is None:  # else stored before: nothing to send
            with self._errors(f"PutObject {key}"):
                await self._client.put_object(Bucket=self._bucket, Key=key, Body=data)
        return blob

    async def _put_in_parts(self, parts: AsyncIterator[bytes]) -> Blob:
        temp = f"{self._prefix}{_TEMP}{uuid.uuid4().hex}"
        upload = await self._create_upload(temp)
        sent: list[CompletedPartTypeDef] = []
        uploads = InFlight()
        try:
            blob = await self._send(temp, upload, parts, uploads, sent)
        except BaseException:
            await uploads.settle()  # no part may land after the abort
            await self._detached(self._discard(temp, upload))
            raise
        return await self._detached(self._commit(temp, upload, sent, blob))

    async def _create_upload(self, temp: str) -> str:
        """A multipart upload to ``temp``; aborted again if the caller is cancelled while
        it is being created (it may be created all the same)."""
        job = asyncio.ensure_future(self._start_upload(temp))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            await self._detached(self._abort_when_started(temp, job))
            raise

    async def _start_upload(self, key: str) -> str:
        with self._errors(f"CreateMultipartUpload {key}"):
            return (await self._client.create_multipart_upload(
                Bucket=self._bucket, Key=key))["UploadId"]

    async def _abort_when_started(self, temp: str, job: asyncio.Future[str]) -> None:
        await asyncio.wait([job])
        if not job.cancelled() and job.exception() is None:
            await self._discard(temp, job.result())

    async def _send(self, temp: str, upload: str, parts: AsyncIterator[bytes],
                    uploads: InFlight, sent: list[CompletedPartTypeDef]) -> Blob:
        """Upload ``parts`` to ``temp`` while hashing them; their ``Blob``. The source's
        own errors pass as they are."""
        sha, size, number = hashlib.sha256(), 0, 0
        async for part in parts:
            number += 1
            if number > MAX_PARTS:
                raise StoreError(f"{self._where}: a blob of more than {MAX_PARTS} parts of "
                                 f"{self.PART_BYTES} bytes is more than S3 takes in one upload")
            await asyncio.to_thread(sha.update, part)  # hashlib lets go of the GIL
            await uploads.then(functools.partial(self._upload_part, temp, upload, number,
                                                 part, sent))
            size += len(part)
        await uploads.wait()
        return Blob(f"sha256:{sha.hexdigest()}", size)

    async def _upload_part(self, temp: str, upload: str, number: int, part: bytes,
                           sent: list[CompletedPartTypeDef]) -> None:
        with self._errors(f"UploadPart {number} of {temp}"):
            reply = await self._client.upload_part(Bucket=self._bucket, Key=temp,
                                                   UploadId=upload, PartNumber=number, Body=part)
        sent.append({"ETag": reply["ETag"], "PartNumber": number})

    async def _commit(self, temp: str, upload: str, sent: list[CompletedPartTypeDef],
                      blob: Blob) -> Blob:
        """Complete the upload and copy it to the blob's key (when not stored before);
        the upload or the temp object is gone afterwards, however this ends."""
        key = self._key_of(blob.digest)
        completed = False
        try:
            if await self._size_of(key) is None:  # else stored before: the upload goes
                await self._complete(temp, upload, sent)
                completed = True
                await self._copy(temp, key, blob.size)
        finally:
            await self._discard(temp, None if completed else upload)
        return blob

    async def _complete(self, key: str, upload: str, sent: list[CompletedPartTypeDef]) -> None:
        with self._errors(f"CompleteMultipartUpload {key}"):
            await self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": sent})

    async def _copy(self, source: str, key: str, size: int) -> None:
        """Copy ``source`` to ``key`` inside the server: one CopyObject up to
        ``COPY_BYTES``, past it a multipart upload of UploadPartCopy ranges."""
        if size <= self.COPY_BYTES:
            with self._errors(f"CopyObject {source} to {key}"):
                await self._client.copy_object(Bucket=self._bucket, Key=key,
                                               CopySource={"Bucket": self._bucket, "Key": source})
            return
        upload = await self._start_upload(key)
        try:
            copied = [await self._copy_part(source, key, upload, number, start,
                                            min(start + self.COPY_BYTES, size))
                      for number, start in enumerate(range(0, size, self.COPY_BYTES), 1)]
            await self._complete(key, upload, copied)
        except BaseException:
            await self._abort(key, upload)
            raise

    async def _copy_part(self, source: str, key: str, upload: str, number: int, start: int,
                         end: int) -> CompletedPartTypeDef:
        with self._errors(f"UploadPartCopy {number} of {source} to {key}"):
            reply = await self._client.upload_part_copy(
                Bucket=self._bucket, Key=key, UploadId=upload, PartNumber=number,
                CopySource={"Bucket": self._bucket, "Key": source},
                CopySourceRange=f"bytes={start}-{end - 1}")
        return {"ETag": reply["CopyPartResult"]["ETag"], "PartNumber": number}

    async def _discard(self, temp: str, upload: str | None) -> None:
        """Abort ``upload`` (to ``temp``; None: there is none) and delete the object
        ``temp`` (which a completed upload became)."""
        if upload is not None:
            await self._abort(temp, upload)
        await self._quietly(self._client.delete_object(Bucket=self._bucket, Key=temp),
                            f"DeleteObject {temp}")

    async def _abort(self, key: str, upload: str) -> None:
        await self._quietly(self._client.abort_multipart_upload(
            Bucket=self._bucket, Key=key, UploadId=upload), f"AbortMultipartUpload {key}")

    async def _quietly(self, call: Awaitable[object], what: str) -> None:
        """Best effort, for clean-ups: a failure is logged, not raised (the error that
        matters is the one being raised; or the put succeeded, leaving some garbage)."""
        try:
            with self._errors(what):
                await call
        except StoreError as exc:
            if not _is_missing(exc.__cause__):  # already gone (an upload completed) is fine
                log.warning("artifact store: clean-up failed", extra={"error": str(exc)})

    # --- reading -------------------------------------------------------------------------------

    async def _open(self, key: str, digest: str) -> StreamingBody:
        with self._errors(f"GetObject {key}"):
            try:
                reply = await self._client.get_object(Bucket=self._bucket, Key=key)
            except ClientError as exc:
                if _is_missing(exc):
                    raise BlobNotFound(f"{self._where}: no blob {digest}") from exc
                raise
        return reply["Body"]

    async def _read(self, body: StreamingBody, key: str) -> AsyncIterator[bytes]:
        """``body``'s bytes as they come; a read that fails (a cut connection, a body
        shorter than its Content-Length) is a ``StoreError``."""
        while True:
            with self._errors(f"GetObject {key} (reading)"):
                data = await body.read(CHUNK_BYTES)
            if not data:
                return
            yield data

    async def _size_of(self, key: str) -> int | None:
        """The size of the object ``key``; None when there is none."""
        with self._errors(f"HeadObject {key}"):
            try:
                return (await self._client.head_object(Bucket=self._bucket, Key=key))[
                    "ContentLength"]
            except ClientError as exc:
                if _is_missing(exc):
                    return None
                raise

    # --- plumbing ------------------------------------------------------------------------------

    async def _check_bucket(self) -> None:
        with self._errors("HeadBucket"):
            try:
                await self._client.head_bucket(Bucket=self._bucket)
            except ClientError as exc:
                code = _code(exc)
                if code in ("404", "NoSuchBucket"):
                    raise StoreError(f"{self._where}: no bucket {self._bucket!r} "
                                     "(create it first)") from exc
                if code in ("403", "AccessDenied"):
                    raise StoreError(f"{self._where}: access to bucket {self._bucket!r} "
                                     "denied (check the access key pair)") from exc
                raise

    def _key_of(self, digest: str) -> str:
        """The key of the blob ``digest`` (``StoreError`` unless it is a digest)."""
        return f"{self._prefix}{_BLOBS}{check_digest(digest)}"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self._where} is closed")

    async def _detached(self, work: Awaitable[T]) -> T:
        """``work`` in its own task: it completes even when the caller is cancelled, and
        ``close`` waits for it."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return _translated(self._where, what)


@contextlib.contextmanager
def _translated(where: str, what: str) -> Iterator[None]:
    """Every error of botocore, aiohttp or the socket raised inside as a ``StoreError``
    naming ``where`` and ``what`` was being done (our own errors pass)."""
    try:
        yield
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message") or "no message"
        raise StoreError(f"{where}: {what}: {_code(exc)}: {message}") from exc
    except (EndpointConnectionError, ConnectTimeoutError) as exc:
        raise StoreError(f"{where}: {what}: no S3 server reachable ({exc})") from exc
    except (BotoCoreError, aiohttp.ClientError, OSError) as exc:  # OSError: TimeoutError too
        raise StoreError(f"{where}: {what}: {exc}") from exc


def _config(location: S3Location, timeout_s: float) -> AioConfig:
    return AioConfig(
        connect_timeout=timeout_s, read_timeout=READ_TIMEOUT_S,
        retries={"mode": "standard", "max_attempts": 3},
        s3={"addressing_style": location.addressing_style},
        # get() hashes every byte with SHA-256 anyway: botocore's CRC of a reply is
        # not checked on top. Uploads keep theirs (the server checks it).
        response_checksum_validation="when_required",
        user_agent_extra="cyclone")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_missing(exc: BaseException | None) -> bool:
    """Whether ``exc`` says the key or the upload is not there."""
    return isinstance(exc, ClientError) and _code(exc) in (*_NOT_FOUND, "NoSuchUpload")


async def _digest_of(data: bytes) -> str:
    return f"sha256:{(await asyncio.to_thread(hashlib.sha256, data)).hexdigest()}"


async def _chain(head: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The parts of ``head`` (taken out of it: not kept once yielded), then of ``rest``."""
    while head:
        yield head.pop(0)
    async for part in rest:
        yield part
