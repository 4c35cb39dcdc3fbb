"""The API's read model of runs: ``shared.projections.runs.apply`` over ``cyclone.events``,
kept in a ``RunViews`` store (``shared.ports.runviews``).

Applying an event is get the run's view, apply, put. ``put`` stores a view only if it
is newer than the stored one, so redelivered or reordered events (a rebalance, a
relay that publishes again) cannot move a view back, and several api replicas can
share one store and one consumer group: each event is applied by one of them.

An event that does not follow the stored view (its seq is past ``last_seq + 1``: the
view store was emptied, the bus no longer holds the run's first events) means events
were missed: the view is folded again from the run's stream in the event store. Both
paths fold the same events with the same pure function, so the view equals a rebuilt
one.

Embedded mode: views in this process (``MemoryRunViews``), rebuilt from the store at
start (``rebuild``). Distributed mode: views in MongoDB shared by the api replicas,
filled by the group from where it committed; nothing is replayed at start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from shared.adapters.runviews.memory import MemoryRunViews
from shared.consume import consume
from shared.errors import StoreError
from shared.events import RecordedEvent, is_run_stream
from shared.ports.bus import TOPIC_EVENTS, Bus, Message
from shared.ports.eventstore import EventStore
from shared.ports.runviews import DurationHistogram, RunViews, step_durations_of
from shared.projections.replay import replay_runs
from shared.projections.runs import RunView, apply, run_id_of
from shared.runstream import load_run
from shared.status import JobStatus
from shared.tasks import cancel_and_wait
from shared.wire import decode_event
from shared.workers import label_set

__all__ = ["GROUP", "STEP_BUCKETS", "Queue", "RunStats", "RunsReadModel", "queues_of"]

log = logging.getLogger(__name__)

GROUP = "api-readmodel"  # the consumer group of every api replica's projection
STEP_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)  # step durations, seconds
STATS_REFRESH_S = 5.0  # how often /metrics figures are read from a shared store
STATS_IDLE_S = 300.0  # not refreshed while nobody has scraped /metrics for this long


@dataclass(frozen=True)
class Queue:
    """The jobs queued for workers with one label set (their ``runs-on:``)."""

    jobs: int
    oldest: float | None  # when the longest-waiting one was queued (epoch s; None: unknown)


def queues_of(runs: Iterable[RunView]) -> dict[str, Queue]:
    """The queued jobs of ``runs`` by label set (``label_set``: "" for no labels)."""
    counts: Counter[str] = Counter()
    oldest: dict[str, float] = {}
    for run in runs:
        for job in run.jobs:
            if job.status != JobStatus.QUEUED:
                continue
            labels = label_set(run.runs_on(job.name))
            counts[labels] += 1
            since = _epoch(job.queued_at)
            if since is not None and since < oldest.get(labels, since + 1):
                oldest[labels] = since
    return {labels: Queue(n, oldest.get(labels)) for labels, n in counts.items()}


def _epoch(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:  # a view stored before it had the time
        return None


@dataclass(frozen=True)
class RunStats:
    """The figures ``/metrics`` shows about runs."""

    by_status: dict[str, int]
    queues: dict[str, Queue]  # queued jobs by label set
    steps: DurationHistogram  # step durations, in STEP_BUCKETS

    @classmethod
    async def of(cls, views: RunViews) -> RunStats:
        # Only a run that has not ended has queued jobs (an end closes them).
        return cls(by_status=await views.counts_by_status(),
                   queues=queues_of(await views.unfinished()),
                   steps=await views.step_durations(STEP_BUCKETS))

    @classmethod
    def of_runs(cls, runs: Collection[RunView]) -> RunStats:
        return cls(by_status=dict(Counter(r.status for r in runs)), queues=queues_of(runs),
                   steps=DurationHistogram.of(
                       STEP_BUCKETS, [d for r in runs for d in step_durations_of(r)]))


class RunsReadModel:
    """Run views for the API. ``views`` default: an empty ``MemoryRunViews``; ``store``:
    where missed events are read from (None: an event past a gap is dropped)."""

    def __init__(self, views: RunViews | None = None, store: EventStore | None = None) -> None:
        self.views: RunViews = MemoryRunViews() if views is None else views
        self.store = store
        self._stats = RunStats({}, {}, DurationHistogram.of(STEP_BUCKETS, []))
        self._scraped = time.monotonic()

    @classmethod
    async def rebuild(cls, store: EventStore) -> RunsReadModel:
        """Every run's view folded from the store, held in this process."""
        return cls(MemoryRunViews((await replay_runs(store)).runs), store)

    @property
    def runs(self) -> dict[str, RunView]:
        """The views by run id, when they are held in this process (tests, tools)."""
        if not isinstance(self.views, MemoryRunViews):
            raise TypeError(f"the run views are not in this process: {self.views!r}")
        return self.views.runs

    async def get(self, run_id: str) -> RunView | None:
        return await self.views.get(run_id)

    async def apply(self, recorded: RecordedEvent) -> None:
        """Apply one event of ``cyclone.events``; idempotent."""
        if not is_run_stream(recorded.stream):
            return
        run_id = run_id_of(recorded.stream)
        current = await self.views.get(run_id)
        last = current.last_seq if current is not None else 0
        if recorded.seq <= last:
            return  # a redelivery: already applied
        if recorded.seq == last + 1:
            await self.views.put(apply(current, recorded))
        elif self.store is not None:
            log.info("events of a run were missed; folding its stream",
                     extra={"run": run_id, "seq": recorded.seq, "view_seq": last})
            view = await load_run(self.store, run_id)
            if view is not None:
                await self.views.put(view)

    async def follow(self, bus: Bus, group: str = GROUP) -> None:
        """Apply ``cyclone.events`` as a member of ``group`` until the bus closes; keep the
        ``/metrics`` figures fresh meanwhile when the views are not in this process."""
        async def handle(message: Message) -> None:
            await self.apply(decode_event(message.value))

        refreshing = None
        if not isinstance(self.views, MemoryRunViews):
            refreshing = asyncio.create_task(self._refresh_stats(), name="readmodel-stats")
        try:
            await consume(bus, TOPIC_EVENTS, group, handle)
        finally:
            await cancel_and_wait(refreshing)

    # --- /metrics ------------------------------------------------------------------------

    def stats(self) -> RunStats:
        """The latest figures, without I/O (metrics are collected synchronously): exact
        for views in this process; for a shared store, read every ``STATS_REFRESH_S``."""
        self._scraped = time.monotonic()
        if isinstance(self.views, MemoryRunViews):
            return RunStats.of_runs(self.views.runs.values())
        return self._stats

    async def _refresh_stats(self) -> None:
        while True:
            if time.monotonic() - self._scraped < STATS_IDLE_S:
                try:
                    self._stats = await RunStats.of(self.views)
                except StoreError as exc:  # the store is away: keep the last figures
                    log.warning("run metrics not refreshed", extra={"error": str(exc)})
            await asyncio.sleep(STATS_REFRESH_S)
