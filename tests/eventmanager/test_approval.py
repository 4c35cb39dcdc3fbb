"""Jobs that wait for approval, in the run state machine (``decide`` with a given ``now``)
and its timer (``ApprovalTimers``, with a real event loop)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

from services.eventmanager.approval import ApprovalTimers, next_deadline
from services.eventmanager.decide import decide
from shared import events as ev
from shared.pipeline.plan import ApprovalSpec
from shared.status import JobStatus, Role, RunStatus
from tests.support import eventually
from tests.test_decide import History, job

NOW = "2026-12-04T10:00:00.000000+00:00"
LATER = "2026-12-04T11:00:00.000001+00:00"


def gated(name: str, *needs: str, timeout_s: float | None = 3600.0) -> History:
    spec = dataclasses.replace(job(name, *needs), environment="production",
                               approval=ApprovalSpec(role="maintainer", timeout_s=timeout_s))
    return History(job("test"), spec)


def step(h: History, now: str = NOW) -> list[ev.Event]:
    events = decide(h.run, (".cyclone.yml", ""), 10, now=now)
    h.add(*events)
    return events


def test_a_job_with_approval_waits_once_its_needs_are_done_then_runs_when_approved() -> None:
    h = gated("deploy", "test")
    assert step(h) == [ev.JobQueued(job="test")]
    h.finish("test", JobStatus.SUCCESS)
    assert step(h) == [ev.JobAwaitingApproval(job="deploy", role=Role.MAINTAINER,
                                              environment="production",
                                              deadline="2026-12-04T11:00:00.000000+00:00")]
    view = h.run.job("deploy")
    assert view is not None and view.waiting_for_approval and view.status == JobStatus.PENDING
    assert step(h) == []  # it waits: nothing more, however often the run is looked at
    h.add(ev.JobApproved(job="deploy", by="alice"))
    assert step(h) == [ev.JobQueued(job="deploy")]
    view = h.run.job("deploy")
    assert view is not None and view.approved_by == "alice" and not view.awaiting_approval


def test_a_rejected_job_fails_the_run_saying_who_rejected_it() -> None:
    h = gated("deploy", "test")
    step(h)
    h.finish("test", JobStatus.SUCCESS)
    step(h)
    h.add(ev.JobRejected(job="deploy", by="bob", reason="not on a Friday"))
    assert step(h) == [ev.RunFailed(reason="job failed: deploy")]
    view = h.run.job("deploy")
    assert view is not None and view.status == JobStatus.FAILURE
    assert view.reason == "rejected by bob: not on a Friday"


def test_past_its_deadline_the_wait_ends_rejected() -> None:
    h = gated("deploy", "test")
    step(h)
    h.finish("test", JobStatus.SUCCESS)
    step(h)
    assert step(h, now="2026-12-04T10:59:59.000000+00:00") == []
    assert step(h, now=LATER) == [ev.JobRejected(job="deploy", by="",
                                                 reason="no approval within 1h"),
                                  ev.RunFailed(reason="job failed: deploy")]
    view = h.run.job("deploy")
    assert view is not None and view.reason == "rejected: no approval within 1h"


def test_without_a_timeout_it_waits_as_long_as_it_takes_and_a_cancel_ends_it() -> None:
    h = gated("deploy", "test", timeout_s=None)
    step(h)
    h.finish("test", JobStatus.SUCCESS)
    step(h)
    assert step(h, now="2099-01-01T00:00:00.000000+00:00") == []
    assert next_deadline(h.run) == ""
    h.add(ev.RunCancelRequested(reason="no"))
    assert step(h) == [ev.JobSkipped(job="deploy", reason="run cancelled"),
                       ev.RunCancelled(reason="cancelled")]


async def test_the_timer_looks_at_the_run_again_when_its_deadline_passes() -> None:
    h = gated("deploy", "test", timeout_s=0.3)
    step(h)
    h.finish("test", JobStatus.SUCCESS)
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    step(h, now=now)
    advanced: list[str] = []

    async def advance(run_id: str) -> None:
        advanced.append(run_id)
        step(h, now=datetime.now(UTC).isoformat(timespec="microseconds"))
        timers.watch(h.run)

    timers = ApprovalTimers(advance)
    timers.watch(h.run)
    assert datetime.fromisoformat(next_deadline(h.run)) > datetime.fromisoformat(now)
    await eventually(lambda: h.run.status == RunStatus.FAILURE)
    assert advanced == [h.run.id]
    await timers.close()


async def test_a_timer_is_dropped_when_the_job_is_approved_first() -> None:
    h = gated("deploy", "test", timeout_s=3600)
    step(h)
    h.finish("test", JobStatus.SUCCESS)
    step(h, now=(datetime.now(UTC) - timedelta(minutes=1)).isoformat(timespec="microseconds"))
    fired: list[str] = []

    async def advance(run_id: str) -> None:
        fired.append(run_id)

    timers = ApprovalTimers(advance)
    timers.watch(h.run)
    h.add(ev.JobApproved(job="deploy", by="alice"))
    timers.watch(h.run)  # no deadline left: the timer goes
    await asyncio.sleep(0)
    assert fired == [] and not timers._timers
    await timers.close()
