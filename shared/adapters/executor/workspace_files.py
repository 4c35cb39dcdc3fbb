"""Files of a workspace as tar streams: what both executors use to hand artifacts, caches
and test reports to the worker, and to put them back.

* ``bases(patterns)``: the directories (or files) a read must fetch to see every file the
  patterns can match: the part of each pattern before its first glob character.
* ``select(sources, patterns)``: one tar stream of the members of ``sources`` (tar streams
  whose member names are relative to the workspace) that ``patterns`` match; a pattern
  that matches a directory takes everything under it. Each member once.
* ``CONTAINER_OUTPUT`` and ``output_script``: where a step container's ``$CYCLONE_OUTPUT``
  file is, and the lines that make it before the step's commands run.

Tar streams are read and written by ``tarfile`` in a thread, fed and drained through
small bounded queues: a 2 GB artifact never sits in memory, and the event loop never
blocks on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import posixpath
import queue
import re
import tarfile
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import IO, TypeVar

from shared.pipeline.triggers import glob_match

__all__ = [
    "CONTAINER_OUTPUT",
    "OUTPUT_LIMIT",
    "TarCounter",
    "bases",
    "files_digest",
    "matches",
    "output_script",
    "read_file_member",
    "read_tar",
    "select",
]

# A step container's $CYCLONE_OUTPUT: in its own file system, never in the workspace (a
# step checking that its work tree is clean must not find Cyclone's files there), read
# from the exited container.
CONTAINER_OUTPUT = "/tmp/cyclone/output"
OUTPUT_LIMIT = 1024 * 1024  # what of a step's $CYCLONE_OUTPUT is read
_GLOB = re.compile(r"[*?\[]")
_DEPTH = 8  # chunks in flight between the event loop and the tar thread
_END = object()
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
T = TypeVar("T")
_EMPTY_TAR = bytes(1024)  # a tar's end: two zero blocks


def output_script(path: str) -> list[str]:
    """The lines a step's script starts with: its ``$CYCLONE_OUTPUT`` file (``path``) made
    empty, its directory too (quietly: an image without ``mkdir`` just cannot use it)."""
    return [f"mkdir -p {posixpath.dirname(path)} 2>/dev/null || :", f": > {path} 2>/dev/null || :"]


def bases(patterns: Sequence[str]) -> list[str]:
    """The literal leading part of each pattern ("" : the whole workspace), none inside
    another, in order."""
    found: list[str] = []
    for pattern in patterns:
        literal = pattern.rstrip("/")
        glob = _GLOB.search(literal)
        if glob is not None:
            literal = literal[:glob.start()].rpartition("/")[0]
        found.append(literal)
    if "" in found:
        return [""]
    found = sorted(set(found))
    return [b for b in found if not any(b.startswith(o + "/") for o in found if o != b)]


def matches(patterns: Sequence[str], name: str) -> bool:
    """Whether a workspace path (``a/b/c``) is one ``patterns`` take: itself, or one of the
    directories above it, matches."""
    name = name.removeprefix("./").strip("/")
    if not name:
        return False
    parts = name.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(glob_match(p.rstrip("/"), prefix) for p in patterns for prefix in prefixes)


async def select(sources: AsyncIterator[tuple[str, AsyncIterator[bytes]]],
                 patterns: Sequence[str]) -> AsyncGenerator[bytes, None]:
    """One tar stream of what ``patterns`` match in the tar streams ``sources`` gives, each
    with the directory its member names are relative to ("" : the workspace)."""
    out: queue.Queue[object] = queue.Queue(maxsize=_DEPTH)
    writer = _QueueWriter(out)
    tar_out = tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT)  # type: ignore[call-overload]
    seen: set[str] = set()
    producer = asyncio.create_task(_produce(sources, patterns, tar_out, seen, writer))
    try:
        while True:
            chunk = await asyncio.to_thread(out.get)
            if chunk is _END:
                break
            assert isinstance(chunk, bytes)
            yield chunk
        await producer
    finally:
        writer.abandoned = True
        _drain(out)
        if not producer.done():
            producer.cancel()
        with contextlib.suppress(BaseException):
            await producer


async def _produce(sources: AsyncIterator[tuple[str, AsyncIterator[bytes]]],
                   patterns: Sequence[str], tar_out: tarfile.TarFile, seen: set[str],
                   writer: _QueueWriter) -> None:
    try:
        async for parent, chunks in sources:
            await _copy_matching(chunks, parent, patterns, tar_out, seen)
        await asyncio.to_thread(tar_out.close)
    finally:
        await asyncio.to_thread(writer.finish)


async def _copy_matching(chunks: AsyncIterator[bytes], parent: str, patterns: Sequence[str],
                         tar_out: tarfile.TarFile, seen: set[str]) -> None:
    """Add the members of one tar stream that ``patterns`` match to ``tar_out``."""

    def copy(tar_in: tarfile.TarFile) -> None:
        for member in tar_in:
            name = f"{parent}/{member.name}" if parent else member.name
            name = name.removeprefix("./").strip("/")
            if name in seen or not matches(patterns, name):
                continue
            seen.add(name)
            member.name = name
            data = tar_in.extractfile(member) if member.isreg() else None
            tar_out.addfile(member, data)

    await read_tar(chunks, copy)


async def read_tar(chunks: AsyncIterator[bytes], read: Callable[[tarfile.TarFile], T]) -> T:
    """``read(tar)`` in a thread, over the tar stream ``chunks`` (fed from here as it goes)."""
    feed: queue.Queue[object] = queue.Queue(maxsize=_DEPTH)
    done = threading.Event()  # the reader ended (or failed): nothing takes from ``feed``

    def run() -> T:
        source = _QueueReader(feed)
        try:
            if not source.peek():  # no tar at all (a path that is not there): no members
                source = io.BytesIO(_EMPTY_TAR)  # type: ignore[assignment]
            with tarfile.open(fileobj=source, mode="r|") as tar_in:  # type: ignore[call-overload]
                return read(tar_in)
        finally:
            done.set()

    reading = asyncio.create_task(asyncio.to_thread(run))
    try:
        async for chunk in chunks:
            if not await asyncio.to_thread(_put_unless, feed, chunk, done):
                break
    finally:
        await asyncio.to_thread(_put_unless, feed, _END, done)
    return await reading


def _put_unless(q: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Put ``item`` once there is room, unless ``stop`` is set first."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class TarCounter:
    """Counts the regular files of a tar stream as it passes (``count``), from the member
    headers alone: no second reader of the data, no copy."""

    def __init__(self) -> None:
        self.files = 0
        self._skip = 0  # bytes of member data (and padding) still to pass
        self._header = bytearray()
        self._ended = False

    async def count(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.feed(chunk)
            yield chunk

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view and not self._ended:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            need = 512 - len(self._header)
            self._header += view[:need]
            view = view[need:]
            if len(self._header) == 512:
                self._member(bytes(self._header))
                self._header.clear()

    def _member(self, header: bytes) -> None:
        if header == bytes(512):
            self._ended = True  # the end blocks (what follows is padding)
            return
        kind = header[156:157]
        if kind in (b"0", b"\0", b"7"):
            self.files += 1
        size = _tar_size(header[124:136])
        self._skip = (size + 511) // 512 * 512


def _tar_size(field: bytes) -> int:
    if field[0] & 0x80:  # base-256, for members of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    digits = field.rstrip(b"\0 ").lstrip(b" ")
    return int(digits, 8) if digits else 0


async def files_digest(chunks: AsyncIterator[bytes]) -> tuple[str, int]:
    """``hashFiles``: the SHA-256 (hex) of a tar's regular files, by path and content, in
    path order (the tar's own order and metadata do not count), and how many there were."""

    def digest(tar: tarfile.TarFile) -> tuple[str, int]:
        files: list[tuple[str, str]] = []
        for member in tar:
            if member.isreg():
                handle = tar.extractfile(member)
                content = hashlib.sha256()
                while handle is not None and (block := handle.read(1024 * 1024)):
                    content.update(block)
                files.append((member.name.removeprefix("./"), content.hexdigest()))
        total = hashlib.sha256()
        for name, content_hex in sorted(files):
            total.update(f"{name}\0{content_hex}\n".encode())
        return total.hexdigest(), len(files)

    return await read_tar(chunks, digest)


def _drain(q: queue.Queue[object]) -> None:
    with contextlib.suppress(queue.Empty):
        while True:
            q.get_nowait()


class _QueueReader:
    """A file the tar thread reads; the event loop puts chunks in, then ``_END``."""

    def __init__(self, feed: queue.Queue[object]) -> None:
        self.feed = feed
        self.buffer = bytearray()
        self.ended = False

    def peek(self) -> bool:
        """Whether any byte is to come (waits for the first chunk, or the end)."""
        while not self.ended and not self.buffer:
            self._take()
        return bool(self.buffer)

    def _take(self) -> None:
        item = self.feed.get()
        if item is _END:
            self.ended = True
        else:
            assert isinstance(item, bytes)
            self.buffer += item

    def read(self, size: int = -1) -> bytes:
        while not self.ended and (size < 0 or len(self.buffer) < size):
            self._take()
        n = len(self.buffer) if size < 0 else min(size, len(self.buffer))
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data


class _QueueWriter:
    """A file the tar thread writes; its writes go to the event loop in chunks of ~1 MiB."""

    CHUNK = 1024 * 1024

    def __init__(self, out: queue.Queue[object]) -> None:
        self.out = out
        self.buffer = bytearray()
        self.abandoned = False  # the reader went away: writes are dropped, never block
        self.lock = threading.Lock()

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) >= self.CHUNK:
            self._put(bytes(self.buffer))
            self.buffer.clear()
        return len(data)

    def finish(self) -> None:
        if self.buffer:
            self._put(bytes(self.buffer))
            self.buffer.clear()
        self._put(_END)

    def _put(self, item: object) -> None:
        while not self.abandoned:
            try:
                self.out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


def read_file_member(data: IO[bytes], limit: int) -> bytes:
    """The first regular file of a tar (e.g. Docker's archive of one file), at most
    ``limit`` bytes of it."""
    with tarfile.open(fileobj=data, mode="r|") as tar:
        for member in tar:
            if member.isreg():
                handle = tar.extractfile(member)
                return handle.read(limit) if handle else b""
    return b""

