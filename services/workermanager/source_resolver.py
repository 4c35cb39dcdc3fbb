"""Resolving a Git run's source, the checkout its ``CheckoutQueued`` asks for.

The requested ref becomes a commit in this worker's Git mirror and the pipeline file
is read at that commit, with the files it includes (``includes``: its own at that
commit, other projects' at their pinned refs) (``RunSourceResolved``), or the run errors
with git's message at the end of its log (``RunErrored``). An include that cannot be
fetched does not end the run here: it is recorded as such, and the planning reports it
at its line with every other problem of the file. What git says meanwhile is the run's
``checkout/clone`` log, shipped to ``cyclone.logs``; the event counts its lines.

The outcome is appended only while the run still waits for its checkout: a run
cancelled meanwhile, or resolved already by an earlier delivery, gets nothing more.
Once resolved, the run's workspace starts filling on this host, as its jobs most
often run here (if they go elsewhere, the run's end removes it all the same).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from services.workermanager.appends import append_retrying
from services.workermanager.checkout import CheckoutError, GitCheckout
from services.workermanager.host import Host
from services.workermanager.includes import GitIncludes, OwnSource, registered_repos
from services.workermanager.logship import LogShipper
from shared import events as ev
from shared.errors import IncludeError
from shared.events import utc_now
from shared.forge import review_ref
from shared.keys import CHECKOUT
from shared.pipeline.include import Fetch, IncludedFile, Key, display
from shared.pipeline.include import resolve as resolve_includes
from shared.ports.bus import Bus
from shared.projections.runs import RunView
from shared.retry import retrying
from shared.runstream import RunStates
from shared.status import CheckoutState

__all__ = ["SourceResolver"]


class SourceResolver:
    def __init__(self, runs: RunStates, bus: Bus, git_cache: Path, host: Host) -> None:
        self.runs = runs
        self.bus = bus
        self.git_cache = git_cache
        self.host = host

    async def resolve(self, run_id: str) -> None:
        """Resolve the run's ref to a commit and read its pipeline file there."""
        run = await retrying(functools.partial(self.runs.load, run_id), "read the run")
        if run is None or run.done or run.checkout != CheckoutState.QUEUED:
            return
        shipper = LogShipper(self.bus, run_id)
        sink = shipper.sink(CHECKOUT, "clone")

        async def on_line(text: str) -> None:
            await sink("stdout", utc_now(), text)

        outcome: ev.Event
        checkout = GitCheckout(self.git_cache, on_line)
        try:
            resolved = await checkout.resolve(
                run.source, ref=run.branch, commit=run.commit,
                pipeline_file=run.pipeline_file, via=review_ref(run.forge_event))
            fetch = GitIncludes(checkout, registered_repos(self.runs.store),
                                OwnSource(run.source, resolved.commit))
            included = await resolve_includes(resolved.pipeline, resolved.pipeline_file,
                                              _logged(fetch, on_line))
        except CheckoutError as exc:
            await on_line(f"error: {exc}")
            await shipper.close()
            outcome = ev.RunErrored(reason=f"checkout failed: {exc}", log_lines=shipper.shipped)
        else:
            await shipper.close()
            outcome = ev.RunSourceResolved(
                commit=resolved.commit, branch=resolved.branch,
                pipeline_file=resolved.pipeline_file, pipeline=resolved.pipeline,
                log_lines=shipper.shipped, includes=tuple(f.to_data() for f in included))
            # Fill the workspace while the run is planned.
            self.host.preparing(replace(run, commit=resolved.commit))

        def record(current: RunView | None) -> list[ev.Event]:
            if current is None or current.done or current.checkout != CheckoutState.QUEUED:
                return []
            return [outcome]

        await append_retrying(self.runs, run_id, record)


def _logged(fetch: Fetch, on_line: Callable[[str], Awaitable[None]]) -> Fetch:
    """``fetch``, saying in the checkout's log what each include was read as."""

    async def logged(key: Key) -> IncludedFile:
        try:
            found = await fetch(key)
        except IncludeError as exc:
            await on_line(f"include {display(key)}: error: {exc}")
            raise
        commit = f" at {found.commit}" if found.commit else ""
        await on_line(f"include {found.display}{commit}: sha256 {found.sha256}")
        return found

    return logged
