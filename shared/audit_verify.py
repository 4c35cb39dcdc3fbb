"""Verifying the audit chain: which events were edited, removed, inserted or reordered.

``verify_stream(stream, events, head)`` is pure: the events of one stream as the store
returns them (seq order) and the head the latest checkpoint recorded for it, if any.
``verify_store`` walks streams of a store with it. How the evidence is read:

1. *Unchained*: events at the start of a stream with neither ``hash`` nor
   ``prev_hash`` were stored before the chain existed. Reported as such, not as
   tampering; the chain starts after them.
2. Each chained event's hash is recomputed (``shared.audit.recorded_hash``). When it
   does not match at the event's seq but matches at another one nearby (``MOVE_WINDOW``,
   or right after the event its ``prev_hash`` names), the event is intact but was
   *moved*: its chained seq is that other one.
3. An event whose hash matches nowhere was forged: *inserted* when nothing links to it
   (no event's ``prev_hash`` is its hash, and it is not the stream's last event), when
   its hash is empty, or when it carries another event's hash (a copy); else *edited*
   (its successor still links to the hash it had).
4. Chained seqs missing between the first and the last are *removed* events; so are
   seqs after the last one up to the checkpoint's head.
5. A moved event is *reordered* unless its move is the shift an insertion or removal
   before it explains (a row inserted in the middle pushes the later ones up by one).
6. An event whose successor's ``prev_hash`` is not its hash, or whose hash differs
   from the checkpoint's head, was *edited* and its hash recomputed (or events after it
   were removed and the rest renumbered and re-hashed: the evidence is the same).

Limits: the hash is not keyed, so someone who rewrites a stream's whole chain after a
change, and the checkpoints that name it, is not detected; a head kept outside the
store (a provenance document holds its run's) still shows it.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.audit import AUDIT_STREAM, GENESIS, recorded_hash
from shared.events import AuditCheckpoint, RecordedEvent, decode
from shared.ports.eventstore import EventStore

__all__ = ["MOVE_WINDOW", "AuditReport", "Finding", "FindingKind", "Head", "latest_heads",
           "verify_store", "verify_stream"]

MOVE_WINDOW = 8  # how far from its stored seq a moved event is looked for


class FindingKind(StrEnum):
    EDITED = "edited"
    REMOVED = "removed"
    INSERTED = "inserted"
    REORDERED = "reordered"
    UNCHAINED = "unchained"  # stored before the chain existed: not tampering


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    stream: str
    seq: int  # the stored seq (removed: the first missing one)
    last_seq: int = 0  # a range's last seq (removed, unchained); 0: just ``seq``
    type: str = ""  # the event's type ("" for removed events: they are gone)
    detail: str = ""

    @property
    def tampering(self) -> bool:
        return self.kind is not FindingKind.UNCHAINED

    def to_json(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "stream": self.stream, "seq": self.seq,
                "last_seq": self.last_seq or self.seq, "type": self.type,
                "detail": self.detail}

    def __str__(self) -> str:
        seqs = f"seq {self.seq}" + (f"-{self.last_seq}" if self.last_seq > self.seq else "")
        what = f" {self.type}" if self.type else ""
        return f"{self.stream} {seqs}{what}: {self.kind}" + (
            f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Head:
    """A stream's last event as a checkpoint recorded it."""

    seq: int
    hash: str
    checkpoint: int  # the checkpoint's seq in the audit stream


