"""The project-wide cache index: which cache entries a project has, over the event store.

A project's entries are its stream ``caches-<project>``: ``CacheEntrySaved`` (a job's
``cache:`` stored under a key the project had no entry for), ``CacheEntryUsed`` (a
restore took it: its last use) and ``CacheEntryEvicted``. ``fold_entries`` is the pure
fold; ``CacheIndex`` reads and appends through it, with the stream's last seq as the
expected seq, so two workers saving the same key race on one seq: the first append wins,
the other reads again, finds the key taken and saves nothing.

Size limit: after a save, the least recently used entries (by ``last_used_at``, else
``saved_at``) are evicted, in the same append, until the project's entries fit within
``limit_bytes(project)``; the entry just saved is never evicted by its own save (one
bigger than the limit stays until the next save). Eviction only records the event: the
bytes are content-addressed and may be shared (another entry, an artifact), so they are
deleted by the collector (``shared.collector``) once nothing live names them.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from shared import events as ev
from shared.errors import ConcurrencyConflict, StoreError
from shared.events import NewEvent, RecordedEvent, caches_stream, decode, utc_now
from shared.ports.artifacts import Blob
from shared.ports.eventstore import EventStore
from shared.projections.projects import fold_project, project_stream
from shared.streamcache import StreamCache

__all__ = ["MIB", "CacheEntry", "CacheIndex", "CacheState", "LimitBytes", "evict_reason",
           "fold_entries", "fold_state", "over_limit", "project_cache_limit"]

log = logging.getLogger(__name__)

MIB = 1024 * 1024
_ATTEMPTS = 50  # appends lost to other writers of one project's entries before giving up

# project -> its cache size limit in bytes; may be a coroutine (a project setting read
# from the store, ``project_cache_limit``)
LimitBytes = Callable[[str], int | Awaitable[int]]


@dataclass(frozen=True)
class CacheEntry:
    key: str
    digest: str
    size: int
    saved_at: str
    last_used_at: str  # "" until a restore takes it
    run: str  # the run and job that saved it
    job: str

    @property
    def recency(self) -> str:
        """What least-recently-used eviction orders by."""
        return self.last_used_at or self.saved_at


@dataclass(frozen=True)
class CacheState:
    """A project's live entries by key, every digest its stream ever saved (what the
    collector may delete once nothing live names it), and the stream's last seq."""

    entries: Mapping[str, CacheEntry] = field(default_factory=dict)
    saved_digests: frozenset[str] = frozenset()
    seq: int = 0

    @property
    def total(self) -> int:
        return sum(e.size for e in self.entries.values())


def fold_entries(events: Iterable[RecordedEvent],
                 entries: Mapping[str, CacheEntry] | None = None) -> dict[str, CacheEntry]:
    """The live entries by key after ``events`` (and ``entries``, the fold of the events
    before them); evicted ones are gone."""
    live = dict(entries or {})
    for recorded in events:
        _apply(live, recorded)
    return live


def fold_state(events: Sequence[RecordedEvent], state: CacheState | None) -> CacheState:
    """``fold_entries`` with the saved digests and the seq (``StreamCache``'s fold)."""
    state = state or CacheState()
    live, digests = dict(state.entries), set(state.saved_digests)
    for recorded in events:
        event = _apply(live, recorded)
        if isinstance(event, ev.CacheEntrySaved):
            digests.add(event.digest)
    return CacheState(live, frozenset(digests), events[-1].seq if events else state.seq)


def _apply(live: dict[str, CacheEntry], recorded: RecordedEvent) -> ev.Event | None:
    event = decode(recorded)
    match event:
        case ev.CacheEntrySaved() if event.key not in live:  # the first save of a key wins
            live[event.key] = CacheEntry(key=event.key, digest=event.digest, size=event.size,
                                         saved_at=recorded.ts, last_used_at="",
                                         run=event.run, job=event.job)
        case ev.CacheEntryUsed() if event.key in live:
            live[event.key] = replace(live[event.key], last_used_at=recorded.ts)
        case ev.CacheEntryEvicted():
            live.pop(event.key, None)
    return event


def over_limit(entries: Mapping[str, CacheEntry], limit: int, keep: str = "") -> list[CacheEntry]:
    """The entries to evict, least recently used first, so that the rest fit in ``limit``
    bytes; ``keep`` (the key just saved) is never among them."""
    total = sum(e.size for e in entries.values())
    evicted = []
    for entry in sorted(entries.values(), key=lambda e: (e.recency, e.saved_at, e.key)):
        if total <= limit:
            break
        if entry.key != keep:
            evicted.append(entry)
            total -= entry.size
    return evicted


