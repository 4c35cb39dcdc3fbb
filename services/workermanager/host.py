"""This worker's part of runs on its host: each run's network and workspace, prepared
once per host, and removed when the run ends, however it ends.

* ``prepare(run)`` prepares the run here once and waits for it: the first to ask starts
  the preparation, the others (the run's other jobs, the checkout that began filling
  the workspace) wait for the same one. It returns an error message, or "" when ready.
  ``preparing(run)`` starts it without waiting.
* ``destroy(run_id)`` removes the run's resources once its preparation is over. The
  removal finishes even if its caller is cancelled, and calls made meanwhile wait for
  the same removal; ``finish_teardowns`` waits for every removal in progress.
* ``reap(is_over)`` removes what ended runs left behind (after a crash), and
  ``reap_own(label)`` what an earlier incarnation of this worker left.

One ``Host`` per worker; its methods are called from many tasks of one loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from pathlib import Path

from services.workermanager.checkout import GitCheckout
from shared.errors import ExecutorError
from shared.forge import review_ref
from shared.ports.executor import Executor, RunContext
from shared.projections.runs import RunView

__all__ = ["Host"]

log = logging.getLogger(__name__)


class Host:
    def __init__(self, executor: Executor, git_cache: Path) -> None:
        self.executor = executor
        self.git_cache = git_cache  # this worker's Git mirrors, which workspaces come from
        self._prepared: dict[str, asyncio.Task[None]] = {}  # run id -> prepare_run task
        self._teardowns: dict[str, asyncio.Task[None]] = {}  # run id -> destroy in progress

    def holds(self, run_id: str) -> bool:
        """Whether the run was prepared (or is being prepared) here and not removed yet."""
        return run_id in self._prepared

    async def prepare(self, run: RunView) -> str:
        """Prepare the run on this host once; returns an error message, or "" when ready."""
        try:
            await asyncio.shield(self.preparing(run))
        except Exception as exc:
            log.warning("prepare_run failed", extra={"run": run.id, "error": str(exc)})
            return f"could not prepare the run's workspace: {exc}"
        return ""

    def preparing(self, run: RunView) -> asyncio.Task[None]:
        """The run's preparation on this host, started by the first to ask for it."""
        task = self._prepared.get(run.id)
        if task is None:
            task = asyncio.create_task(self._prepare_run(run))
            self._prepared[run.id] = task
        return task

    async def _prepare_run(self, run: RunView) -> None:
        if run.source_kind != "git":
            # A `cyclone run` copies the directory it was started in (it is on this host).
            source = run.source or None
            await self.executor.prepare_run(RunContext(run_id=run.id, source_dir=source))
            return
        # The commit's tree, streamed from this worker's mirror into the workspace.
        archive = functools.partial(GitCheckout(self.git_cache).archive, run.source, run.commit,
                                    review_ref(run.forge_event))
        await self.executor.prepare_run(RunContext(run_id=run.id, source_archive=archive))

    async def run_ended(self, run_id: str) -> None:
        """The run is over: remove what it has on this host, if anything."""
        if run_id in self._prepared:
            await self.destroy(run_id)

    async def destroy_all(self) -> None:
        """Remove every run prepared here (the worker stops)."""
        for run_id in list(self._prepared):
            await self.destroy(run_id)

    async def finish_teardowns(self) -> None:
        """Wait for the removals in progress (whose callers may have been cancelled)."""
        if self._teardowns:
            await asyncio.gather(*self._teardowns.values(), return_exceptions=True)

    async def destroy(self, run_id: str) -> None:
        """Remove the run's resources; the removal finishes even if our caller is cancelled
        (``finish_teardowns`` waits for it), so a run's end never leaves half its
        containers behind."""
        teardown = self._teardowns.get(run_id)
        if teardown is None:
            teardown = asyncio.create_task(self._teardown(run_id))
            self._teardowns[run_id] = teardown
            teardown.add_done_callback(lambda _: self._teardowns.pop(run_id, None))
        await asyncio.shield(teardown)

    async def _teardown(self, run_id: str) -> None:
        prepare = self._prepared.pop(run_id, None)
        if prepare is not None:
            await asyncio.gather(prepare, return_exceptions=True)
        try:
            await self.executor.destroy_run(run_id)
        except Exception:
            log.exception("could not remove a run's resources", extra={"run": run_id})

    async def reap(self, is_over: Callable[[str], bool]) -> list[str]:
        """Remove what ended runs left on this host (after a crash).

        Only runs ``is_over`` vouches for are touched: the Docker host may be shared
        with other Cyclone installations whose runs this one knows nothing about.
        """
        reaped = []
        for run_id in sorted(await self.executor.leftover_runs()):
            if is_over(run_id) and run_id not in self._prepared:
                await self.destroy(run_id)
                reaped.append(run_id)
        return reaped

    async def reap_own(self, label: str) -> list[str]:
        """Remove what an earlier incarnation of this worker left on its host: what the
        executor labelled with ``label`` (the worker label it was opened with, the same
        across restarts). Call it at start, before the worker takes any job: this
        incarnation has created nothing yet, so all of that is leftover. The runs may
        still go on elsewhere: only this worker's part of each is removed. Returns the
        run ids."""
        runs = sorted(await self.executor.leftover_runs(worker=label))
        reaped = []
        for run_id in runs:
            try:
                await self.executor.destroy_run(run_id, worker=label)
            except ExecutorError as exc:
                log.warning("could not remove a run's leftovers: %s", exc, extra={"run": run_id})
                continue
            reaped.append(run_id)
        if reaped:
            log.warning("removed what an earlier run of this worker left behind",
                        extra={"worker": label, "runs": reaped})
        return reaped
