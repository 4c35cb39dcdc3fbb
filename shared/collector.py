"""The retention collector: one pass removes what the projects' rules no longer keep.

A pass (``Collector.collect``):

1. trims each project's caches to its limit (``CacheIndex.trim``: a lowered
   ``cache_limit_mb`` takes effect without waiting for the next save);
2. finds the runs each project's ``retention`` no longer keeps (``shared.retention.due``),
   from the run views (every run, paged);
3. works out the garbage blobs (``shared.retention.garbage``): named by a collected run or
   a cache save, named by nothing live, and still stored;
4. for each run due, oldest first: deletes its log lines and its garbage blobs, then
   appends ``RunDataCollected(what, reason, freed_bytes)`` to its stream (its events are
   kept). Deleting first: a pass that dies half-way leaves the run due, and the next
   pass finishes it (deletes are idempotent), rather than a run recorded as collected
   whose logs are still there and never looked at again;
5. deletes the rest of the garbage (evicted cache entries' blobs, leftovers).

``dry_run`` does the reading and reports what a pass would remove, changing nothing.
``progress`` is called with a JSON object for each thing removed (``kind``: evicted,
plan, run, blob, done), which ``POST /api/v1/gc`` streams to ``cyclone gc``.

Concurrency: passes of one collector are serialised; two collectors (two api replicas,
one answering ``cyclone gc`` while the leader's periodic pass runs) may overlap safely:
deletes are idempotent, and the ``RunDataCollected`` append decides on the run's fresh
state, so a run is recorded once. The views the api reads may lag the store by a moment
(distributed mode): a blob a just-finished run shares with a collected one, whose event
the view has not applied yet, could go; passes are hourly and such sharing is rare (the
same bytes uploaded again), which is the price of not folding every run stream per pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shared import events as ev
from shared.caches import CacheIndex, CacheState, over_limit
from shared.ports.artifacts import ArtifactStore
from shared.ports.eventstore import EventStore
from shared.ports.logstore import LogStore
from shared.ports.runviews import RunViews
from shared.projections.projects import ProjectView, fold_project
from shared.projections.runs import RunView
from shared.retention import Due, RunRecord, due, garbage
from shared.runstream import append_to_run

__all__ = ["Collector", "GcSummary", "Progress", "StorageUse"]

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], Awaitable[None]]
_PAGE = 500  # run views read at a time
_PROJECT_PREFIX, _CACHES_PREFIX = "project-", "caches-"


@dataclass(frozen=True)
class GcSummary:
    dry_run: bool
    runs: int  # whose logs and artifacts were collected
    blobs: int  # deleted from the artifact store
    freed_bytes: int
    evicted: int  # cache entries evicted for being over their project's limit
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"kind": "done", "dry_run": self.dry_run, "runs": self.runs, "blobs": self.blobs,
                "freed_bytes": self.freed_bytes, "evicted": self.evicted,
                "seconds": round(self.seconds, 3)}


class Collector:
    """``views()``: the run views to read (the api's read model, opened at its start)."""

    def __init__(self, store: EventStore, views: Callable[[], RunViews], logs: LogStore,
                 artifacts: ArtifactStore, caches: CacheIndex,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.views = views
        self.logs = logs
        self.artifacts = artifacts
        self.caches = caches
        self.clock = clock
        self.freed_total = 0  # by this process's passes (a /metrics counter)
        self._lock = asyncio.Lock()

    async def collect(self, dry_run: bool = False,
                      progress: Progress | None = None) -> GcSummary:
        async with self._lock:
            return await _Pass(self, dry_run, progress or _quiet).run()

    async def run_every(self, interval_s: float) -> None:
        """A pass every ``interval_s`` (the first after one interval), until cancelled; a
        pass that fails is logged and the next one tried."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                summary = await self.collect()
            except Exception as exc:  # a store away: the next pass tries again
                log.warning("retention pass failed", extra={"error": str(exc)})
                continue
            log.info("retention pass", extra=summary.to_json())


async def _quiet(item: dict[str, Any]) -> None:
    return None


class _Pass:
    """One pass's reading, deciding and deleting (see the module docstring)."""

    def __init__(self, collector: Collector, dry_run: bool, progress: Progress) -> None:
        self.c = collector
        self.dry_run = dry_run
        self.progress = progress
        self.deleted: set[str] = set()
        self.freed = 0
        self.evicted = 0

    async def run(self) -> GcSummary:
        started = time.monotonic()
        caches = {name: await self._trimmed(name) for name in await _names(self.c.store,
                                                                             _CACHES_PREFIX)}
        records = [RunRecord.of(view) async for view in _every_run(self.c.views())]
        collecting = await self._due(records)
        stored = {blob.digest: blob.size async for blob in self.c.artifacts.blobs()}
        going = garbage(records, (d.run.id for d in collecting),
                        live_cache=(e.digest for s in caches.values() for e in s.entries.values()),
                        saved_cache=(d for s in caches.values() for d in s.saved_digests),
                        stored=stored)
        await self.progress({"kind": "plan", "runs": len(collecting), "blobs": len(going),
                             "bytes": sum(stored[d] for d in going)})
        for item in collecting:
            await self._collect_run(item, going, stored)
        for digest in sorted(going - self.deleted):
            await self._delete(digest, stored[digest])
            await self.progress({"kind": "blob", "digest": digest, "size": stored[digest]})
        summary = GcSummary(dry_run=self.dry_run, runs=len(collecting), blobs=len(self.deleted),
                            freed_bytes=self.freed, evicted=self.evicted,
                            seconds=time.monotonic() - started)
        await self.progress(summary.to_json())
        return summary

    async def _trimmed(self, project: str) -> CacheState:
        """The project's cache entries once trimmed to its limit (reported, each)."""
        state = await self.c.caches.state(project)
        limit = await self.c.caches.limit(project)
        evicted = (over_limit(state.entries, limit) if self.dry_run
                   else await self.c.caches.trim(project))
        for entry in evicted:
            self.evicted += 1
            await self.progress({"kind": "evicted", "project": project, "key": entry.key,
                                 "digest": entry.digest, "size": entry.size})
        if not evicted:
            return state
        gone = {e.key for e in evicted}
        return CacheState({k: e for k, e in state.entries.items() if k not in gone},
                          state.saved_digests, state.seq)

    async def _due(self, records: list[RunRecord]) -> list[Due]:
        by_project: dict[str, list[RunRecord]] = {}
        for record in records:
            by_project.setdefault(record.project, []).append(record)
        now = self.c.clock()
        found = []
        for name, project in (await _projects(self.c.store)).items():
            found += due(by_project.get(name, ()), project.retention, now)
        return found

    async def _collect_run(self, item: Due, going: set[str], stored: dict[str, int]) -> None:
        run = item.run
        blobs = sorted((run.digests & going) - self.deleted)
        freed = sum(stored[d] for d in blobs)
        what = ("logs", "artifacts") if run.digests else ("logs",)
        if not self.dry_run:
            await self.c.logs.delete(run.id)
        for digest in blobs:
            await self._delete(digest, stored[digest])
        if not self.dry_run:
            collected = ev.RunDataCollected(what=what, reason=item.reason, freed_bytes=freed)
            await append_to_run(self.c.store, run.id,
                                lambda view: [] if view is None or view.collected else [collected])
        await self.progress({"kind": "run", "run": run.id, "project": run.project,
                             "what": list(what), "reason": item.reason, "freed_bytes": freed})

    async def _delete(self, digest: str, size: int) -> None:
        if not self.dry_run:
            await self.c.artifacts.delete(digest)
            self.c.freed_total += size
        self.deleted.add(digest)
        self.freed += size


async def _every_run(views: RunViews) -> AsyncIterator[RunView]:
    before = None
    while page := await views.page(before=before, limit=_PAGE):
        for view in page:
            yield view
        before = page[-1].id


async def _names(store: EventStore, prefix: str) -> list[str]:
    return [s.removeprefix(prefix) for s in await store.streams(prefix)]


async def _projects(store: EventStore) -> dict[str, ProjectView]:
    """The live projects by name."""
    found = {}
    for name in await _names(store, _PROJECT_PREFIX):
        view = fold_project(await store.read(f"{_PROJECT_PREFIX}{name}"))
        if view is not None and not view.deleted:
            found[name] = view
    return found


class StorageUse:
    """What ``/metrics`` shows of storage: the artifact store's bytes and each project's
    cache entries, read every ``refresh`` (metrics are collected without I/O)."""

    def __init__(self, store: EventStore, artifacts: ArtifactStore, caches: CacheIndex,
                 collector: Collector | None = None) -> None:
        self.store = store
        self.artifacts = artifacts
        self.caches = caches
        self.collector = collector
        self.artifact_bytes = 0
        self.cache: dict[str, tuple[int, int]] = {}  # project -> (entries, bytes)

    async def refresh(self) -> None:
        self.artifact_bytes = await self.artifacts.used_bytes()
        cache = {}
        for project in await _names(self.store, _CACHES_PREFIX):
            state = await self.caches.state(project)
            cache[project] = (len(state.entries), state.total)
        self.cache = cache

    async def refresh_every(self, interval_s: float) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # a store away: keep the last figures
                log.warning("storage metrics not refreshed", extra={"error": str(exc)})
            await asyncio.sleep(interval_s)

    def samples(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("cyclone_artifact_store_bytes",
                                "Bytes of every blob in the artifact store (artifacts, caches, "
                                "test reports)", value=self.artifact_bytes)
        entries = GaugeMetricFamily("cyclone_cache_entries", "Live cache entries, by project",
                                    labels=["project"])
        size = GaugeMetricFamily("cyclone_cache_bytes", "Bytes of live cache entries, by "
                                 "project", labels=["project"])
        for project, (count, total) in sorted(self.cache.items()):
            entries.add_metric([project], count)
            size.add_metric([project], total)
        yield entries
        yield size
        if self.collector is not None:
            yield CounterMetricFamily("cyclone_gc_freed_bytes", "Bytes of blobs deleted by "
                                      "this process's retention passes",
                                      value=self.collector.freed_total)
