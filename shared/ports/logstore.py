"""Log store port: the lines a run's steps printed, in order, per run.

Contract (every adapter; ``tests/contracts/logstore.py`` checks it):

* ``append(run_id, lines)`` stores the lines after the run's existing ones and
  gives each its index (0, 1, 2, ... per run, no gaps); durable once it returns.
  Appending the same batch twice (same ``batch_id``) stores it once, so a consumer
  that is redelivered a batch does not duplicate lines.
* ``read(run_id, from_index)`` yields the stored lines with ``index >= from_index``
  in order, without holding the whole log in memory.
* ``count(run_id)`` is the number of stored lines; ``delete(run_id)`` removes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, NamedTuple, Protocol

__all__ = ["LogLine", "LogStore", "StoredLine", "numbered"]


class LogLine(NamedTuple):
    """One line a step printed; ``stream`` is stdout or stderr; ``ts`` ISO 8601 UTC.

    ``attempt`` is the job's attempt that printed it (> 1 when the job ran again after
    its worker was lost); in JSON it appears only when it is not 1.

    A named tuple, not a dataclass: millions are made (one per line, at every hop of
    the log pipeline) and a tuple is several times cheaper to build. Immutable all the
    same; ``json.dumps`` writes it as the array ``[job, step, stream, ts, text, attempt]``
    (the ``cyclone.logs`` wire format, ``shared.wire``)."""

    job: str
    step: str
    stream: str
    ts: str
    text: str
    attempt: int = 1

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {"job": self.job, "step": self.step, "stream": self.stream,
                               "ts": self.ts, "text": self.text}
        if self.attempt != 1:
            raw["attempt"] = self.attempt
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LogLine:
        return cls(job=str(raw["job"]), step=str(raw["step"]), stream=str(raw["stream"]),
                   ts=str(raw["ts"]), text=str(raw["text"]), attempt=int(raw.get("attempt", 1)))


class StoredLine(NamedTuple):
    """A line as the store gives it back: its index in the run's log, and the line."""

    index: int  # type: ignore[assignment]  # a field: it hides tuple.index(), unused here
    line: LogLine


def numbered(lines: Iterable[LogLine], first: int) -> list[StoredLine]:
    """``lines`` stored at ``first``, ``first + 1``, ...: made without a call per line
    (``tuple.__new__``), as a store hands back every line it reads."""
    return [_new(StoredLine, indexed) for indexed in enumerate(lines, first)]


_new = tuple.__new__


class LogStore(Protocol):
    async def append(self, run_id: str, lines: Sequence[LogLine], batch_id: str) -> int: ...

    def read(self, run_id: str, from_index: int = 0) -> AsyncIterator[StoredLine]: ...

    async def count(self, run_id: str) -> int: ...

    async def delete(self, run_id: str) -> None: ...

    async def close(self) -> None: ...