@dataclass
class AuditReport:
    streams: int = 0
    events: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def tampered(self) -> bool:
        return any(f.tampering for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {"streams": self.streams, "events": self.events,
                "findings": len(self.findings), "tampered": self.tampered}


# --- one stream ------------------------------------------------------------------------


def verify_stream(stream: str, events: Sequence[RecordedEvent],
                  head: Head | None = None) -> list[Finding]:
    """What the chain says about ``events`` (one stream, in seq order); see the module
    docstring. An untouched stream gives ``[]`` (or one ``unchained`` finding)."""
    legacy = 0
    while legacy < len(events) and not events[legacy].hash and not events[legacy].prev_hash:
        legacy += 1
    findings: list[Finding] = []
    if legacy:
        findings.append(Finding(FindingKind.UNCHAINED, stream, events[0].seq,
                                events[legacy - 1].seq,
                                detail="stored before the audit chain: not verifiable"))
    chain = _Chain(stream, events[legacy:], events[legacy - 1] if legacy else None)
    return findings + chain.findings(head)


class _Chain:
    """The chained part of one stream, read as the module docstring says."""

    def __init__(self, stream: str, events: Sequence[RecordedEvent],
                 unchained: RecordedEvent | None) -> None:
        self.stream, self.events, self.unchained = stream, events, unchained
        self.base = unchained.seq if unchained else 0  # the chain starts after it
        self.by_hash = {e.hash: e for e in events if e.hash}
        self.linked = {e.prev_hash for e in events}
        self.copies = Counter(e.hash for e in events)
        self.out: dict[int, Finding] = {}  # stored seq -> finding about that event
        self.claimed: dict[int, RecordedEvent] = {}  # chained seq -> event
        self.inserted: list[int] = []  # stored seqs
        self.moved: list[tuple[RecordedEvent, int]] = []  # (event, its chained seq)

    def findings(self, head: Head | None) -> list[Finding]:
        for event in self.events:
            self._place(event)
        removed = self._removed(head)
        self._moves(removed)
        self._links(head)
        every = [*self.out.values(), *removed]
        return sorted(every, key=lambda f: (f.seq, f.kind))

    def _place(self, event: RecordedEvent) -> None:
        seq = self._chained_seq(event)
        if seq is None:
            seq = None if self._forged(event) else event.seq  # an edited one stays put
        elif seq != event.seq:
            self.moved.append((event, seq))
        if seq is None:
            return
        if seq in self.claimed:  # two events for one place: the later one is extra
            self._report(event, FindingKind.INSERTED, f"a second event for seq {seq}")
            self.inserted.append(event.seq)
        else:
            self.claimed[seq] = event

    def _chained_seq(self, event: RecordedEvent) -> int | None:
        """The seq at which the event's hash holds, if any (its own first)."""
        if not event.hash:
            return None
        parent = self.by_hash.get(event.prev_hash)
        tries = [event.seq, *(event.seq + d for r in range(1, MOVE_WINDOW + 1) for d in (-r, r))]
        if parent is not None:
            tries.insert(1, parent.seq + 1)
        if event.prev_hash == GENESIS:
            tries.insert(1, self.base + 1)
        for seq in dict.fromkeys(s for s in tries if s > 0):
            if recorded_hash(event, seq) == event.hash:
                return seq
        return None

    def _forged(self, event: RecordedEvent) -> bool:
        """Report an event whose hash holds nowhere; True: it was inserted."""
        last = event is self.events[-1]
        if not event.hash:
            why = "it has no hash: written around the store"
        elif self.copies[event.hash] > 1:
            why = "it carries another event's hash"
        elif event.hash not in self.linked and not last:
            why = "its hash matches its content nowhere and no event links to it"
        else:
            self._report(event, FindingKind.EDITED, "its content does not match its hash")
            return False
        self._report(event, FindingKind.INSERTED, why)
        self.inserted.append(event.seq)
        return True

    def _removed(self, head: Head | None) -> list[Finding]:
        """The chained seqs missing, as ranges (never one by one: a seq edited to a huge
        number must not make a huge list)."""
        present = sorted(self.claimed)
        bounds = [self.base, *present]
        if head is not None and head.seq > bounds[-1]:
            bounds.append(head.seq + 1)  # up to the checkpoint's head, inclusive
        found: list[Finding] = []
        for before, after in itertools.pairwise(bounds):
            if after - before > 1:
                past_end = not present or before >= present[-1]
                why = (f"checkpoint {head.checkpoint} recorded the stream up to seq {head.seq}"
                       if past_end and head else "missing from the chain")
                found.append(Finding(FindingKind.REMOVED, self.stream, before + 1, after - 1,
                                     detail=why))
        return found

    def _moves(self, removed: list[Finding]) -> None:
        inserted = sorted(self.inserted)
        for event, seq in self.moved:
            gaps_before = sum(max(0, min(f.last_seq, seq - 1) - f.seq + 1) for f in removed)
            shift = bisect.bisect_left(inserted, event.seq) - gaps_before
            if event.seq - seq != shift:
                self._report(event, FindingKind.REORDERED,
                             f"stored as seq {event.seq}, chained as seq {seq}")

    def _links(self, head: Head | None) -> None:
        first = self.claimed.get(self.base + 1)
        if self.unchained and first is not None and first.prev_hash != GENESIS:
            self._report(self.unchained, FindingKind.EDITED,
                         "the chain after it links to a hash it no longer has")
        for seq, event in self.claimed.items():
            before = self.claimed.get(seq - 1)
            if before is not None and event.prev_hash != before.hash:
                self._report(before, FindingKind.EDITED,
                             "the next event does not link to it: changed and re-hashed, "
                             "or events after it removed and the rest renumbered")
        if head is not None and (at := self.claimed.get(head.seq)) and at.hash != head.hash:
            self._report(at, FindingKind.EDITED,
                         f"checkpoint {head.checkpoint} recorded another hash for it: it or "
                         f"an event before it was changed and the chain re-hashed")

    def _report(self, event: RecordedEvent, kind: FindingKind, detail: str) -> None:
        self.out.setdefault(event.seq, Finding(kind, self.stream, event.seq, type=event.type,
                                               detail=detail))


# --- a store ---------------------------------------------------------------------------

Progress = Callable[[int, int, str], Awaitable[None]]  # (streams done, of, the next one)


async def _no_progress(done: int, total: int, stream: str) -> None:
    return None


async def latest_heads(store: EventStore) -> dict[str, Head]:
    """The last head each checkpoint of ``AUDIT_STREAM`` recorded, per stream (only from
    checkpoints whose own hash holds: a forged one anchors nothing)."""
    heads: dict[str, Head] = {}
    for recorded in await store.read(AUDIT_STREAM):
        if not recorded.hash or recorded_hash(recorded) != recorded.hash:
            continue
        checkpoint = decode(recorded)
        if not isinstance(checkpoint, AuditCheckpoint):
            continue
        for stream, head in checkpoint.heads.items():
            heads[stream] = Head(int(head["seq"]), str(head["hash"]), recorded.seq)
    return heads


async def verify_store(store: EventStore, streams: Sequence[str] | None = None,
                       progress: Progress = _no_progress) -> AuditReport:
    """Verify ``streams`` (None: every stream of the store, and every stream a checkpoint
    names, so one removed whole shows) against the checkpoints' heads."""
    heads = await latest_heads(store)
    if streams is None:
        names = sorted(set(await store.streams()) | set(heads))
    else:
        names = list(streams)
    report = AuditReport(streams=len(names))
    for done, stream in enumerate(names):
        await progress(done, len(names), stream)
        events = await store.read(stream)
        report.events += len(events)
        report.findings += verify_stream(stream, events, heads.get(stream))
    await progress(len(names), len(names), "")
    return report

