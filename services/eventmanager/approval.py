"""Jobs that wait for a person: the decision (pure, for ``decide``) and the timer that
rejects a job whose approval did not come in time.

A job with ``approval:`` whose needs are done is not queued: ``JobAwaitingApproval``
records that it waits, for whom (the role) and until when. ``JobApproved`` (the API,
a user with that role) lets ``decide`` queue it; ``JobRejected`` fails it. The
deadline is judged by ``decide`` against the ``now`` it is given; ``ApprovalTimers``
makes sure the event manager looks at the run again when a deadline passes, also
after a restart (``watch`` every run at start) and on any replica (advancing a run is
safe from anywhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from shared import events as ev
from shared.pipeline.duration import format_duration
from shared.pipeline.plan import JobSpec
from shared.projections.runs import JobView, RunView
from shared.retry import is_transient
from shared.status import Role

__all__ = ["ApprovalTimers", "next_deadline", "wait_or_expire"]

log = logging.getLogger(__name__)
RETRY_S = 5.0  # a wake-up that failed (the store away) is tried again after this


def wait_or_expire(spec: JobSpec, job: JobView, now: str) -> list[ev.Event]:
    """What a job that needs approval, and has none yet, calls for at ``now``."""
    assert spec.approval is not None
    if not job.awaiting_approval:
        return [ev.JobAwaitingApproval(job=job.name, role=Role(spec.approval.role),
                                       environment=spec.environment,
                                       deadline=_deadline(now, spec.approval.timeout_s))]
    if job.approval_deadline and now and now >= job.approval_deadline:
        waited = format_duration(spec.approval.timeout_s or 0)
        return [ev.JobRejected(job=job.name, by="", reason=f"no approval within {waited}")]
    return []


def next_deadline(run: RunView) -> str:
    """The earliest deadline among the run's jobs waiting for approval ("": none)."""
    deadlines = [j.approval_deadline for j in run.jobs
                 if j.waiting_for_approval and j.approval_deadline]
    return min(deadlines, default="")


def _deadline(now: str, timeout_s: float | None) -> str:
    if not timeout_s or not now:
        return ""
    return (datetime.fromisoformat(now) + timedelta(seconds=timeout_s)).isoformat(
        timespec="microseconds")


class ApprovalTimers:
    """One timer per run that waits for an approval with a deadline: at the deadline,
    ``advance(run_id)`` (which rejects what expired)."""

    def __init__(self, advance: Callable[[str], Awaitable[object]]) -> None:
        self._advance = advance
        self._timers: dict[str, tuple[str, asyncio.Task[None]]] = {}

    def watch(self, run: RunView) -> None:
        """(Re)arm the run's timer for its next deadline, or drop it when there is none."""
        deadline = "" if run.done else next_deadline(run)
        current = self._timers.get(run.id)
        if current is not None and current[0] == deadline:
            return
        if current is not None:
            del self._timers[run.id]
            if current[1] is not asyncio.current_task():  # a timer's own advance: it ends
                current[1].cancel()
        if deadline:
            task = asyncio.create_task(self._fire(run.id, deadline), name=f"approval-{run.id}")
            self._timers[run.id] = (deadline, task)

    async def _fire(self, run_id: str, deadline: str) -> None:
        delay = (datetime.fromisoformat(deadline) - datetime.now(UTC)).total_seconds()
        await asyncio.sleep(max(0.0, delay) + 0.01)
        while True:
            try:
                await self._advance(run_id)
                return
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("approval deadline not handled", extra={"run": run_id})
                    return
                log.warning("approval deadline: store away, trying again",
                            extra={"run": run_id, "error": str(exc)})
                await asyncio.sleep(RETRY_S)

    async def close(self) -> None:
        timers = [task for _, task in self._timers.values()]
        self._timers.clear()
        for task in timers:
            task.cancel()
        for task in timers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
