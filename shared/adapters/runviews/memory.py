"""Run views in a dict of this process: the embedded default of ``RunViews``.

Implements ``shared.ports.runviews.RunViews``; the port's docstring is the contract.
Nothing is persisted: the embedded mode fills it from the event store at start
(``services.api.readmodel.RunsReadModel.rebuild``). Every method runs without
awaiting, so each is atomic with respect to other tasks of the loop.

``runs`` is the dict itself (run id -> view), for code of this process that reads the
views synchronously (tests, ``/metrics``); write through ``put`` only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from shared.errors import StoreError
from shared.ports.runviews import DEFAULT_PAGE, DurationHistogram, step_durations_of
from shared.projections.runs import RunView

__all__ = ["MemoryRunViews"]


class MemoryRunViews:
    def __init__(self, runs: dict[str, RunView] | None = None) -> None:
        self.runs: dict[str, RunView] = {} if runs is None else runs
        # The runs not ended yet: auto-cancel asks for them on every webhook delivery,
        # so they must not cost a scan of every run the server ever had.
        self._unfinished = {run.id for run in self.runs.values() if not run.done}
        self._closed = False

    async def get(self, run_id: str) -> RunView | None:
        self._check_open()
        return self.runs.get(run_id)

    async def put(self, view: RunView) -> bool:
        self._check_open()
        stored = self.runs.get(view.id)
        if stored is not None and stored.last_seq >= view.last_seq:
            return False
        self.runs[view.id] = view
        if view.done:
            self._unfinished.discard(view.id)
        else:
            self._unfinished.add(view.id)
        return True

    async def page(self, *, project: str = "", status: str = "", branch: str = "",
                   before: str | None = None, limit: int = DEFAULT_PAGE,
                   within: Collection[str] | None = None, trigger: str = "") -> list[RunView]:
        self._check_open()
        if limit < 1:
            return []
        picked = [r for r in self.runs.values()
                  if (before is None or r.id < before)
                  and (not project or r.project == project)
                  and (within is None or r.project in within)
                  and (not status or r.status == status)
                  and (not branch or r.branch == branch)
                  and (not trigger or r.trigger == trigger)]
        picked.sort(key=lambda r: r.id, reverse=True)
        return picked[:limit]

    async def unfinished(self, project: str = "") -> list[RunView]:
        self._check_open()
        runs = (self.runs[run_id] for run_id in self._unfinished)
        return sorted((r for r in runs if not project or r.project == project),
                      key=lambda r: r.id)

    async def counts_by_status(self) -> dict[str, int]:
        self._check_open()
        counts: dict[str, int] = {}
        for run in self.runs.values():
            counts[run.status] = counts.get(run.status, 0) + 1
        return counts

    async def step_durations(self, bounds: Sequence[float]) -> DurationHistogram:
        self._check_open()
        durations = [d for run in self.runs.values() for d in step_durations_of(run)]
        return DurationHistogram.of(bounds, durations)

    async def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("memory run views are closed")

