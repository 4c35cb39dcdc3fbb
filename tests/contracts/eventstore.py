"""The EventStore contract (``shared/ports/eventstore.py``), run against every adapter.

Subclass ``EventStoreContract`` as ``Test<Adapter>`` and provide three fixtures:

* ``store``: an open store (closed by the fixture afterwards);
* ``reopen``: an async callable that closes the store it is given and returns a new
  store on the same storage (the fixture closes what it returned);
* ``tamper``: a ``Tamper`` on the same storage, writing to the database directly (as
  someone editing it behind Cyclone's back would), for the audit chain's tests.

Stream names are unique per test, so an adapter may share its storage between tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import pytest

from shared.audit import GENESIS, recorded_hash
from shared.audit_checkpoints import write_checkpoint
from shared.audit_verify import Finding, FindingKind, verify_store
from shared.errors import ConcurrencyConflict
from shared.events import (
    JobQueued,
    NewEvent,
    RecordedEvent,
    RunPlanned,
    StepFinished,
    decode,
)
from shared.pipeline.plan import JobSpec, Plan, StepSpec
from shared.ports.eventstore import EventStore
from shared.status import StepStatus

__all__ = ["EventStoreContract", "Reopen", "Tamper"]

Reopen = Callable[[EventStore], Awaitable[EventStore]]


class Tamper(Protocol):
    """Direct writes to an adapter's database, bypassing the store (and its chain)."""

    async def set_data(self, stream: str, seq: int, data: dict[str, Any]) -> None: ...

    async def delete(self, stream: str, seq: int) -> None: ...

    async def renumber(self, stream: str, seq: int, new_seq: int) -> None: ...

    async def insert(self, event: RecordedEvent) -> None:
        """Store ``event`` as it is (its seq, hash and prev_hash), at a new position."""


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}"


def jobs(*names: str) -> list[NewEvent]:
    return [NewEvent(JobQueued(job=name)) for name in names]


async def all_events_of(store: EventStore, streams: set[str], after: int) -> list[RecordedEvent]:
    """Every event of ``streams`` after position ``after``, paging read_all by 2."""
    found: list[RecordedEvent] = []
    position = after
    while page := await store.read_all(position, limit=2):
        assert len(page) <= 2
        found += [e for e in page if e.stream in streams]
        position = page[-1].position
    return found


async def findings_of(store: EventStore, stream: str) -> list[tuple[FindingKind, int, str]]:
    found: list[Finding] = (await verify_store(store, [stream])).findings
    return [(f.kind, f.seq, f.type) for f in found]


async def chained(store: EventStore) -> tuple[str, list[RecordedEvent]]:
    """A stream of five events: JobQueued a, b, c, d, e."""
    stream = unique("run")
    return stream, await store.append(stream, jobs("a", "b", "c", "d", "e"), expected_seq=0)


