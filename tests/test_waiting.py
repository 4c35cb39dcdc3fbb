"""Why a run or a job waits (``shared.projections.waiting``) on plain values: views folded
from hand-made event streams with their own timestamps, no I/O."""

from __future__ import annotations

from shared import events as ev
from shared.events import RecordedEvent, run_stream
from shared.pipeline.plan import JobSpec, Plan, StepSpec
from shared.projections.runs import RunView, fold
from shared.projections.waiting import Wait, WaitKind, why_waiting
from shared.status import JobStatus, Role


def job(name: str, *needs: str) -> JobSpec:
    return JobSpec(name=name, image="img", steps=(StepSpec(name="s", image="img"),),
                   needs=needs)


PLAN = Plan(".cyclone.yml", (job("build"), job("lint"), job("test", "build", "lint"),
                             job("deploy", "test")))


def at(minute: int) -> str:
    return f"2024-05-01T12:{minute:02d}:07.250000+00:00"


def run(run_id: str, *events: ev.Event, project: str = "demo", approval: str = "") -> RunView:
    """The view of a run of ``project`` after its request (at 12:00) and ``events``, the
    n-th of them at 12:0n."""
    requested = ev.RunRequested(project=project, trigger="push", branch="main", commit="c0",
                                pipeline_file=".cyclone.yml", pipeline="", source="git://x",
                                approval=approval)
    recorded = [RecordedEvent(id=f"{run_id}-{n}", stream=run_stream(run_id), seq=n + 1,
                              type=e.TYPE, version=e.VERSION, ts=at(n), data=e.to_data(),
                              meta={}, position=0)
                for n, e in enumerate((requested, *events))]
    view = fold(recorded)
    assert view is not None
    return view


def planned(run_id: str, *events: ev.Event, project: str = "demo") -> RunView:
    """``run`` planned at 12:01, then ``events``."""
    return run(run_id, ev.RunPlanned(plan=PLAN), *events, project=project)


def only(waits: list[Wait]) -> Wait:
    assert len(waits) == 1, waits
    return waits[0]


# --- the run -------------------------------------------------------------------------------


def test_a_forks_pull_request_waits_for_a_maintainer() -> None:
    wait = only(why_waiting(run("r1", approval="pull request #7 from a fork")))
    assert (wait.kind, wait.role, wait.job, wait.since) == (
        WaitKind.APPROVAL, Role.MAINTAINER, "", at(0))
    assert wait.text == ("pull request #7 from a fork: nothing of it runs until a maintainer "
                         "of project 'demo' approves it (or rejects it)")


def test_a_run_waits_for_its_projects_slots_and_says_who_holds_them() -> None:
    holders = [planned("r1"), run("r2", ev.CheckoutQueued())]
    other_project = planned("r0", project="else")
    ended = run("r00", ev.RunCancelled(reason="x"))
    waiting = run("r3")
    wait = only(why_waiting(waiting, [*holders, other_project, ended, waiting],
                            max_concurrent_runs=2))
    assert (wait.kind, wait.on, wait.since) == (WaitKind.SLOTS, ("r1", "r2"), at(0))
    assert wait.text == ("project 'demo' runs at most 2 at once (max_concurrent_runs), and "
                         "runs r1, r2 hold them: it starts when one ends")
    one = only(why_waiting(waiting, holders[:1], max_concurrent_runs=1))
    assert "runs at most 1 at once" in one.text and "run r1 holds it" in one.text


def test_with_a_slot_free_older_runs_go_first() -> None:
    older, newer = run("r2"), run("r3")
    others = [planned("r1"), older, newer, run("r0", approval="a fork")]  # r0: not queued
    wait = only(why_waiting(newer, others, max_concurrent_runs=2))
    assert (wait.kind, wait.on) == (WaitKind.QUEUE, ("r2",))
    assert wait.text == ("run r2 of project 'demo', requested earlier, goes first (1 of its "
                         "2 slots free)")
    first = only(why_waiting(older, others, max_concurrent_runs=2))
    assert first.kind == WaitKind.ADMISSION


def test_a_run_nothing_holds_is_about_to_start() -> None:
    wait = only(why_waiting(run("r1"), [planned("r0")]))  # no limit: others do not matter
    assert wait.kind == WaitKind.ADMISSION
    assert wait.text == ("requested at 12:00 UTC: nothing holds it; the event manager is "
                         "about to start it")


def test_a_run_waits_for_its_checkout_then_its_plan() -> None:
    wait = only(why_waiting(run("r1", ev.CheckoutQueued()), max_concurrent_runs=1))
    assert (wait.kind, wait.since) == (WaitKind.CHECKOUT, at(1))
    assert wait.text.endswith("is with the workers since 12:01 UTC")
    resolved = run("r1", ev.CheckoutQueued(),
                   ev.RunSourceResolved(commit="c1", branch="main",
                                        pipeline_file=".cyclone.yml", pipeline=""))
    assert only(why_waiting(resolved)).kind == WaitKind.PLAN


