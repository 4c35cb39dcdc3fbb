"""Executor port: runs a job's steps in isolation on one host (Docker, or the host shell).

Contract, in call order (the workermanager is the only caller):

1. ``prepare_run(ctx)`` once a run reaches this host, before its first job: the
   run's workspace, filled with ``ctx.source_archive`` (a tar stream, e.g. a Git tree
   straight from a mirror) or a copy of what ``ctx.source_dir`` holds for the user: in
   a Git work tree the files Git sees (tracked, and untracked but not ignored), never
   Cyclone's own state (its home may sit inside the directory). Idempotent: a second
   call for the same run changes nothing; a call after a failed one starts over.
2. Per job: ``start_services(ctx, job, on_log)`` starts the job's sidecars on the
   run's private network, reachable by name (a job without services needs no such
   network), then ``run_step(...)`` for each step in order, then
   ``stop_services(ctx, job)`` (also after a failure or cancel). ``start_services``
   needs nothing of ``prepare_run`` for a job without services: the workermanager
   may run the two at once.
3. ``run_step`` runs ``step.commands`` with the workspace as working directory so
   that the first failing command fails the step; streams each output line to
   ``on_log(stream, ts, text)`` as it is written; returns the exit code. It kills
   the step when ``step.timeout_s`` passes (``timed_out=True``) and when its task is
   cancelled (the kill is finished before ``CancelledError`` propagates). A step
   killed at its memory limit (``job.resources``, the effective limits the
   workermanager resolved) ends with ``out_of_memory=True``. An executor that cannot
   isolate (the shell) ignores ``privileged``, ``volumes`` and ``resources``.
   A step with a ``build`` builds an image from the workspace instead (and pushes it
   with ``registries``' credentials when ``build.push``); one with a ``promote`` pulls
   an image, tags it and pushes it again. Both report what they pushed, with its
   digest (``StepOutcome.pushed``); an executor without images (the shell) fails such
   a step with a message saying so. ``registries`` also serve to pull a step's or a
   service's image from a private registry (``start_services`` takes them too).
   (Deploy steps are not the executor's: the workermanager hands them to a
   ``Deployer``.)
   Each step that runs commands gets ``CYCLONE_OUTPUT``: the path of an empty file in
   its own (outside the workspace) it may write ``KEY=value`` lines to; what the
   file holds when the step ends is ``StepOutcome.outputs`` (at most 1 MiB).
4. Workspace files, between ``prepare_run`` and ``destroy_run`` (artifacts, caches and
   test reports): ``read_files(ctx, patterns)`` is an uncompressed tar stream of the
   workspace files the patterns (workspace-relative globs, ``**`` across directories)
   match, a matched directory with everything under it, names relative to the
   workspace; empty (a valid tar) when nothing matches.
   ``write_files(ctx, chunks)`` extracts such a tar stream into the workspace. Both
   stream: neither holds the files in memory.
5. ``destroy_run(run_id)`` removes everything of the run (containers, network,
   workspace). Safe twice, safe after a failed or partial ``prepare_run``.
6. ``leftover_runs()`` lists run ids that still own resources on this host (every
   resource is labelled with its run id), so a restart can reap the ones whose
   run is over.
7. Worker leftovers: an executor opened for a worker labels everything it creates
   with the worker's label too (unique on the host, the same after a restart: the
   worker's id and home). ``leftover_runs(worker=label)`` lists the runs that
   still own resources created for that worker, and ``destroy_run(run_id,
   worker=label)`` removes only those (what a crashed incarnation of it left;
   a run's shared network or workspace still used by another worker's containers,
   on a host several workers share, is left to the run's own ``destroy_run``).
   Safe twice. An executor that cannot tell workers apart (the shell) lists none.

Jobs of different runs, and independent jobs of one run, may run concurrently.
Raises ``ExecutorUnavailable`` when the backend cannot be reached and
``ExecutorError`` when a step cannot be started (bad image, ...).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from shared.pipeline.plan import JobSpec, StepSpec

__all__ = [
    "NO_REGISTRIES",
    "WORKSPACE",
    "Executor",
    "LinesSink",
    "LogSink",
    "PushedImage",
    "Registries",
    "RegistryAuth",
    "RunContext",
    "SourceArchive",
    "StepOutcome",
    "log_lines",
    "one_by_one",
]

WORKSPACE = "/workspace"  # where the workspace is mounted in every step container

# on_log(stream, ts, text): stream is "stdout" or "stderr", ts ISO 8601 UTC, text without "\n"
LogSink = Callable[[str, str, str], Awaitable[None]]


class LinesSink(Protocol):
    """A ``LogSink`` that also takes several lines of one stream and ``ts`` in one call
    (``many``): the lines an executor reads in one chunk. A step printing flat out gives
    thousands of lines per chunk, and a call per line at every hop (limit, masking,
    shipping) was a quarter of the log pipeline's cost."""

    def __call__(self, stream: str, ts: str, text: str) -> Awaitable[None]: ...

    def many(self, stream: str, ts: str, texts: list[str]) -> Awaitable[None]: ...


