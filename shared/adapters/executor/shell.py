"""Shell executor: steps run as ``/bin/sh -c <script>`` on this host, in a per-run directory.

The fallback for a machine without a reachable Docker daemon. There is no isolation:
steps see the host's files and tools; ``step.image`` is ignored (said once per run in
a warning); services and image builds cannot run and fail the job with a clear
``ExecutorError``.

Layout: ``<root>/<run id>/workspace`` is the workspace. ``prepare_run`` extracts the
source archive, or the tar of what of the source directory belongs in a workspace
(``source``; never the root itself, nor the ``keep_out`` directories), into
``workspace.partial`` (``tar -x``, fed as it streams) and renames it when complete, so
the workspace's presence marks a finished preparation (a second call changes nothing;
a call after a failed one starts over).

Each step runs in a new session (its own process group) with only ``PATH`` and ``HOME``
from the host's environment, plus the step's env and ``CYCLONE_WORKSPACE``. When the
shell exits, whatever it left running in its group is killed, as a container's end
would. On timeout or cancel the group gets SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import stat
import sys
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from shared.adapters.executor.script import (
    SourceClock,
    StepOutput,
    check_run_id,
    finish_shielded,
    read_to_end,
    step_script,
)
from shared.adapters.executor.source import CHUNK, directory_archive
from shared.adapters.executor.workspace_files import OUTPUT_LIMIT, bases, select
from shared.errors import ExecutorError
from shared.events import utc_now
from shared.pipeline.plan import JobSpec, StepSpec
from shared.ports.executor import NO_REGISTRIES, LogSink, Registries, RunContext, StepOutcome

__all__ = ["ShellExecutor"]

log = logging.getLogger(__name__)

TERM_GRACE_S = 2.0  # between SIGTERM and SIGKILL
OUTPUT_STALL_S = 5.0  # a pipe still open and silent this long after the group is killed
_HOST_ENV = ("PATH", "HOME")


class ShellExecutor:
    """The host-shell implementation of ``shared.ports.executor.Executor``."""

    def __init__(self, root: Path, keep_out: Collection[Path] = ()) -> None:
        """``root``: where the runs' directories are made. ``keep_out``: Cyclone's own
        directories (its home), never copied into a workspace; nor is ``root``."""
        self.root = root
        self._keep_out = (root, *keep_out)
        self._warned_image: set[str] = set()
        self._running: dict[str, set[asyncio.subprocess.Process]] = {}
        self._prepare_locks: dict[str, asyncio.Lock] = {}

    @property
    def name(self) -> str:
        return "shell"

    @property
    def supports_services(self) -> bool:
        return False

    def workspace(self, run_id: str) -> Path:
        return self.root / check_run_id(run_id) / "workspace"

    async def prepare_run(self, ctx: RunContext) -> None:
        workspace = self.workspace(ctx.run_id)
        async with self._prepare_locks.setdefault(ctx.run_id, asyncio.Lock()):
            if workspace.is_dir():
                return
            partial = await asyncio.to_thread(_partial, workspace)
            if ctx.source_archive is not None:
                async with contextlib.aclosing(ctx.source_archive()) as chunks:
                    await _extract(chunks, partial)
            elif ctx.source_dir is not None:
                async with directory_archive(Path(ctx.source_dir), self._keep_out) as chunks:
                    await _extract(chunks, partial)
            await asyncio.to_thread(partial.rename, workspace)

    async def start_services(self, ctx: RunContext, job: JobSpec, on_log: LogSink, *,
                             registries: Registries = NO_REGISTRIES) -> None:
        if job.services:
            names = ", ".join(service.name for service in job.services)
            raise ExecutorError(
                f"the shell executor cannot run services (job {job.name} needs: {names}); "
                "start a Docker daemon to run this job")

    async def stop_services(self, ctx: RunContext, job: JobSpec) -> None:
        return None

    async def run_step(self, ctx: RunContext, job: JobSpec, step: StepSpec,
                       env: Mapping[str, str], on_log: LogSink,
                       registries: Registries = NO_REGISTRIES) -> StepOutcome:
        workspace = self.workspace(ctx.run_id)
        if step.build is not None or step.promote is not None:
            what = "build" if step.build is not None else "promote"
            raise ExecutorError(f"the shell executor cannot {what} images (step {step.name!r} "
                                f"of job {job.name!r}); start a Docker daemon to {what}")
        if not workspace.is_dir():
            raise ExecutorError(f"run {ctx.run_id} is not prepared on this host")
        self._warn_image_ignored(ctx.run_id, step)
        full_env = {k: os.environ[k] for k in _HOST_ENV if k in os.environ}
        full_env.update(env)
        full_env["CYCLONE_WORKSPACE"] = str(workspace)
        output = await asyncio.to_thread(_output_file, workspace.parent / "out")
        full_env["CYCLONE_OUTPUT"] = str(output)
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", step_script(step.commands), cwd=workspace, env=full_env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        running = self._running.setdefault(ctx.run_id, set())
        running.add(proc)
        try:
            outcome = await _supervise(proc, step.timeout_s, StepOutput(on_log))
        finally:
            running.discard(proc)
            # also on cancel: the process group is gone before CancelledError goes on
            await finish_shielded(_terminate(proc))
        written = await asyncio.to_thread(_read_output, output)
        return dataclasses.replace(outcome, outputs=written)

    async def read_files(self, ctx: RunContext, patterns: Sequence[str],
                         ) -> AsyncGenerator[bytes, None]:
        workspace = self.workspace(ctx.run_id)
        async with contextlib.aclosing(select(_tar_sources(workspace, patterns),
                                              patterns)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def write_files(self, ctx: RunContext, chunks: AsyncIterator[bytes]) -> None:
        workspace = self.workspace(ctx.run_id)
        if not workspace.is_dir():
            raise ExecutorError(f"run {ctx.run_id} is not prepared on this host")
        await _extract(chunks, workspace)

    async def destroy_run(self, run_id: str, worker: str | None = None) -> None:
        check_run_id(run_id)
        if worker is not None:
            return  # nothing here is labelled with a worker (see leftover_runs)
        for proc in self._running.pop(run_id, set()):
            await _terminate(proc)
        self._warned_image.discard(run_id)
        self._prepare_locks.pop(run_id, None)
        run_dir = self.root / run_id
        if run_dir.exists():
            await asyncio.to_thread(_remove_tree, run_dir)

    async def leftover_runs(self, worker: str | None = None) -> set[str]:
        """Run directories under the root. A worker's leftovers are not told apart (a
        shell worker's root is its own home): asked for ``worker``'s, this says none."""
        if worker is not None or not self.root.is_dir():
            return set()
        return {entry.name for entry in self.root.iterdir() if entry.is_dir()}

    async def close(self) -> None:
        for run_id in list(self._running):
            for proc in self._running.pop(run_id):
                await _terminate(proc)

    def _warn_image_ignored(self, run_id: str, step: StepSpec) -> None:
        if run_id not in self._warned_image:
            self._warned_image.add(run_id)
            log.warning("the shell executor ignores step images: steps run on the host shell, "
                        "without isolation", extra={"run": run_id, "image": step.image})


async def _supervise(proc: asyncio.subprocess.Process, timeout_s: float | None,
                     output: StepOutput) -> StepOutcome:
    assert proc.stdout is not None and proc.stderr is not None
    clocks = [SourceClock(), SourceClock()]
    readers = [asyncio.create_task(_pump(proc.stdout, "stdout", output, clocks[0])),
               asyncio.create_task(_pump(proc.stderr, "stderr", output, clocks[1]))]
    timed_out = False
    try:
        try:
            async with asyncio.timeout(timeout_s):
                await proc.wait()
        except TimeoutError:
            timed_out = True
        await _terminate(proc)  # what the shell left behind ends with it
        problem = await read_to_end(readers, clocks, OUTPUT_STALL_S)
        if problem:
            await output.flush()
            await output.feed("stderr", utc_now(),
                              f"cyclone: {problem}; the rest of it is lost\n".encode())
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    await output.flush()
    code = proc.returncode
    if timed_out or code is None:
        return StepOutcome(exit_code=None, timed_out=timed_out)
    return StepOutcome(exit_code=128 - code if code < 0 else code)  # killed by N: 128+N


async def _pump(pipe: asyncio.StreamReader, stream: str, output: StepOutput,
                clock: SourceClock) -> None:
    while True:
        with clock.waiting():
            chunk = await pipe.read(64 * 1024)
        if not chunk:
            return
        await output.feed(stream, utc_now(), chunk)


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the step's process group, SIGKILL it after a grace period if the shell
    is still there; then SIGKILL whatever else is left in the group."""
    if proc.returncode is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(TERM_GRACE_S):
                await proc.wait()
        except TimeoutError:
            pass
    _signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _extract(chunks: AsyncIterator[bytes], into: Path) -> None:
    """Extract a tar stream into the directory ``into`` with ``tar -x``, as it comes."""
    proc = await asyncio.create_subprocess_exec(
        "tar", "-x", "-f", "-", "-C", str(into), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    try:
        async for chunk in chunks:
            proc.stdin.write(chunk)
            await proc.stdin.drain()
        proc.stdin.close()
        _, stderr = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise ExecutorError(f"cannot extract the source into {into}: "
                            f"{stderr.decode(errors='replace').strip()}")


def _output_file(directory: Path) -> Path:
    """A new empty ``$CYCLONE_OUTPUT`` file for one step process (beside the workspace,
    never in it)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / uuid.uuid4().hex
    path.touch()
    return path


def _read_output(path: Path) -> bytes:
    """What the step wrote there (at most ``OUTPUT_LIMIT``); the file goes."""
    try:
        with path.open("rb") as handle:
            return handle.read(OUTPUT_LIMIT)
    except OSError:
        return b""  # the step removed it (or the directory): it wrote nothing we can read
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


async def _tar_sources(workspace: Path, patterns: Sequence[str],
                       ) -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
    """For ``workspace_files.select``: ``tar -c`` of each base the patterns need."""
    for base in bases(patterns):
        if base and not (workspace / base).exists():
            continue
        yield "", _tar_create(workspace, base or ".")


async def _tar_create(directory: Path, path: str) -> AsyncIterator[bytes]:
    proc = await asyncio.create_subprocess_exec(
        "tar", "-c", "-f", "-", "-C", str(directory), "--", path,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        while chunk := await proc.stdout.read(CHUNK):
            yield chunk
        stderr = await proc.stderr.read()
        if await proc.wait() not in (0, 1):  # 1: a file changed while read (GNU tar)
            raise ExecutorError(f"cannot read {path} from the workspace: "
                                f"{stderr.decode(errors='replace').strip()}")
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _partial(workspace: Path) -> Path:
    """An empty ``workspace.partial`` to build the workspace in (renamed when complete)."""
    partial = workspace.with_name(workspace.name + ".partial")
    if partial.exists():
        _remove_tree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.mkdir()
    return partial


def _remove_tree(path: Path) -> None:
    """``shutil.rmtree`` that also removes what a step made read-only."""
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=_make_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=_make_writable_and_retry)


def _make_writable_and_retry(func: Callable[..., Any], path: str, _exc: Any) -> None:
    parent = os.path.dirname(path)
    with contextlib.suppress(OSError):
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR)
    func(path)
