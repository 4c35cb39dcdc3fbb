"""Reading a container's output: attached before start (steps) or through the log
driver (services), cut into frames and timestamped lines for ``StepOutput``."""

from __future__ import annotations

import asyncio
import functools
import struct
from collections import deque
from datetime import UTC, datetime
from typing import Any

import aiodocker
from aiodocker.stream import Stream

from shared.adapters.executor.script import SourceClock, StepOutput, read_to_end
from shared.events import utc_now
from shared.tasks import cancel_and_wait

__all__ = ["AttachedReader", "Cursor", "FrameReader", "read_logs"]

NS = 1_000_000_000
AHEAD_BYTES = 1024 * 1024  # of a running step's output read ahead of its consumer
_FRAME_HEADER = struct.Struct(">BxxxL")  # stream kind, 3 bytes padding, payload length


async def read_logs(docker: aiodocker.Docker, container_id: str, output: StepOutput,
                    cursor: Cursor, follow: bool) -> None:
    """Feed the container's log frames after ``cursor`` to ``output``."""
    params: dict[str, Any] = {"stdout": True, "stderr": True, "timestamps": True,
                              "follow": follow}
    skip = 0
    if not follow and cursor.max_ns:
        since, skip = cursor.resume_point()
        params["since"] = f"{since // NS}.{since % NS:09d}"
    async with docker._query(f"containers/{container_id}/logs", params=params,
                             timeout=None) as response:
        frames = FrameReader()
        while chunk := await response.content.readany():
            for stream, raw_ts, data in frames.feed(chunk):
                if skip:
                    skip -= 1
                    continue
                ns, ts = _parse_ts(raw_ts)
                cursor.delivered(ns)
                await output.feed(stream, ts, data)


class Cursor:
    """How far the live log stream got, so a second read delivers only what it missed.

    Frames carry Docker's nanosecond timestamps. ``resume_point`` is one second before
    the newest one delivered, and the number of delivered frames at or after it: the
    re-read starts there (``since``) and skips that many, which is exact as long as the
    stdout and stderr copiers do not write more than a second out of order.
    """

    WINDOW_NS = NS

    def __init__(self) -> None:
        self.max_ns = 0
        self._recent: deque[int] = deque()

    def delivered(self, ns: int) -> None:
        self.max_ns = max(self.max_ns, ns)
        self._recent.append(ns)
        while self._recent and self._recent[0] < self.max_ns - 2 * self.WINDOW_NS:
            self._recent.popleft()

    def resume_point(self) -> tuple[int, int]:
        since = max(self.max_ns - self.WINDOW_NS, 0)
        return since, sum(1 for ns in self._recent if ns >= since)


class AttachedReader:
    """Reads an attached container's output into a ``StepOutput``, every byte of it.

    Two loops: ``_pull`` takes frames off the attach stream, ``_push`` feeds them to the
    output at the pace its consumer allows. While the container runs, the frames taken
    but not yet fed are bounded (``ahead_bytes``): when they are full, nothing is read,
    Docker stops copying, and the step's writes wait (backpressure, as a terminal gives).
    Once the container has exited (``finish``), the bound goes: Docker ends an attach
    stream about 10 s after the exit whether or not it was read to its end (measured
    here: a reader 10 s behind lost the tail of a step's output, cut mid-line), so what
    is still in its pipes and the socket (a few MB) is read at once and fed from memory.
    """

    def __init__(self, attached: Stream, output: StepOutput,
                 ahead_bytes: int = AHEAD_BYTES) -> None:
        self.attached = attached
        self.output = output
        self.ahead_bytes = ahead_bytes
        self._frames: deque[tuple[str, str, bytes]] = deque()  # (stream, ts, data)
        self._size = 0  # bytes in _frames
        self._bounded = True
        self._room = asyncio.Event()  # set when _pull may read more
        self._arrived = asyncio.Event()  # set when _pull added a frame or ended
        self._docker = SourceClock()

    async def run(self) -> None:
        """Feed the output until the stream ends; raises what broke the stream."""
        pull = asyncio.create_task(self._pull())
        try:
            await self._push(pull)
        finally:
            await cancel_and_wait(pull)

    async def finish(self, task: asyncio.Task[None], stall_s: float) -> str:
        """The container has exited: read the rest at once, then wait for ``task``
        (running ``run``). Returns "" when the stream ended, else what went wrong
        (``read_to_end``)."""
        self._bounded = False
        self._room.set()
        return await read_to_end([task], [self._docker], stall_s)

    async def _pull(self) -> None:
        while True:
            while self._bounded and self._size >= self.ahead_bytes:
                self._room.clear()
                await self._room.wait()
            with self._docker.waiting():
                message = await self.attached.read_out()
            self._arrived.set()
            if message is None:
                return
            stream = "stderr" if message.stream == 2 else "stdout"
            self._frames.append((stream, utc_now(), message.data))
            self._size += len(message.data)

    async def _push(self, pull: asyncio.Task[None]) -> None:
        while True:
            if self._frames:
                stream, ts, data = self._frames.popleft()
                self._size -= len(data)
                self._room.set()
                await self.output.feed(stream, ts, data)
            elif pull.done():
                pull.result()  # the stream's error, if it broke
                return
            else:
                self._arrived.clear()
                await self._arrived.wait()


class FrameReader:
    """Docker's multiplexed log stream, cut into frames: (stream, raw timestamp, data).

    Fed whatever the socket gave (many frames at once for a chatty step), because
    reading frame by frame from the stream costs more than the frames themselves.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[tuple[str, bytes, bytes]]:
        buffer = self._buffer
        buffer += chunk
        frames, offset = [], 0
        while len(buffer) - offset >= 8:
            kind, length = _FRAME_HEADER.unpack_from(buffer, offset)
            end = offset + 8 + length
            if end > len(buffer):
                break
            raw_ts, _, data = bytes(buffer[offset + 8:end]).partition(b" ")
            frames.append(("stderr" if kind == 2 else "stdout", raw_ts, data))
            offset = end
        del buffer[:offset]
        return frames


def _parse_ts(raw: bytes) -> tuple[int, str]:
    """Docker's ``2024-05-01T12:00:00.123456789Z`` as (ns since epoch, ISO 8601 UTC).

    Called for every log line: the whole-second part is parsed once per second
    (cached), the fraction by slicing, so a busy step's lines stay cheap.
    """
    try:
        whole, _, fraction = raw.decode().rstrip("Z").partition(".")
        seconds = _epoch_seconds(whole)
        digits = fraction[:9].ljust(9, "0")
        nanos = int(digits)
    except ValueError:
        now = datetime.now(UTC)
        return int(now.timestamp() * NS), now.isoformat(timespec="microseconds")
    return seconds * NS + nanos, f"{whole}.{digits[:6]}+00:00"


@functools.lru_cache(maxsize=8)
def _epoch_seconds(whole: str) -> int:
    moment = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return int(moment.timestamp())
