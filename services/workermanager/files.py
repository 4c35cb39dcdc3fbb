"""A job's files that outlive it: artifacts, caches and test reports, between the run's
workspace on this host (the executor's ``read_files`` / ``write_files``, tar streams) and
the artifact store every worker shares (``shared.ports.artifacts``), each move recorded
as an event and said in the job's log.

Before the steps (``bring_in``): the artifacts of the jobs it ``needs`` are extracted into
the workspace (a missing or corrupt one errors the job: its steps would run on files
that are not there), then its caches are restored (a cache is only a speed-up: any
problem with one is a miss, said in the log).

After the steps (``keep``): test reports are read whatever the outcome (a report that
cannot be read is a warning, never a failure), artifacts when their ``when`` matches
the outcome, caches after a success under a key the project has no entry for. A store
that fails to take an artifact errors the job: what a later job needs must not be
silently missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from services.workermanager.reports import read_reports
from shared import events as ev
from shared.adapters.executor.workspace_files import TarCounter, files_digest
from shared.caches import CacheIndex
from shared.errors import BlobCorrupted, BlobNotFound, CycloneError
from shared.events import utc_now
from shared.pipeline.plan import CacheSpec, JobSpec
from shared.pipeline.resources import format_size
from shared.pipeline.schema_artifacts import HASH_FILES, hash_files_patterns
from shared.ports.artifacts import ArtifactStore
from shared.ports.executor import Executor, LogSink, RunContext
from shared.projections.runs import RunView
from shared.status import JobStatus

__all__ = ["JobFiles"]

log = logging.getLogger(__name__)

PROGRESS_BYTES = 64 * 1024 * 1024  # a transfer says how far it is at each step of this
Record = Callable[[Sequence[ev.Event]], Awaitable[None]]


@dataclass
class JobFiles:
    run: RunView
    job: JobSpec
    executor: Executor
    ctx: RunContext
    store: ArtifactStore
    caches: CacheIndex | None
    record: Record
    sink: Callable[[str], LogSink]  # the log sink of a pseudo-step ("artifacts", ...)

    def __post_init__(self) -> None:
        self._restored: set[str] = set()  # cache keys restored exactly: nothing to save
        self._keys: dict[int, str] = {}  # each cache's key, hashFiles expanded

    # -- before the steps ----------------------------------------------------------------

    async def bring_in(self) -> str:
        """The needed jobs' artifacts, then the caches; "" or why the job cannot run."""
        problem = await self._artifacts_in()
        if problem:
            return problem
        for index, cache in enumerate(self.job.caches):
            await self._restore(index, cache)
        return ""

    async def _artifacts_in(self) -> str:
        say = self.sink("artifacts")
        for artifact in self.run.artifacts:
            if artifact.job not in self.job.needs:
                continue
            what = f"artifact {artifact.name} of job {artifact.job}"
            await say("stdout", utc_now(), f"cyclone: fetching {what} "
                      f"({format_size(artifact.size)}, {artifact.files} files)")
            try:
                chunks = _progress(self.store.get(artifact.digest), artifact.size, say)
                await self.executor.write_files(self.ctx, chunks)
            except BlobNotFound:
                return f"{what} is no longer stored (removed by retention?)"
            except BlobCorrupted:
                return f"{what} is corrupt in the artifact store (its digest does not match)"
            except CycloneError as exc:
                return f"cannot fetch {what}: {exc}"
        return ""

    async def _restore(self, index: int, cache: CacheSpec) -> None:
        say = self.sink("cache")
        key = await self._key(index, cache)
        if self.caches is None:
            await say("stderr", utc_now(), "cyclone: cache: this worker has no cache index")
            return
        try:
            entry = await self.caches.find(self.run.project, key, cache.restore_keys)
        except CycloneError as exc:
            await say("stderr", utc_now(), f"cyclone: cache {key}: lookup failed: {exc}")
            entry = None
        if entry is None:
            await say("stdout", utc_now(), f"cyclone: cache miss: {key}")
            await self.record([ev.CacheMissed(job=self.job.name, key=key)])
            return
        started = time.monotonic()
        try:
            await self.executor.write_files(
                self.ctx, _progress(self.store.get(entry.digest), entry.size, say))
            await self.caches.used(self.run.project, entry.key, self.run.id)
        except CycloneError as exc:
            await say("stderr", utc_now(), f"cyclone: cache {entry.key}: cannot restore ({exc}); "
                      "going on without it")
            await self.record([ev.CacheMissed(job=self.job.name, key=key)])
            return
        exact = entry.key == key
        if exact:
            self._restored.add(key)
        await say("stdout", utc_now(), f"cyclone: cache {'hit' if exact else 'partial hit'}: "
                  f"{entry.key} ({format_size(entry.size)}, restored in "
                  f"{time.monotonic() - started:.1f}s)")
        await self.record([ev.CacheRestored(job=self.job.name, key=key, restored_key=entry.key,
                                            digest=entry.digest, size=entry.size)])

    async def _key(self, index: int, cache: CacheSpec) -> str:
        """The cache's key with each ``hashFiles(...)`` replaced by the SHA-256 of those
        workspace files ("" when none matches, as GitHub does)."""
        if index in self._keys:
            return self._keys[index]
        key = cache.key
        for patterns, match in zip(hash_files_patterns(key), list(HASH_FILES.finditer(key)),
                                   strict=True):
            digest, count = await files_digest(self.executor.read_files(self.ctx, patterns))
            key = key.replace(match.group(0), digest if count else "", 1)
        self._keys[index] = key
        return key

    # -- after the steps -------------------------------------------------------------------

    async def keep(self, status: JobStatus) -> str:
        """Reports, artifacts, caches; "" or why the job must error (an artifact lost)."""
        if self.job.reports is not None:
            await read_reports(self.job, self.executor, self.ctx, self.store, self.record,
                               self.sink("reports"))
        artifacts = self.job.artifacts
        if artifacts is not None and _wanted(artifacts.when, status):
            problem = await self._upload(artifacts.name or self.job.name, artifacts.paths)
            if problem:
                return problem
        if status == JobStatus.SUCCESS:
            for index, cache in enumerate(self.job.caches):
                await self._save(index, cache)
        return ""

    async def _upload(self, name: str, paths: Sequence[str]) -> str:
        say = self.sink("artifacts")
        counter = TarCounter()
        try:
            blob = await self.store.put(_progress(
                counter.count(self.executor.read_files(self.ctx, paths)), None, say))
        except CycloneError as exc:
            return f"cannot store artifact {name}: {exc}"
        if not counter.files:
            await say("stderr", utc_now(), f"cyclone: artifact {name}: no file matches "
                      f"{', '.join(paths)}; nothing kept")
            return ""
        await say("stdout", utc_now(), f"cyclone: artifact {name} kept: {counter.files} files, "
                  f"{format_size(blob.size)} ({blob.digest[:19]})")
        await self.record([ev.ArtifactUploaded(job=self.job.name, name=name, digest=blob.digest,
                                               size=blob.size, files=counter.files,
                                               paths=tuple(paths))])
        return ""

    async def _save(self, index: int, cache: CacheSpec) -> None:
        say = self.sink("cache")
        key = await self._key(index, cache)
        if self.caches is None or key in self._restored:
            return
        try:
            if await self.caches.has(self.run.project, key):
                await say("stdout", utc_now(), f"cyclone: cache {key} exists; not saved again")
                return
            counter = TarCounter()
            blob = await self.store.put(_progress(
                counter.count(self.executor.read_files(self.ctx, cache.paths)), None, say))
            if not counter.files:
                await say("stderr", utc_now(), f"cyclone: cache {key}: no file matches "
                          f"{', '.join(cache.paths)}; nothing saved")
                return
            saved = await self.caches.save(self.run.project, key, blob, self.run.id,
                                           self.job.name)
        except CycloneError as exc:
            await say("stderr", utc_now(), f"cyclone: cache {key}: not saved ({exc})")
            return
        if not saved:
            await say("stdout", utc_now(), f"cyclone: cache {key} saved meanwhile by another job")
            return
        await say("stdout", utc_now(), f"cyclone: cache saved: {key} ({counter.files} files, "
                  f"{format_size(blob.size)})")
        await self.record([ev.CacheSaved(job=self.job.name, key=key, digest=blob.digest,
                                         size=blob.size, files=counter.files)])


def _wanted(when: str, status: JobStatus) -> bool:
    if when == "always":
        return True
    return (status == JobStatus.SUCCESS) == (when == "success")


async def _progress(chunks: AsyncIterator[bytes], total: int | None,
                    say: LogSink) -> AsyncIterator[bytes]:
    """``chunks`` passed on, with a log line at each ``PROGRESS_BYTES`` moved."""
    moved = 0
    next_report = PROGRESS_BYTES
    async for chunk in chunks:
        moved += len(chunk)
        if moved >= next_report:
            of = f" of {format_size(total)}" if total else ""
            await say("stdout", utc_now(), f"cyclone: {format_size(moved)}{of} moved")
            next_report += PROGRESS_BYTES
        yield chunk
