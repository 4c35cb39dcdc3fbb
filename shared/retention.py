"""Retention: which runs' logs and artifacts are collected, and which blobs may go.

A project's ``retention: {days: N, runs: N, failed_days: N}`` (``Retention``). A run's
logs, artifacts and test report blobs are kept while any rule that is set keeps it:

* ``runs``: it is one of the project's ``runs`` newest runs (every status counts);
* ``days``: it ended less than ``days`` days ago; a failed or errored run is kept
  ``failed_days`` instead (absent: twice ``days``, failures being what people dig into).

A rule that is 0 or absent is not set; a run no rule applies to is kept forever (so a
project without ``retention`` keeps everything). A run that has not ended is never
collected, nor one already collected. Its events are always kept; what was collected is
recorded in its stream (``RunDataCollected``).

Blobs are content addressed, so one may be named by several things. ``garbage`` is the
blobs named by something collected (a collected run, a cache entry's save) that nothing
live names (a run not collected, a live cache entry of any project). A blob nothing ever
named in an event (an upload whose event is not written yet, or never will be) is never
garbage: the collector only deletes what the events say it may.

Pure functions over plain values: ``shared.collector`` does the reading and deleting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.projections.runs import RunView
from shared.status import RunStatus

__all__ = ["FAILED", "Due", "Retention", "RunRecord", "due", "garbage", "rules_text"]

FAILED = frozenset({RunStatus.FAILURE, RunStatus.ERRORED})


@dataclass(frozen=True)
class Retention:
    days: int = 0  # 0: no age rule
    runs: int = 0  # 0: no count rule
    failed_days: int | None = None  # None: twice ``days``; 0: no age rule for failures

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Retention:
        data = data or {}
        failed = data.get("failed_days")
        return cls(days=int(data.get("days") or 0), runs=int(data.get("runs") or 0),
                   failed_days=None if failed is None else int(failed))

    def to_data(self) -> dict[str, int]:
        """The rules that are set, as the project's events record them ({}: none)."""
        data = {"days": self.days, "runs": self.runs}
        data = {k: v for k, v in data.items() if v}
        if self.failed_days is not None:
            data["failed_days"] = self.failed_days
        return data

    def age_limit(self, failed: bool) -> int:
        """Days a run is kept after it ended (0: no age rule for it)."""
        if failed and self.failed_days is not None:
            return self.failed_days
        return self.days * 2 if failed else self.days

    @property
    def keeps_everything(self) -> bool:
        return not (self.runs or self.age_limit(False) or self.age_limit(True))


@dataclass(frozen=True)
class RunRecord:
    """What retention needs of a run (a ``RunView`` is far bigger than this)."""

    id: str
    project: str
    status: RunStatus
    ended_at: str  # "" while it runs
    digests: frozenset[str]  # the blobs it names: artifacts (its own, reused), test results
    collected: bool  # retention removed its data already

    @classmethod
    def of(cls, view: RunView) -> RunRecord:
        digests = {a.digest for a in view.artifacts}
        digests |= {r.results_digest for r in view.test_reports if r.results_digest}
        return cls(id=view.id, project=view.project, status=view.status,
                   ended_at=(view.finished_at or view.created_at) if view.done else "",
                   digests=frozenset(digests), collected=bool(view.collected))


@dataclass(frozen=True)
class Due:
    """A run to collect, and the project's rule that says so (``RunDataCollected.reason``)."""

    run: RunRecord
    reason: str


def due(runs: Iterable[RunRecord], rule: Retention, now: datetime) -> list[Due]:
    """The runs of one project whose data ``rule`` no longer keeps, oldest first."""
    newest_first = sorted(runs, key=lambda r: r.id, reverse=True)  # ids sort by creation
    found = []
    for position, run in enumerate(newest_first):
        if not run.ended_at or run.collected:
            continue
        reason = _past(rule, position, run, now)
        if reason:
            found.append(Due(run, reason))
    return found[::-1]


def _past(rule: Retention, position: int, run: RunRecord, now: datetime) -> str:
    """Why no rule keeps the run ("": one does, or none applies to it)."""
    failed = run.status in FAILED
    days = rule.age_limit(failed)
    if not rule.runs and not days:
        return ""
    if rule.runs and position < rule.runs:
        return ""
    if days and now - datetime.fromisoformat(run.ended_at) < timedelta(days=days):
        return ""
    past = [f"older than {days} days{' (failed runs)' if failed else ''}"] if days else []
    if rule.runs:
        past.append(f"not among the project's last {rule.runs} runs")
    return "retention: " + " and ".join(past)


def garbage(runs: Iterable[RunRecord], collecting: Iterable[str],
            live_cache: Iterable[str], saved_cache: Iterable[str],
            stored: Iterable[str]) -> set[str]:
    """The ``stored`` digests to delete: named by a run that is collected (or in
    ``collecting``) or by a cache save (``saved_cache``), and by nothing live: a run not
    collected, a live cache entry (``live_cache``)."""
    going = set(collecting)
    named, live = set(saved_cache), set(live_cache)
    for run in runs:
        (named if run.collected or run.id in going else live).update(run.digests)
    return (named & set(stored)) - live


def rules_text(rule: Retention) -> str:
    """The rule in words (``cyclone project show``)."""
    if rule.keeps_everything:
        return "kept forever"
    parts = [f"the last {rule.runs} runs"] if rule.runs else []
    if rule.days:
        parts.append(f"{rule.days} days")
    failed = rule.age_limit(True)
    if failed != rule.days:
        parts.append(f"failed runs {failed} days" if failed else "failed runs: no age limit")
    return " or ".join(parts)
