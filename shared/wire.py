"""How messages on the bus are encoded: one place for every topic's format.

* ``cyclone.events`` / ``cyclone.jobs``: a ``RecordedEvent`` as JSON.
* ``cyclone.logs``: ``{"run": id, "batch": id, "lines": [line, ...]}``; the batch id
  lets the log server drop a redelivered batch. Each line is the JSON array
  ``[job, step, stream, ts, text, attempt]`` (five strings and an integer): what
  ``json.dumps`` makes of a ``LogLine`` by itself, and about three times cheaper to
  encode and decode than an object. Before, a line was the object
  ``{"job", "step", "stream", "ts", "text"[, "attempt"]}`` (``LogLine.to_json``); the
  decoder still reads it, so batches already on a bus during an upgrade are stored.
  An older log server cannot read arrays: upgrade log servers before workers.
* ``cyclone.logs.stored``: ``{"run": id, "end": n}``: the run's lines ``0 .. n-1`` are
  stored (a hint for followers of the log; a lost one only delays them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shared.events import RecordedEvent
from shared.ports.logstore import LogLine

__all__ = ["decode_event", "decode_log_batch", "decode_log_stored", "encode_event",
           "encode_log_batch", "encode_log_stored"]

_encode = json.JSONEncoder(separators=(",", ":")).encode
_new = tuple.__new__  # a LogLine from a list already checked to hold its six fields


def encode_event(recorded: RecordedEvent) -> bytes:
    return json.dumps(recorded.to_json(), separators=(",", ":")).encode()


def decode_event(value: bytes) -> RecordedEvent:
    return RecordedEvent.from_json(json.loads(value))


def encode_log_batch(run_id: str, batch_id: str, lines: Sequence[LogLine]) -> bytes:
    # A LogLine is a tuple: the C encoder writes it as an array, with no dict per line.
    listed = lines if isinstance(lines, (list, tuple)) else list(lines)
    return _encode({"run": run_id, "batch": batch_id, "lines": listed}).encode()


def decode_log_batch(value: bytes) -> tuple[str, str, list[LogLine]]:
    """(run id, batch id, lines) of a ``cyclone.logs`` message, in the array or the
    older object format (also mixed). A line of neither shape is a ``ValueError``."""
    raw = json.loads(value)
    lines = raw["lines"]
    if type(lines) is not list:
        raise ValueError(f"log batch: lines is a {type(lines).__name__}, not an array")
    # The shape check on each line is the fast path; anything else (an object, an array
    # whose items have other types) goes through _line, which converts or refuses it.
    return str(raw["run"]), str(raw["batch"]), [
        _new(LogLine, x) if (type(x) is list and len(x) == 6 and type(x[0]) is str
                             and type(x[1]) is str and type(x[2]) is str
                             and type(x[3]) is str and type(x[4]) is str
                             and type(x[5]) is int) else _line(x)
        for x in lines
    ]


def _line(raw: Any) -> LogLine:
    """A line in any other shape: an object (the older format), or an array whose items
    are not exactly of the expected types (converted as ``LogLine.from_json`` would)."""
    if isinstance(raw, dict):
        return LogLine.from_json(raw)
    if isinstance(raw, list) and len(raw) == 6 and not any(
            isinstance(x, (list, dict)) or x is None for x in raw):
        job, step, stream, ts, text, attempt = raw
        return LogLine(str(job), str(step), str(stream), str(ts), str(text), int(attempt))
    raise ValueError(f"log batch: a line is neither [job, step, stream, ts, text, attempt] "
                     f"nor an object: {str(raw)[:200]}")


def encode_log_stored(run_id: str, end: int) -> bytes:
    return json.dumps({"run": run_id, "end": end}, separators=(",", ":")).encode()


def decode_log_stored(value: bytes) -> tuple[str, int]:
    """(run id, end) of a ``cyclone.logs.stored`` message."""
    raw = json.loads(value)
    return str(raw["run"]), int(raw["end"])
