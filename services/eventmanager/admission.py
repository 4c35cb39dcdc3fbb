"""Per-project concurrency: a project's runs beyond its ``max_concurrent_runs`` wait,
and are admitted as earlier ones end, oldest first among the waiting runs the event
manager has seen (runs requested at the same moment may be seen in either order).

A run is admitted once it has started work (its checkout queued or its plan made);
from then on it counts against the limit until it ends. The index is rebuilt from
the store when the event manager starts, so a restart forgets nothing.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable

from shared.projections.runs import RunView

__all__ = ["Admissions"]


def _started(run: RunView) -> bool:
    return bool(run.checkout) or run.plan is not None


class Admissions:
    def __init__(self) -> None:
        self._active: defaultdict[str, set[str]] = defaultdict(set)
        self._waiting: defaultdict[str, list[str]] = defaultdict(list)  # run ids, oldest first

    def load(self, runs: Iterable[RunView]) -> None:
        for run in runs:
            if not run.done and _started(run):
                self._active[run.project].add(run.id)

    def admit(self, run: RunView, limit: int) -> bool:
        """Whether the run may start now (always, once it has started)."""
        active, waiting = self._active[run.project], self._waiting[run.project]
        if run.done:
            return False
        if _started(run) or limit <= 0:
            active.add(run.id)
            return True
        if run.id not in waiting:
            bisect.insort(waiting, run.id)  # run ids sort by creation time
        if len(active) < limit and waiting[0] == run.id:
            waiting.pop(0)
            active.add(run.id)
            return True
        return False

    def ended(self, run: RunView) -> list[str]:
        """Forget an ended run; returns the runs of its project that may now be admitted."""
        self._active[run.project].discard(run.id)
        waiting = self._waiting[run.project]
        if run.id in waiting:
            waiting.remove(run.id)
        return list(waiting)
