"""What both executors share: the shell script a step runs, and its output as log lines.

* ``step_script(commands)`` is the text given to ``/bin/sh -c``: it stops at the first
  failing command (``set -e``) and echoes each command as ``+ cmd`` before running it,
  like Drone and Woodpecker, so a log shows which command printed what and which failed.
* ``StepOutput`` turns the chunks a step writes into lines, per stream, each line with
  the timestamp of its first byte; ``flush()`` delivers a last line without newline.
* ``check_run_id`` guards the names and paths built from a run id.
* ``finish_shielded`` runs a cleanup to its end even when the caller is cancelled
  meanwhile, then lets the cancellation continue.
* ``SourceClock`` and ``read_to_end``: an ended step's output is read to its end, at the
  pace of the log pipeline behind it, unless the source itself goes silent.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import time
from collections.abc import Awaitable, Collection, Sequence

from shared.errors import ExecutorError
from shared.ports.executor import LogSink, log_lines

__all__ = ["SourceClock", "StepOutput", "check_run_id", "finish_shielded", "read_to_end",
           "sanitise", "step_script"]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# a line longer than this without a newline is delivered in pieces, so one endless
# line (a progress bar without "\n", a binary dump) cannot grow memory without bound
MAX_LINE_BYTES = 64 * 1024


def step_script(commands: Sequence[str], prelude: Sequence[str] = ()) -> str:
    """The ``/bin/sh -c`` script for ``commands``: echo ``+ cmd``, run it, stop at a failure.
    ``prelude``: lines run first, not echoed (Cyclone's own, not the user's)."""
    lines = [*prelude, "set -e"]
    for command in commands:
        # printf, not echo: some shells' echo interprets backslashes in the command text
        lines.append(f"printf '%s\\n' {shlex.quote('+ ' + command)}")
        lines.append(command)
    return "\n".join(lines) + "\n"


def sanitise(name: str, limit: int = 40) -> str:
    """``name`` reduced to ``[A-Za-z0-9_.-]`` (for container names); never empty."""
    cleaned = _UNSAFE.sub("_", name).strip("_.-")[:limit]
    return cleaned or "x"


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is safe in a container name and a path component, else ExecutorError."""
    if not _RUN_ID.match(run_id):
        raise ExecutorError(f"invalid run id {run_id!r}: expected letters, digits, '_', '.', '-'")
    return run_id


class _Lines:
    """One stream's pending bytes; each complete line goes to ``on_log``."""

    def __init__(self, stream: str, on_log: LogSink) -> None:
        self.stream = stream
        self.on_log = on_log
        self.pending = bytearray()
        self.ts = ""  # when the pending line's first byte arrived

    async def feed(self, ts: str, data: bytes) -> None:
        end = data.rfind(b"\n")
        if end < 0:
            if not self.pending:
                self.ts = ts
            self.pending += data
        else:
            # Every complete line at once: one decode and one split for the chunk (a UTF-8
            # sequence never spans a "\n", so this is the line-by-line decode), with the
            # pending start of the first line; the first line keeps its first byte's ts.
            # (Cancelled half-way, the rest of the chunk goes: so does a cancelled step.)
            first_ts = self.ts if self.pending else ts
            whole = bytes(self.pending) + data[: end + 1] if self.pending else data[: end + 1]
            self.pending = bytearray(data[end + 1 :])
            self.ts = ts
            texts = whole.decode("utf-8", errors="replace").replace("\r\n", "\n").split("\n")
            texts.pop()  # "" after the last "\n"
            await self.on_log(self.stream, first_ts, texts[0])
            if len(texts) > 1:  # the rest have the chunk's ts: one call for them all
                del texts[0]
                await log_lines(self.on_log, self.stream, ts, texts)
        while len(self.pending) > MAX_LINE_BYTES:
            await self._emit(bytes(self.pending[:MAX_LINE_BYTES]))
            del self.pending[:MAX_LINE_BYTES]

    async def flush(self) -> None:
        if self.pending:
            line, self.pending = bytes(self.pending), bytearray()
            await self._emit(line)

    async def _emit(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace").removesuffix("\r")
        await self.on_log(self.stream, self.ts, text)


class StepOutput:
    """Chunks of a step's stdout and stderr in, timestamped lines out to ``on_log``."""

    def __init__(self, on_log: LogSink) -> None:
        self._streams = {name: _Lines(name, on_log) for name in ("stdout", "stderr")}

    async def feed(self, stream: str, ts: str, data: bytes) -> None:
        await self._streams[stream].feed(ts, data)

    async def flush(self) -> None:
        for lines in self._streams.values():
            await lines.flush()


async def finish_shielded(cleanup: Awaitable[None]) -> None:
    """Await ``cleanup`` to its end even if this task is cancelled meanwhile.

    A cancellation that arrives during the cleanup is re-raised once it is done, so
    "kill the container, then let CancelledError propagate" holds however often the
    caller is cancelled.
    """
    task = asyncio.ensure_future(cleanup)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()  # a cleanup error wins over the cancellation
    if cancelled:
        raise asyncio.CancelledError


class SourceClock:
    """Whether a reader is waiting on its source (a pipe, Docker), and since when; while it
    feeds the log pipeline instead, the clock is stopped. ``with clock.waiting():`` around
    each read."""

    def __init__(self) -> None:
        self.since: float | None = None  # monotonic; None while not waiting on the source

    def waiting(self) -> _Waiting:
        return _Waiting(self)

    def silent_for(self) -> float:
        return 0.0 if self.since is None else time.monotonic() - self.since


class _Waiting:
    def __init__(self, clock: SourceClock) -> None:
        self.clock = clock

    def __enter__(self) -> None:
        self.clock.since = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.clock.since = None


async def read_to_end(readers: Collection[asyncio.Task[None]],
                      clocks: Sequence[SourceClock], stall_s: float) -> str:
    """Wait until every reader of an ended step has read its source to the end, however
    slowly the log pipeline takes the lines (it never loses them to a deadline). Returns
    "" then, or what went wrong: a source silent for ``stall_s`` while read (something
    outside the step still holds it open), or a reader's error."""
    while True:
        done, pending = await asyncio.wait(readers, timeout=min(stall_s, 1.0))
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                return f"reading the step's output failed: {task.exception()!r}"
        if not pending:
            return ""
        if any(clock.silent_for() >= stall_s for clock in clocks):
            return f"the step's output did not end {stall_s:g} s after it exited"
