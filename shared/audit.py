"""The audit hash chain: what an event's ``hash`` is computed over, in one place.

Every event the store appends carries ``prev_hash`` (the ``hash`` of its stream's
previous event; ``GENESIS`` for a stream's first event) and ``hash``: SHA-256 (hex) of
its canonical encoding::

    json([stream, seq, id, type, version, ts, prev_hash]) "\\n" data "\\n" meta

where ``data`` and ``meta`` are canonical JSON (``canonical_json``: sorted keys, no
spaces, ASCII), exactly the text the adapters store. No line of it can hold a raw
newline (JSON escapes them), so the encoding is unambiguous. ``position`` is left out:
the store assigns it, and the order it records is checked by the chain already.

Both adapters compute hashes with ``event_hash`` when they append and the verifier
(``shared.audit_verify``) recomputes them with ``recorded_hash``: one definition, so
they cannot drift apart. The hash is not keyed: it proves an event was not changed by
someone who did not also recompute the chain after it; the checkpoints
(``shared.audit_checkpoints``) anchor the chains' heads, and a head copied elsewhere
(a provenance document holds its run's) anchors it outside the store.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from shared.events import RecordedEvent

__all__ = ["AUDIT_STREAM", "GENESIS", "canonical_json", "event_hash", "recorded_hash"]

# A stream's first event links to this; so does the first chained event of a stream
# written before the chain existed (its legacy events have no hash either).
GENESIS = ""
# The stream the checkpoints (``AuditCheckpoint``) are appended to.
AUDIT_STREAM = "audit"

# Made once: ``json.dumps`` with options builds an encoder per call, a third of the
# hash's cost on the append path. Same output.
_CANONICAL = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode
_COMPACT = json.JSONEncoder(separators=(",", ":")).encode


def canonical_json(value: Mapping[str, Any]) -> str:
    """The JSON text stored for an event's data or meta (and hashed)."""
    return _CANONICAL(value)


def event_hash(stream: str, seq: int, event_id: str, type_: str, version: int, ts: str,
               data_json: str, meta_json: str, prev_hash: str) -> str:
    """SHA-256 hex of an event's canonical encoding (see the module docstring)."""
    head = _COMPACT([stream, seq, event_id, type_, version, ts, prev_hash])
    return hashlib.sha256(f"{head}\n{data_json}\n{meta_json}".encode()).hexdigest()


def recorded_hash(event: RecordedEvent, seq: int | None = None) -> str:
    """The hash ``event`` should carry (at ``seq`` instead of its own, when given)."""
    return event_hash(event.stream, event.seq if seq is None else seq, event.id, event.type,
                      event.version, event.ts, canonical_json(event.data),
                      canonical_json(event.meta), event.prev_hash)
