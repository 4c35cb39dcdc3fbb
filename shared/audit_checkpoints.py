"""Audit checkpoints: the heads of the streams changed lately, appended to ``audit``.

A chain shows an event edited, removed or inserted before its stream's last event, but
not the last events removed: the stream just looks shorter. A checkpoint records, for
each stream changed since the previous checkpoint, its last seq and hash
(``AuditCheckpoint.heads``), so ``shared.audit_verify`` finds a stream cut short of what
a checkpoint saw. Events appended after the newest checkpoint are not anchored yet.

``write_checkpoint(store)`` reads the events after the newest checkpoint's ``position``
(``read_all``, at most ``MAX_HEADS`` streams' worth, the rest left to the next one) and
appends one checkpoint with the expected seq of the audit stream it read: two writers
racing append one checkpoint, the other gets ``None``. ``checkpoint_every`` does it
every ``CYCLONE_AUDIT_CHECKPOINT_S``; the api runs it as the ``audit`` leader.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from shared.audit import AUDIT_STREAM
from shared.errors import ConcurrencyConflict
from shared.events import AuditCheckpoint, NewEvent, decode
from shared.ports.eventstore import EventStore

__all__ = ["MAX_HEADS", "checkpoint_every", "write_checkpoint"]

log = logging.getLogger(__name__)

# Streams one checkpoint names at most (the rest: the next one). A checkpoint is an
# event like any other, published on the bus: ~120 bytes a head keeps it far below
# Kafka's 1 MB message limit.
MAX_HEADS = 1000
_PAGE = 1000


async def write_checkpoint(store: EventStore) -> AuditCheckpoint | None:
    """Append a checkpoint of the streams changed since the last one; None when nothing
    changed or another writer appended one meanwhile."""
    last = await store.read_last(AUDIT_STREAM, 1)
    previous = decode(last[0]) if last else None
    position = previous.position if isinstance(previous, AuditCheckpoint) else 0
    heads: dict[str, dict[str, Any]] = {}
    while len(heads) < MAX_HEADS and (page := await store.read_all(position, _PAGE)):
        for event in page:
            if event.stream != AUDIT_STREAM and event.hash:
                heads[event.stream] = {"seq": event.seq, "hash": event.hash}
        position = page[-1].position
    if not heads:
        return None
    checkpoint = AuditCheckpoint(heads=heads, position=position)
    try:
        await store.append(AUDIT_STREAM, [NewEvent(checkpoint)],
                           expected_seq=last[0].seq if last else 0)
    except ConcurrencyConflict:
        return None
    return checkpoint


async def checkpoint_every(store: EventStore, interval_s: float) -> None:
    """A checkpoint every ``interval_s`` until cancelled; one that fails is logged and
    the next one tried (a store away for a while loses nothing: the next one covers it)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            checkpoint = await write_checkpoint(store)
        except Exception as exc:
            log.warning("audit checkpoint failed", extra={"error": str(exc)})
            continue
        if checkpoint is not None:
            log.info("audit checkpoint", extra={"streams": len(checkpoint.heads),
                                                "position": checkpoint.position})