def evict_reason(limit: int) -> str:
    return f"over the project's cache limit of {limit // MIB} MB"


def project_cache_limit(store: EventStore, default_mb: int) -> Callable[[str], Awaitable[int]]:
    """A ``LimitBytes`` reading each project's ``cache_limit_mb`` setting (0 or no
    project: ``default_mb``, i.e. ``CYCLONE_CACHE_MAX_MB``)."""
    projects = StreamCache(store, fold_project)

    async def limit(project: str) -> int:
        view = await projects.load(project_stream(project))
        mb = view.cache_limit_mb if view is not None and not view.deleted else 0
        return (mb or default_mb) * MIB

    return limit


class CacheIndex:
    """The cache entries of every project; safe for concurrent use by many tasks and
    processes (each append names the seq it decided on)."""

    def __init__(self, store: EventStore, limit_bytes: LimitBytes) -> None:
        self.store = store
        self._limit = limit_bytes
        self._states: StreamCache[CacheState] = StreamCache(store, fold_state)

    async def state(self, project: str) -> CacheState:
        return await self._states.load(caches_stream(project)) or CacheState()

    async def entries(self, project: str) -> Mapping[str, CacheEntry]:
        return (await self.state(project)).entries

    async def find(self, project: str, key: str,
                   restore_keys: Sequence[str]) -> CacheEntry | None:
        """The entry of ``key``; else, for each of ``restore_keys`` in order, the most
        recently saved entry whose key starts with it; else None."""
        entries = await self.entries(project)
        if key in entries:
            return entries[key]
        for prefix in restore_keys:
            matching = [e for e in entries.values() if e.key.startswith(prefix)]
            if matching:
                return max(matching, key=lambda e: (e.saved_at, e.key))
        return None

    async def has(self, project: str, key: str) -> bool:
        return key in await self.entries(project)

    async def used(self, project: str, key: str, run: str) -> None:
        """Record that ``run`` restored the entry (nothing when it was evicted meanwhile)."""
        def decide(state: CacheState) -> list[ev.Event]:
            return [ev.CacheEntryUsed(key=key, run=run)] if key in state.entries else []

        await self._append(project, decide)

    async def save(self, project: str, key: str, blob: Blob, run: str, job: str) -> bool:
        """Record ``blob`` as the entry of ``key`` and evict what no longer fits; False
        (nothing appended) when the key already has an entry."""
        limit = await self.limit(project)

        def decide(state: CacheState) -> list[ev.Event]:
            if key in state.entries:
                return []
            new = CacheEntry(key=key, digest=blob.digest, size=blob.size, saved_at=utc_now(),
                             last_used_at="", run=run, job=job)
            evicted = over_limit({**state.entries, key: new}, limit, keep=key)
            return [ev.CacheEntrySaved(key=key, digest=blob.digest, size=blob.size, run=run,
                                       job=job), *_evictions(evicted, limit)]

        return bool(await self._append(project, decide))

    async def trim(self, project: str) -> list[CacheEntry]:
        """Evict what is over the project's limit now (a lowered limit); the evicted."""
        limit = await self.limit(project)
        evicted: list[CacheEntry] = []

        def decide(state: CacheState) -> list[ev.Event]:
            evicted[:] = over_limit(state.entries, limit)
            return list(_evictions(evicted, limit))

        await self._append(project, decide)
        return evicted

    async def limit(self, project: str) -> int:
        limit = self._limit(project)
        return await limit if inspect.isawaitable(limit) else limit

    async def _append(self, project: str,
                      decide: Callable[[CacheState], list[ev.Event]]) -> list[RecordedEvent]:
        """Append what ``decide`` makes of the project's entries, deciding again from fresh
        state when another writer appended first."""
        stream = caches_stream(project)
        for _ in range(_ATTEMPTS):
            state = await self.state(project)
            new = decide(state)
            if not new:
                return []
            try:
                appended = await self.store.append(stream, [NewEvent(e) for e in new],
                                                   state.seq)
            except ConcurrencyConflict:
                log.debug("cache index append conflict, deciding again",
                          extra={"project": project})
                continue
            self._states.keep(stream, fold_state(appended, state), appended[-1].seq)
            return appended
        raise StoreError(f"{stream}: gave up after {_ATTEMPTS} concurrent-append conflicts")


def _evictions(entries: Iterable[CacheEntry], limit: int) -> Iterable[ev.CacheEntryEvicted]:
    return (ev.CacheEntryEvicted(key=e.key, digest=e.digest, reason=evict_reason(limit))
            for e in entries)
