"""Run views port: the persisted read model of runs (``shared.projections.runs.RunView``).

A projection writes views (fold the run's events, ``put`` the result); the API reads
them. Several writers may share one store (api replicas of one consumer group, each
applying the events of its partitions, a rebalance handing a partition over while
the old owner still finishes a message), so the store itself orders the writes.

Contract (every adapter; ``tests/contracts/runviews.py`` checks it):

* ``put(view)`` stores ``view`` only if it is newer than the stored view of that run,
  i.e. its ``last_seq`` is higher (or none is stored), and says whether it did. Putting
  the same view twice, or an older one after a newer one, changes nothing: a
  redelivered or reordered event cannot move a view back. Views are folded by a pure
  function, so two writers that put the same ``last_seq`` put equal views. Durable
  once it returns.
* ``get(run_id)`` is the stored view, equal (``==``) to the one put, or None.
* ``page(...)`` is a page of views, newest first: sorted by run id descending (run ids
  sort by creation time), filtered by ``project``, ``status`` and ``branch`` when
  given (``""``: any), only ids below ``before`` when it is not None (the cursor: the
  last id of the previous page), at most ``limit`` views (none if ``limit < 1``).
* ``unfinished(project)`` is every view whose run has not ended (``RunView.done`` is
  false), of ``project`` (``""``: of every project), sorted by run id.
* ``counts_by_status()`` is the number of views per status (statuses with no view are
  left out); ``step_durations(bounds)`` the histogram of the ``duration_s`` of every
  step of every view that has one.
* Calls may run concurrently. ``close()`` is idempotent; any other call after it
  raises ``StoreError``. Every failure is a ``StoreError``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.projections.runs import RunView

__all__ = ["DEFAULT_PAGE", "DurationHistogram", "RunViews", "step_durations_of"]

DEFAULT_PAGE = 50


@dataclass(frozen=True)
class DurationHistogram:
    """``le[i]``: how many durations are ``<= bounds[i]``; ``count`` and ``total``: of all."""

    bounds: tuple[float, ...]
    le: tuple[int, ...]
    count: int
    total: float

    @classmethod
    def of(cls, bounds: Sequence[float], durations: Sequence[float]) -> DurationHistogram:
        """The histogram of ``durations`` (the reference every adapter must equal)."""
        return cls(bounds=tuple(bounds),
                   le=tuple(sum(1 for d in durations if d <= b) for b in bounds),
                   count=len(durations), total=float(sum(durations)))


def step_durations_of(view: RunView) -> list[float]:
    """The ``duration_s`` of every step of ``view`` that has one (what the histogram counts)."""
    return [s.duration_s for j in view.jobs for s in j.steps if s.duration_s is not None]


class RunViews(Protocol):
    async def get(self, run_id: str) -> RunView | None: ...

    async def put(self, view: RunView) -> bool: ...

    async def page(self, *, project: str = "", status: str = "", branch: str = "",
                   before: str | None = None, limit: int = DEFAULT_PAGE,
                   within: Collection[str] | None = None, trigger: str = "") -> list[RunView]:
        """Newest first (by id, before ``before``), filtered by the fields given (``trigger``:
        what started it, e.g. push, pull_request, schedule); only runs of the projects
        ``within`` (None: of any)."""
        ...

    async def unfinished(self, project: str = "") -> list[RunView]: ...

    async def counts_by_status(self) -> dict[str, int]: ...

    async def step_durations(self, bounds: Sequence[float]) -> DurationHistogram: ...

    async def close(self) -> None: ...
