"""How messages on the bus are encoded: one place for every topic's format.

* ``cyclone.events`` / ``cyclone.jobs``: a ``RecordedEvent`` as JSON.
* ``cyclone.logs``: ``{"run": id, "batch": id, "lines": [LogLine, ...]}``; the batch id
  lets the log server drop a redelivered batch.
* ``cyclone.logs.stored``: ``{"run": id, "end": n}``: the run's lines ``0 .. n-1`` are
  stored (a hint for followers of the log; a lost one only delays them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from shared.events import RecordedEvent
from shared.ports.logstore import LogLine

__all__ = ["decode_event", "decode_log_batch", "decode_log_stored", "encode_event",
           "encode_log_batch", "encode_log_stored"]


def encode_event(recorded: RecordedEvent) -> bytes:
    return json.dumps(recorded.to_json(), separators=(",", ":")).encode()


def decode_event(value: bytes) -> RecordedEvent:
    return RecordedEvent.from_json(json.loads(value))


def encode_log_batch(run_id: str, batch_id: str, lines: Sequence[LogLine]) -> bytes:
    body = {"run": run_id, "batch": batch_id, "lines": [line.to_json() for line in lines]}
    return json.dumps(body, separators=(",", ":")).encode()


def decode_log_batch(value: bytes) -> tuple[str, str, list[LogLine]]:
    """(run id, batch id, lines) of a ``cyclone.logs`` message."""
    raw = json.loads(value)
    return str(raw["run"]), str(raw["batch"]), [LogLine.from_json(x) for x in raw["lines"]]


def encode_log_stored(run_id: str, end: int) -> bytes:
    return json.dumps({"run": run_id, "end": end}, separators=(",", ":")).encode()


def decode_log_stored(value: bytes) -> tuple[str, int]:
    """(run id, end) of a ``cyclone.logs.stored`` message."""
    raw = json.loads(value)
    return str(raw["run"]), int(raw["end"])
