"""Ships a job's log lines to ``cyclone.logs`` in small batches, as they are written.

Lines are buffered for at most ``linger_s`` (or ``max_lines``) and published as one
message ``{"run": id, "batch": id, "lines": [...]}`` keyed by run id, so the order of
a run's lines is kept and the log server can drop a redelivered batch by its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from shared.ports.bus import TOPIC_LOGS, Bus
from shared.ports.executor import LogSink
from shared.ports.logstore import LogLine
from shared.wire import encode_log_batch

__all__ = ["LogShipper"]


class LogShipper:
    def __init__(self, bus: Bus, run_id: str, linger_s: float = 0.02,
                 max_lines: int = 500) -> None:
        self.bus = bus
        self.run_id = run_id
        self.linger_s = linger_s
        self.max_lines = max_lines
        self._buffer: list[LogLine] = []
        self.shipped = 0  # lines handed to the bus so far
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None

    def sink(self, job: str, step: str) -> LogSink:
        """An executor ``on_log`` callback that tags lines with job and step."""

        async def on_log(stream: str, ts: str, text: str) -> None:
            self._buffer.append(LogLine(job=job, step=step, stream=stream, ts=ts, text=text))
            if len(self._buffer) >= self.max_lines:
                await self.flush()
            elif self._timer is None:
                self._timer = asyncio.create_task(self._flush_later())

        return on_log

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.linger_s)
        self._timer = None
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            lines, self._buffer = self._buffer, []
            if not lines:
                return
            value = encode_log_batch(self.run_id, uuid.uuid4().hex, lines)
            await self.bus.publish(TOPIC_LOGS, self.run_id, value)
            self.shipped += len(lines)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        await self.flush()