def test_an_ended_run_waits_for_nothing() -> None:
    assert why_waiting(planned("r1", ev.RunSucceeded())) == []


def test_a_cancelled_run_waits_for_its_running_jobs() -> None:
    unplanned = only(why_waiting(run("r1", ev.RunCancelRequested(reason="x"))))
    assert (unplanned.kind, unplanned.on) == (WaitKind.CANCEL, ())
    view = planned("r1", ev.JobQueued(job="build"),
                   ev.JobStarted(job="build", worker="w", executor="shell"),
                   ev.RunCancelRequested(reason="x"))
    wait = only(why_waiting(view))
    assert (wait.kind, wait.on) == (WaitKind.CANCEL, ("build",))


# --- its jobs ------------------------------------------------------------------------------


def test_each_waiting_job_says_what_it_waits_for() -> None:
    view = planned("r1", ev.JobQueued(job="build"), ev.JobQueued(job="lint"),
                   ev.JobStarted(job="build", worker="w", executor="shell"))
    waits = {w.job: w for w in why_waiting(view, max_parallel_jobs=4)}
    assert set(waits) == {"lint", "test", "deploy"}  # build runs: it waits for nothing
    assert (waits["lint"].kind, waits["lint"].since) == (WaitKind.WORKER, at(3))
    assert waits["lint"].text == "queued for a worker since 12:03 UTC"
    assert (waits["test"].kind, waits["test"].on) == (WaitKind.NEEDS, ("build", "lint"))
    assert waits["test"].text == "needs build (running), lint (queued), not ended yet"
    assert waits["deploy"].on == ("test",)
    assert waits["deploy"].to_json() == {
        "kind": "needs", "text": "needs test (pending), not ended yet", "job": "deploy",
        "since": "", "on": ["test"], "role": "", "deadline": ""}


def test_a_job_waits_for_approval_by_its_role_until_its_deadline() -> None:
    deadline = "2024-05-01T14:00:00+00:00"
    done = [e for name in ("build", "lint", "test") for e in (
        ev.JobQueued(job=name), ev.JobStarted(job=name, worker="w", executor="shell"),
        ev.JobFinished(job=name, status=JobStatus.SUCCESS, duration_s=1.0))]
    view = planned("r1", *done, ev.JobAwaitingApproval(job="deploy", role=Role.DEVELOPER,
                                                       deadline=deadline))
    wait = only(why_waiting(view))
    assert (wait.kind, wait.job, wait.role, wait.deadline) == (
        WaitKind.JOB_APPROVAL, "deploy", "developer", deadline)
    assert wait.text == ("waits for approval: a developer or a maintainer of project 'demo' "
                         "may approve or reject it; rejected unless approved by 2024-05-01 "
                         "14:00 UTC")
    forever = planned("r1", *done, ev.JobAwaitingApproval(job="deploy", role=Role.MAINTAINER))
    assert only(why_waiting(forever)).text == ("waits for approval: a maintainer of project "
                                               "'demo' may approve or reject it")


def test_a_ready_job_waits_for_a_place_among_the_runs_parallel_jobs() -> None:
    view = planned("r1", ev.JobQueued(job="build"),
                   ev.JobStarted(job="build", worker="w", executor="shell"))
    waits = {w.job: w for w in why_waiting(view, max_parallel_jobs=1)}
    assert (waits["lint"].kind, waits["lint"].on) == (WaitKind.PARALLEL, ("build",))
    assert "CYCLONE_MAX_PARALLEL_JOBS=1" in waits["lint"].text
    unknown = {w.job: w for w in why_waiting(view)}  # the limit not known: about to be queued
    assert unknown["lint"].kind == WaitKind.READY


def test_a_job_queued_again_after_its_worker_was_lost_says_so() -> None:
    view = planned("r1", ev.JobQueued(job="build"),
                   ev.JobStarted(job="build", worker="w", executor="shell"),
                   ev.JobQueued(job="build"))
    wait = {w.job: w for w in why_waiting(view)}["build"]
    assert wait.text == ("queued for a worker since 12:04 UTC (again: the worker that had it "
                         "was lost)")


def test_the_times_it_needs_survive_storing_the_view() -> None:
    view = run("r1", ev.CheckoutQueued(), ev.RunSourceResolved(
        commit="c1", branch="main", pipeline_file=".cyclone.yml", pipeline=""),
        ev.RunPlanned(plan=PLAN), ev.JobQueued(job="build"))
    assert (view.checkout_queued_at, view.job("build").queued_at) == (at(1), at(4))  # type: ignore[union-attr]
    assert RunView.from_data(view.to_data()) == view
