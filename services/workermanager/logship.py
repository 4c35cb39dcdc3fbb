"""Ships a job's log lines to ``cyclone.logs`` in small batches, as they are written.

Lines are buffered for at most ``linger_s`` (or ``max_lines``, or ``max_chars`` of text)
and published as one message (``shared.wire.encode_log_batch``) keyed by run id, so the
order of a run's lines is kept and the log server can drop a redelivered
batch by its id. A batch whose message would pass ``MAX_MESSAGE_BYTES`` (long lines
full of escaped characters) goes out as several, each with an id of its own.

A publish that fails with a transient ``BusError`` (the broker restarting; not
``BusClosed``) is retried with backoff, the same batch with the same id, until it
goes through: no line is lost, none is
shipped twice, and none overtakes an earlier one. While a batch waits to go out,
new lines gather in the buffer; a sink whose line fills it to ``max_lines`` waits
for the flush, so a step that keeps printing through an outage is held back
(its output waits in Docker's pipe) instead of growing the worker's memory.
A flush cancelled half-way keeps its batch (and id) for the next one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable

from shared.ports.bus import TOPIC_LOGS, Bus
from shared.ports.executor import LinesSink
from shared.ports.logstore import LogLine
from shared.retry import Backoff, is_transient
from shared.tasks import cancel_and_wait
from shared.wire import encode_log_batch

__all__ = ["MAX_MESSAGE_BYTES", "LogShipper"]

# Kafka refuses a message over ~1 MB (the producer's max_request_size and the broker's
# message.max.bytes defaults): a bigger batch would be retried forever.
MAX_MESSAGE_BYTES = 900_000

log = logging.getLogger(__name__)

_new = tuple.__new__  # a LogLine from its six fields, without a call of its own


class LogShipper:
    def __init__(self, bus: Bus, run_id: str, linger_s: float = 0.02,
                 max_lines: int = 2000, retry_max_s: float = 2.0, attempt: int = 1,
                 max_chars: int = 256 * 1024) -> None:
        self.bus = bus
        self.run_id = run_id
        self.attempt = attempt  # of the job whose lines these are (LogLine.attempt)
        self.linger_s = linger_s
        self.max_lines = max_lines
        self.max_chars = max_chars
        self.retry_max_s = retry_max_s
        self._buffer: list[LogLine] = []
        self._buffered_chars = 0  # of the buffer's lines' text
        # The batch going out, as the messages it is sent in: (batch id, lines, message)
        self._pending: deque[tuple[str, list[LogLine], bytes]] = deque()
        self.shipped = 0  # lines the bus has accepted so far
        self._lock = asyncio.Lock()  # one flush at a time: batches go out in order
        self._timer: asyncio.Task[None] | None = None
        # What a line that only joins the buffer returns: a future already done, so a
        # line costs no coroutine.
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ready.set_result(None)

    def sink(self, job: str, step: str) -> LinesSink:
        """An executor ``on_log`` callback that tags lines with job and step (call it in
        the event loop's thread)."""
        return _StepSink(self, job, step)

    def _add(self, lines: list[LogLine], chars: int) -> Awaitable[None]:
        self._buffer += lines
        self._buffered_chars += chars
        if len(self._buffer) >= self.max_lines or self._buffered_chars >= self.max_chars:
            return self.flush()  # waits while the bus is down: backpressure
        if self._timer is None:
            self._timer = asyncio.create_task(self._flush_later())
        return self._ready

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.linger_s)
        async with self._lock:
            # From here on a new line needs a new timer: this flush takes only what is
            # buffered now. Until here, lines join this flush (at most one timer waits).
            self._timer = None
            await self._ship_all()

    async def flush(self) -> None:
        """Ship every line written so far; returns once the bus has them all."""
        async with self._lock:
            await self._ship_all()

    async def _ship_all(self) -> None:
        """Ship the pending batch, then what is buffered (lock held); also what is
        written meanwhile, until the buffer is empty."""
        while self._pending or self._buffer:
            if not self._pending:
                self._pending.extend(self._messages(self._buffer))
                self._buffer, self._buffered_chars = [], 0
            _, lines, message = self._pending[0]
            await self._publish(message)
            self._pending.popleft()
            self.shipped += len(lines)

    def _messages(self, lines: list[LogLine]) -> list[tuple[str, list[LogLine], bytes]]:
        """The batch as messages of at most ``MAX_MESSAGE_BYTES`` (halved until each
        fits: escaping can make a line's JSON several times its text), each with a batch
        id of its own, kept across retries."""
        batch = uuid.uuid4().hex
        message = encode_log_batch(self.run_id, batch, lines)
        if len(message) <= MAX_MESSAGE_BYTES or len(lines) == 1:
            return [(batch, lines, message)]
        half = len(lines) // 2
        return self._messages(lines[:half]) + self._messages(lines[half:])

    async def _publish(self, value: bytes) -> None:
        backoff, failures = Backoff(cap=self.retry_max_s), 0
        while True:
            try:
                await self.bus.publish(TOPIC_LOGS, self.run_id, value)
                if failures:
                    log.info("log lines shipped again after %d failed tries", failures,
                             extra={"run": self.run_id})
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                if failures == 1 or failures % 10 == 0:
                    log.warning("cannot ship log lines (%d tries so far); retrying", failures,
                                extra={"run": self.run_id, "error": str(exc)})
            await backoff.wait()

    async def close(self) -> None:
        await cancel_and_wait(self._timer)
        self._timer = None
        await self.flush()


class _StepSink:
    """One step's lines into its shipper's buffer, tagged with job, step and attempt."""

    def __init__(self, shipper: LogShipper, job: str, step: str) -> None:
        self.shipper = shipper
        self.job = job
        self.step = step

    def __call__(self, stream: str, ts: str, text: str) -> Awaitable[None]:
        line = _new(LogLine, (self.job, self.step, stream, ts, text, self.shipper.attempt))
        return self.shipper._add([line], len(text))

    def many(self, stream: str, ts: str, texts: list[str]) -> Awaitable[None]:
        job, step, attempt = self.job, self.step, self.shipper.attempt
        return self.shipper._add([_new(LogLine, (job, step, stream, ts, text, attempt))
                                  for text in texts], sum(map(len, texts)))