class EventStoreContract:
    @pytest.fixture
    async def store(self) -> AsyncIterator[EventStore]:
        raise NotImplementedError("subclass provides the store fixture")
        yield  # pragma: no cover

    @pytest.fixture
    def reopen(self) -> Reopen:
        raise NotImplementedError("subclass provides the reopen fixture")

    @pytest.fixture
    def tamper(self) -> Tamper:
        raise NotImplementedError("subclass provides the tamper fixture")

    # --- append and read -----------------------------------------------------------------

    async def test_append_then_read_returns_events_in_order(self, store: EventStore) -> None:
        stream = unique("run")
        step = StepSpec(name="build", image="alpine", commands=("make ✓",), env={"LANG": "ünï"})
        plan = Plan("ünï.yml", (JobSpec(name="build", image="alpine", steps=(step,)),))
        new = [
            NewEvent(RunPlanned(plan=plan, warnings=("⚠ deprecated key", "日本語"))),
            NewEvent(JobQueued(job="build"), meta={"correlation": "c-1", "by": "zoë"}),
            NewEvent(StepFinished(job="build", step="test", status=StepStatus.FAILURE, exit_code=None,
                                  duration_s=1.5, reason="emoji 🚀 and \"quotes\"\n")),
        ]
        appended = await store.append(stream, new, expected_seq=0)
        read = await store.read(stream)

        assert read == appended
        assert [e.seq for e in read] == [1, 2, 3]
        assert [e.id for e in read] == [n.id for n in new]
        assert [e.type for e in read] == ["RunPlanned", "JobQueued", "StepFinished"]
        assert all(e.stream == stream and e.version == 1 for e in read)
        assert read[0].position < read[1].position < read[2].position
        assert read[0].data == {"plan": json.loads(json.dumps(plan.to_data())),
                                "warnings": ["⚠ deprecated key", "日本語"]}
        assert decode(read[0]) == new[0].event
        assert read[1].meta == {"correlation": "c-1", "by": "zoë"}
        assert read[2].data["exit_code"] is None
        assert read[2].data["reason"] == "emoji 🚀 and \"quotes\"\n"
        assert read[2].ts == new[2].ts

    async def test_next_append_continues_the_seq(self, store: EventStore) -> None:
        stream = unique("run")
        first = await store.append(stream, jobs("a", "b"), expected_seq=0)
        second = await store.append(stream, jobs("c"), expected_seq=2)

        assert [e.seq for e in second] == [3]
        assert second[0].position > first[-1].position
        assert [e.data["job"] for e in await store.read(stream)] == ["a", "b", "c"]

    async def test_last_position_is_the_newest_event(self, store: EventStore) -> None:
        recorded = await store.append(unique("run"), jobs("a", "b"), expected_seq=0)
        assert await store.last_position() == recorded[-1].position

    # --- optimistic concurrency ----------------------------------------------------------

    @pytest.mark.parametrize("stale", [0, 1, 3])
    async def test_wrong_expected_seq_conflicts_and_writes_nothing(
        self, store: EventStore, stale: int
    ) -> None:
        stream = unique("run")
        await store.append(stream, jobs("a", "b"), expected_seq=0)

        with pytest.raises(ConcurrencyConflict) as caught:
            await store.append(stream, jobs("x", "y", "z"), expected_seq=stale)

        assert caught.value.stream == stream
        assert caught.value.expected_seq == stale
        assert [e.data["job"] for e in await store.read(stream)] == ["a", "b"]

    async def test_concurrent_appenders_exactly_one_wins(self, store: EventStore) -> None:
        stream = unique("run")
        await store.append(stream, jobs("first"), expected_seq=0)

        results = await asyncio.gather(
            *(store.append(stream, jobs(f"w{n}-a", f"w{n}-b"), expected_seq=1)
              for n in range(20)),
            return_exceptions=True,
        )

        winners = [r for r in results if isinstance(r, list)]
        losers = [r for r in results if isinstance(r, ConcurrencyConflict)]
        assert len(winners) == 1 and len(losers) == 19, results
        stored = await store.read(stream)
        assert stored[1:] == winners[0]
        assert [e.seq for e in stored] == [1, 2, 3]

    async def test_duplicate_event_id_is_a_conflict(self, store: EventStore) -> None:
        taken = NewEvent(JobQueued(job="a"))
        await store.append(unique("run"), [taken], expected_seq=0)
        other = unique("run")

        with pytest.raises(ConcurrencyConflict):
            await store.append(other, [NewEvent(JobQueued(job="b")), taken], expected_seq=0)

        assert await store.read(other) == []

    async def test_duplicate_id_inside_one_batch_writes_nothing(self, store: EventStore) -> None:
        stream = unique("run")
        new = NewEvent(JobQueued(job="a"))

        with pytest.raises(ConcurrencyConflict):
            await store.append(stream, [new, new], expected_seq=0)

        assert await store.read(stream) == []
        assert [e.seq for e in await store.append(stream, [new], expected_seq=0)] == [1]

    # --- reading -------------------------------------------------------------------------

    async def test_read_from_seq(self, store: EventStore) -> None:
        stream = unique("run")
        await store.append(stream, jobs("a", "b", "c", "d", "e"), expected_seq=0)

        assert [e.seq for e in await store.read(stream, from_seq=3)] == [3, 4, 5]
        assert [e.seq for e in await store.read(stream, from_seq=5)] == [5]
        assert await store.read(stream, from_seq=6) == []

    async def test_read_last_gives_the_newest_events_in_seq_order(
            self, store: EventStore) -> None:
        stream, other = unique("ledger"), unique("ledger")
        for n in range(1, 8):
            await store.append(stream, [NewEvent(JobQueued(job=f"j{n}"))], expected_seq=n - 1)
        await store.append(other, [NewEvent(JobQueued(job="elsewhere"))], expected_seq=0)

        assert [e.seq for e in await store.read_last(stream, 3)] == [5, 6, 7]
        assert [e.data["job"] for e in await store.read_last(stream, 1)] == ["j7"]
        assert [e.seq for e in await store.read_last(stream, 50)] == list(range(1, 8))
        assert await store.read_last(stream, 0) == []
        assert await store.read_last(unique("none"), 5) == []

    async def test_read_of_unknown_stream_is_empty(self, store: EventStore) -> None:
        assert await store.read(unique("never-written")) == []

    async def test_read_all_pages_across_streams_in_position_order(
        self, store: EventStore
    ) -> None:
        start = await store.last_position()
        a, b = unique("run-a"), unique("run-b")
        await store.append(a, jobs("a1", "a2"), expected_seq=0)
        await store.append(b, jobs("b1"), expected_seq=0)
        await store.append(a, jobs("a3"), expected_seq=2)
        await store.append(b, jobs("b2", "b3"), expected_seq=1)

        events = await all_events_of(store, {a, b}, after=start)

        assert [e.data["job"] for e in events] == ["a1", "a2", "b1", "a3", "b2", "b3"]
        positions = [e.position for e in events]
        assert positions == sorted(set(positions))
        assert all(p > start for p in positions)
        tail = await store.read_all(events[3].position, limit=1000)
        assert [e.data["job"] for e in tail if e.stream in {a, b}] == ["b2", "b3"]

    async def test_streams_by_prefix(self, store: EventStore) -> None:
        prefix = unique("proj") + "-"
        names = [prefix + "2", prefix + "1", prefix + "10"]
        for name in names:
            await store.append(name, jobs("x", "y"), expected_seq=0)
        await store.append(prefix.upper() + "3", jobs("x"), expected_seq=0)
        await store.append(prefix[:-1], jobs("x"), expected_seq=0)

        assert sorted(await store.streams(prefix)) == sorted(names)
        assert set(names) <= set(await store.streams())

    # --- checkpoints ---------------------------------------------------------------------

    async def test_checkpoints_default_to_zero_and_are_saved(self, store: EventStore) -> None:
        name, other = unique("relay"), unique("relay")
        assert await store.checkpoint(name) == 0

        await store.save_checkpoint(name, 42)
        await store.save_checkpoint(name, 57)
        await store.save_checkpoint(other, 3)

        assert await store.checkpoint(name) == 57
        assert await store.checkpoint(other) == 3

    # --- durability ----------------------------------------------------------------------

    async def test_events_and_checkpoints_survive_reopen(
        self, store: EventStore, reopen: Reopen
    ) -> None:
        stream, name = unique("run"), unique("relay")
        before = await store.append(stream, jobs("a", "b"), expected_seq=0)
        await store.save_checkpoint(name, before[-1].position)

        again = await reopen(store)

        assert await again.read(stream) == before
        assert await again.checkpoint(name) == before[-1].position
        assert await again.last_position() >= before[-1].position
        with pytest.raises(ConcurrencyConflict):
            await again.append(stream, jobs("stale"), expected_seq=0)
        after = await again.append(stream, jobs("c"), expected_seq=2)
        assert after[0].seq == 3 and after[0].position > before[-1].position

    # --- the audit chain (shared/audit.py, shared/audit_verify.py) ------------------------

    async def test_appended_events_are_chained_per_stream(self, store: EventStore) -> None:
        stream, other = unique("run"), unique("run")
        first = await store.append(stream, jobs("a", "b"), expected_seq=0)
        await store.append(other, jobs("x"), expected_seq=0)
        second = await store.append(stream, jobs("c"), expected_seq=2)

        read = await store.read(stream)
        assert read == [*first, *second]
        assert [e.prev_hash for e in read] == [GENESIS, read[0].hash, read[1].hash]
        assert all(e.hash == recorded_hash(e) for e in read)
        assert len({e.hash for e in read}) == 3
        assert await findings_of(store, stream) == []

    async def test_an_untouched_store_verifies_clean(self, store: EventStore) -> None:
        await chained(store)
        await store.append(unique("project"), jobs("p"), expected_seq=0)
        assert await write_checkpoint(store) is not None
        await chained(store)  # after the checkpoint: not anchored yet, still clean

        report = await verify_store(store)

        assert report.findings == [] and not report.tampered
        assert report.streams >= 4 and report.events >= 12

    async def test_an_edited_payload_is_found(self, store: EventStore, tamper: Tamper) -> None:
        stream, events = await chained(store)

        await tamper.set_data(stream, 3, {**events[2].data, "job": "c-edited"})

        assert await findings_of(store, stream) == [(FindingKind.EDITED, 3, "JobQueued")]

    async def test_a_removed_event_is_found(self, store: EventStore, tamper: Tamper) -> None:
        stream, _ = await chained(store)

        await tamper.delete(stream, 3)

        assert await findings_of(store, stream) == [(FindingKind.REMOVED, 3, "")]

    async def test_an_inserted_event_is_found(self, store: EventStore, tamper: Tamper) -> None:
        stream, events = await chained(store)
        for seq in (5, 4, 3):  # make room at seq 3, as a forger must
            await tamper.renumber(stream, seq, seq + 1)
        forged = dataclasses.replace(events[2], id=uuid.uuid4().hex, type="JobSkipped",
                                     data={"job": "c", "reason": "forged"}, hash="f" * 64)

        await tamper.insert(forged)

        assert await findings_of(store, stream) == [(FindingKind.INSERTED, 3, "JobSkipped")]

    async def test_swapped_events_are_found(self, store: EventStore, tamper: Tamper) -> None:
        stream, _ = await chained(store)

        await tamper.renumber(stream, 2, 100)
        await tamper.renumber(stream, 3, 2)
        await tamper.renumber(stream, 100, 3)

        assert await findings_of(store, stream) == [
            (FindingKind.REORDERED, 2, "JobQueued"), (FindingKind.REORDERED, 3, "JobQueued")]

    async def test_a_removed_tail_is_found_by_the_checkpoint(
            self, store: EventStore, tamper: Tamper) -> None:
        stream, _ = await chained(store)
        await write_checkpoint(store)

        await tamper.delete(stream, 5)
        await tamper.delete(stream, 4)

        report = await verify_store(store, [stream])
        assert [(f.kind, f.seq, f.last_seq) for f in report.findings] == [
            (FindingKind.REMOVED, 4, 5)]
        assert "checkpoint 1 recorded the stream up to seq 5" in str(report.findings[0])
        assert report.tampered