async def log_lines(sink: LogSink, stream: str, ts: str, texts: list[str]) -> None:
    """``texts`` to ``sink``, in order: in one call if it is a ``LinesSink``."""
    many = getattr(sink, "many", None)
    if many is not None:
        await many(stream, ts, texts)
    else:
        await one_by_one(sink, stream, ts, texts)


async def one_by_one(sink: LogSink, stream: str, ts: str, texts: list[str]) -> None:
    """``texts`` to ``sink`` a line at a time (what a ``LinesSink`` does with lines it
    must look at one by one)."""
    for text in texts:
        await sink(stream, ts, text)

# A fresh tar stream of the run's source at each call (uncompressed; close it when done).
SourceArchive = Callable[[], AsyncGenerator[bytes, None]]


@dataclass(frozen=True)
class RunContext:
    run_id: str
    source_dir: str | None = None  # copied (what the user's files are) by prepare_run
    source_archive: SourceArchive | None = None  # extracted there instead, when given


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry (``RegistryLogin`` with its secret resolved)."""

    username: str
    password: str = field(repr=False)


# Registry (host[:port], as image references name it) -> its credentials.
Registries = Mapping[str, RegistryAuth]
NO_REGISTRIES: Registries = MappingProxyType({})


@dataclass(frozen=True)
class PushedImage:
    """An image a build or promote step pushed: every tag names ``repository``'s digest."""

    name: str  # as in ``${{ images.NAME }}``
    repository: str  # registry/path, without tag
    tags: tuple[str, ...]  # the full references pushed
    digest: str  # sha256:...

    @property
    def reference(self) -> str:
        """``repository@digest``: what later jobs run, whatever the tags point at by then."""
        return f"{self.repository}@{self.digest}"


@dataclass(frozen=True)
class StepOutcome:
    exit_code: int | None  # None when the step never produced one (killed before start)
    timed_out: bool = False
    out_of_memory: bool = False  # killed at its memory limit (an executor that can tell)
    pushed: tuple[PushedImage, ...] = ()  # what a build or promote step pushed
    reason: str = ""  # why it failed, when its exit code does not say (a refused push)
    # What the step wrote to its ``$CYCLONE_OUTPUT`` file (raw, at most 1 MiB); b"": none.
    outputs: bytes = b""


class Executor(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def supports_services(self) -> bool: ...

    async def prepare_run(self, ctx: RunContext) -> None: ...

    async def start_services(self, ctx: RunContext, job: JobSpec, on_log: LogSink, *,
                             registries: Registries = NO_REGISTRIES) -> None: ...

    async def run_step(
        self,
        ctx: RunContext,
        job: JobSpec,
        step: StepSpec,
        env: Mapping[str, str],
        on_log: LogSink,
        registries: Registries = NO_REGISTRIES,
    ) -> StepOutcome: ...

    async def stop_services(self, ctx: RunContext, job: JobSpec) -> None: ...

    def read_files(self, ctx: RunContext, patterns: Sequence[str]) -> AsyncIterator[bytes]: ...

    async def write_files(self, ctx: RunContext, chunks: AsyncIterator[bytes]) -> None: ...

    async def destroy_run(self, run_id: str, worker: str | None = None) -> None: ...

    async def leftover_runs(self, worker: str | None = None) -> set[str]: ...

    async def close(self) -> None: ...
