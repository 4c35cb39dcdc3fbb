"""How messages on the bus are encoded: one place for every topic's format.

* ``cyclone.events`` / ``cyclone.jobs``: a ``RecordedEvent`` as JSON.
* ``cyclone.logs``: ``{"run": id, "batch": id, "groups": [group, ...]}``; the batch id
  lets the log server drop a redelivered batch. A group is the consecutive lines of one
  job, step, stream and attempt, as columns: ``[job, step, stream, attempt, stamps,
  texts]``, where ``texts`` holds each line's text and ``stamps`` is ``[[ts, count],
  ...]``: the first ``count`` lines have that ``ts``, and so on (a chunk read from a step
  gives all its lines one ``ts``). Per line that is one JSON string: a tenth of the bytes
  of a line as an array, and several times cheaper to encode and decode, which is most
  of the log pipeline's cost in one process (``bench/logs.py``).
  Older formats are still read, so batches already on a bus during an upgrade are
  stored: ``"lines": [line, ...]``, each line the array ``[job, step, stream, ts, text,
  attempt]`` or, before that, the object ``{"job", "step", "stream", "ts", "text"[,
  "attempt"]}`` (``LogLine.to_json``). An older log server cannot read groups: upgrade
  log servers before workers.
* ``cyclone.logs.stored``: ``{"run": id, "end": n}``: the run's lines ``0 .. n-1`` are
  stored (a hint for followers of the log; a lost one only delays them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import groupby
from operator import itemgetter
from typing import Any

from shared.events import RecordedEvent
from shared.ports.logstore import LogLine

__all__ = ["decode_event", "decode_log_batch", "decode_log_stored", "encode_event",
           "encode_log_batch", "encode_log_stored", "groups_of", "lines_of_groups"]

_encode = json.JSONEncoder(separators=(",", ":")).encode
_new = tuple.__new__  # a LogLine from a list already checked to hold its six fields
_GROUP = itemgetter(0, 1, 2, 5)  # a LogLine's job, step, stream and attempt
_TS = itemgetter(3)
_TEXT = itemgetter(4)


def encode_event(recorded: RecordedEvent) -> bytes:
    return json.dumps(recorded.to_json(), separators=(",", ":")).encode()


def decode_event(value: bytes) -> RecordedEvent:
    return RecordedEvent.from_json(json.loads(value))


def encode_log_batch(run_id: str, batch_id: str, lines: Iterable[LogLine]) -> bytes:
    return _encode({"run": run_id, "batch": batch_id, "groups": groups_of(lines)}).encode()


def groups_of(lines: Iterable[LogLine]) -> list[list[Any]]:
    """``lines`` as column groups (the module docstring); ``lines_of_groups`` undoes it.
    The file log store keeps its batches in this shape too."""
    groups = []
    for (job, step, stream, attempt), group in groupby(lines, _GROUP):
        same = list(group)
        stamps = [[ts, sum(1 for _ in run)] for ts, run in groupby(map(_TS, same))]
        groups.append([job, step, stream, attempt, stamps, list(map(_TEXT, same))])
    return groups


def decode_log_batch(value: bytes) -> tuple[str, str, list[LogLine]]:
    """(run id, batch id, lines) of a ``cyclone.logs`` message, in any of its formats. A
    malformed one is a ``ValueError`` saying what is wrong."""
    raw = json.loads(value)
    if type(raw) is not dict:
        raise ValueError(f"log batch: a {type(raw).__name__}, not an object")
    run, batch = str(raw["run"]), str(raw["batch"])
    if "groups" in raw:
        return run, batch, lines_of_groups(raw["groups"])
    lines = raw["lines"]
    if type(lines) is not list:
        raise ValueError(f"log batch: lines is a {type(lines).__name__}, not an array")
    # The shape check on each line is the fast path; anything else (an object, an array
    # whose items have other types) goes through _line, which converts or refuses it.
    return run, batch, [
        _new(LogLine, x) if (type(x) is list and len(x) == 6 and type(x[0]) is str
                             and type(x[1]) is str and type(x[2]) is str
                             and type(x[3]) is str and type(x[4]) is str
                             and type(x[5]) is int) else _line(x)
        for x in lines
    ]


def lines_of_groups(groups: Any, what: str = "log batch") -> list[LogLine]:
    """The lines of column groups (``groups_of``); malformed ones are a ``ValueError``
    starting with ``what`` and naming the group and the field."""
    if type(groups) is not list:
        raise ValueError(f"{what}: groups is a {type(groups).__name__}, not an array")
    lines: list[LogLine] = []
    for n, group in enumerate(groups):
        job, step, stream, attempt, stamps, texts = _checked(what, n, group)
        start = 0
        for ts, count in stamps:
            lines += [_new(LogLine, (job, step, stream, ts, text, attempt))
                      for text in texts[start:start + count]]
            start += count
    return lines


def _checked(what: str, n: int,
             group: Any) -> tuple[str, str, str, int, list[list[Any]], list[str]]:
    """Group ``n``'s fields, checked: ``[job, step, stream, attempt, stamps, texts]``."""
    if not (type(group) is list and len(group) == 6):
        raise ValueError(f"{what}: group {n} is not [job, step, stream, attempt, "
                         f"stamps, texts]: {str(group)[:200]}")
    job, step, stream, attempt, stamps, texts = group
    if not all(type(x) is str for x in (job, step, stream)) or type(attempt) is not int:
        raise ValueError(f"{what}: group {n}: job, step and stream must be strings and "
                         f"attempt an integer: {str(group[:4])[:200]}")
    if type(texts) is not list or not all(type(text) is str for text in texts):
        raise ValueError(f"{what}: group {n}: texts must be an array of strings")
    if type(stamps) is not list or not all(
            type(s) is list and len(s) == 2 and type(s[0]) is str and type(s[1]) is int
            and s[1] > 0 for s in stamps):
        raise ValueError(f"{what}: group {n}: stamps must be [ts, count] pairs with a "
                         "count above 0")
    counted = sum(s[1] for s in stamps)
    if counted != len(texts):
        raise ValueError(f"{what}: group {n}: the stamps count {counted} lines, texts "
                         f"has {len(texts)}")
    return job, step, stream, attempt, stamps, texts


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
