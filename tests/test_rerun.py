"""Reruns of what failed on plain values: which jobs a rerun reuses (``shared.rerun``), what
it takes from the earlier run, and how the state machine plans a run that reuses jobs."""

from __future__ import annotations

import pytest

from services.eventmanager.decide import decide
from shared import events as ev
from shared.events import NewEvent, RecordedEvent, run_stream
from shared.pipeline.plan import When
from shared.projections.runs import RunView, apply_event, fold
from shared.rerun import (
    ArtifactsCollected,
    NoPlan,
    NothingToRerun,
    RunNotEnded,
    UnknownJob,
    jobs_to_reuse,
    reused_jobs,
)
from shared.status import JobStatus, StepStatus
from tests.test_decide import History, job

OK, FAILED = JobStatus.SUCCESS, JobStatus.FAILURE


def ended(h: History, *outcomes: tuple[str, JobStatus]) -> RunView:
    """The run after each job ran to its outcome, in order, and the run ended as decided
    (jobs skipped on the way included)."""
    for name, status in outcomes:
        h.add(ev.JobQueued(job=name)).finish(name, status)
        h.add(*h.decide())
    assert h.run.done, h.run.status
    return h.run


def fan_out(c: JobStatus = FAILED) -> RunView:
    """a -> b, a -> c, c ending as ``c``."""
    return ended(History(job("a"), job("b", "a"), job("c", "a")), ("a", OK), ("b", OK),
                 ("c", c))


# --- which jobs are reused ---------------------------------------------------------------


def test_failed_reruns_the_failed_job_and_reuses_the_others() -> None:
    assert jobs_to_reuse(fan_out(), failed=True) == ("a", "b")


def test_failed_reruns_everything_downstream_of_a_failure_skipped_or_not() -> None:
    # d needs c (failed: d was skipped) and b; e needs d; f only needs a.
    h = History(job("a"), job("b", "a"), job("c", "a"), job("d", "b", "c"), job("e", "d"),
                job("f", "a"))
    run = ended(h, ("a", OK), ("b", OK), ("c", FAILED), ("f", OK))
    assert run.job("d").status == JobStatus.SKIPPED  # type: ignore[union-attr]
    assert jobs_to_reuse(run, failed=True) == ("a", "b", "f")


def test_a_job_that_ran_because_something_failed_runs_again_with_it() -> None:
    on_failure = When(status=("failure",))
    run = ended(History(job("a"), job("cleanup", "a", when=on_failure)), ("a", FAILED),
                ("cleanup", OK))
    assert jobs_to_reuse(run, failed=True) == ()


def test_a_job_its_when_skipped_is_reused_but_one_that_never_ran_is_not() -> None:
    only_release = When(branches=("release/*",))
    h = History(job("a"), job("deploy", "a", when=only_release), job("late", "a"), job("x"))
    h.add(ev.JobQueued(job="a"), ev.JobQueued(job="x")).finish("a", OK)
    h.add(*h.decide())  # deploy skipped by its when, late queued
    h.add(ev.JobStarted(job="late", worker="w", executor="shell"), ev.RunCancelRequested())
    h.add(*h.decide())  # x (queued, never started) skipped by the cancel
    h.add(ev.JobFinished(job="late", status=JobStatus.CANCELLED, duration_s=1.0))
    h.add(*h.decide())
    run = h.run
    assert run.status == "cancelled"
    assert jobs_to_reuse(run, failed=True) == ("a", "deploy")


def test_from_job_reruns_it_and_what_is_downstream() -> None:
    run = fan_out(c=OK)
    assert jobs_to_reuse(run, from_job="a") == ()
    assert jobs_to_reuse(run, from_job="c") == ("a", "b")


def test_from_a_matrix_job_reruns_every_expansion_of_it() -> None:
    h = History(job("build"), job("test (py=3.11)", "build"), job("test (py=3.12)", "build"),
                job("testing", "build"))
    run = ended(h, ("build", OK), ("test (py=3.11)", OK), ("test (py=3.12)", FAILED),
                ("testing", OK))
    assert jobs_to_reuse(run, from_job="test") == ("build", "testing")
    assert jobs_to_reuse(run, from_job="test (py=3.12)") == ("build", "test (py=3.11)",
                                                              "testing")


def test_what_cannot_be_rerun_says_why() -> None:
    with pytest.raises(NothingToRerun, match="no job of run 'r1' failed"):
        jobs_to_reuse(fan_out(c=OK), failed=True)
    with pytest.raises(UnknownJob, match=r"no job 'nope'.*a, b, c"):
        jobs_to_reuse(fan_out(), from_job="nope")
    running = History(job("a"))
    with pytest.raises(RunNotEnded, match="has not ended"):
        jobs_to_reuse(running.add(ev.JobQueued(job="a")).run, failed=True)
    unplanned = History(job("a"))
    unplanned.events = unplanned.events[:1]
    unplanned.add(ev.RunErrored(reason="invalid pipeline"))
    with pytest.raises(NoPlan, match="ended before its pipeline was planned"):
        jobs_to_reuse(unplanned.run, failed=True)


def test_a_job_whose_artifacts_retention_removed_cannot_be_reused() -> None:
    h = History(job("a"), job("b", "a"))
    h.add(ev.JobQueued(job="a"), ev.ArtifactUploaded(job="a", name="dist", digest="d1",
                                                     size=3, files=1)).finish("a", OK)
    run = ended(h, ("b", FAILED))
    h.add(ev.RunDataCollected(what=("artifacts",), reason="kept 1 day"))
    assert jobs_to_reuse(run, failed=True) == ("a",)
    with pytest.raises(ArtifactsCollected, match="jobs a cannot be reused"):
        jobs_to_reuse(h.run, failed=True)


# --- what is taken from the earlier run --------------------------------------------------


def test_a_reused_job_keeps_its_status_outputs_and_artifacts() -> None:
    h = History(job("a"), job("b", "a"))
    h.add(ev.JobQueued(job="a"), ev.StepOutputs(job="a", step="s", outputs={"v": "1.2"}),
          ev.ArtifactUploaded(job="a", name="dist", digest="d1", size=3, files=1,
                              paths=("dist/**",))).finish("a", OK)
    earlier = ended(h, ("b", FAILED))
    assert reused_jobs(earlier, ["a", "b", "zz"]) == [ev.JobReused(
        job="a", from_run="r1", status=OK, outputs={"v": "1.2"},
        artifacts=(ev.ArtifactUploaded(job="a", name="dist", digest="d1", size=3, files=1,
                                       paths=("dist/**",)).to_data(),))]  # b failed: it runs


def test_a_job_reused_twice_names_the_run_it_really_ran_in() -> None:
    h = History(job("a"), job("b", "a"))
    h.add(ev.JobReused(job="a", from_run="r0", status=OK))
    earlier = ended(h, ("b", FAILED))
    assert [e.from_run for e in reused_jobs(earlier, ["a"])] == ["r0"]


# --- the rerun itself --------------------------------------------------------------------

PIPELINE = """
jobs:
  a:
    image: img
    steps: [{run: [echo a]}]
  b:
    image: img
    needs: a
    steps: [{run: [echo b]}]
  c:
    image: img
    needs: a
    steps: [{run: [echo c]}]
"""


def requested(reuse: tuple[str, ...]) -> RunView:
    event = ev.RunRequested(project="p", trigger="rerun", branch="main", commit="c0ffee",
                            pipeline_file=".cyclone.yml", pipeline=PIPELINE, source="",
                            rerun_of="r1", reuse=reuse)
    new = NewEvent(event)
    run = fold([RecordedEvent(id=new.id, stream=run_stream("r2"), seq=1, type=new.type,
                              version=new.version, ts=new.ts, data=event.to_data(), meta={},
                              position=1)])
    assert run is not None and run.reuse == reuse
    return run


def test_reused_jobs_end_with_the_plan_and_the_rest_goes_on() -> None:
    earlier = fan_out()
    reused = reused_jobs(earlier, jobs_to_reuse(earlier, failed=True))
    decided = decide(requested(("a", "b")), (".cyclone.yml", PIPELINE), 4, reused=reused)
    assert [type(e) for e in decided] == [ev.RunPlanned, ev.JobReused, ev.JobReused,
                                          ev.JobQueued]
    assert decided[1:] == [*reused, ev.JobQueued(job="c")]
    run = requested(("a", "b"))
    for event in decided:
        run = _apply(run, event)
    a = run.job("a")
    assert a is not None and (a.status, a.reused_from) == (OK, "r1")
    assert {s.status for s in a.steps} == {StepStatus.SKIPPED}
    run = _apply(_apply(run, ev.JobStarted(job="c", worker="w", executor="shell")),
                 ev.JobFinished(job="c", status=OK, duration_s=1.0))
    assert decide(run, None, 4) == [ev.RunSucceeded()]


def test_a_reused_name_the_plan_lacks_is_dropped() -> None:
    stray = ev.JobReused(job="gone", from_run="r1", status=OK)
    decided = decide(requested(("gone",)), (".cyclone.yml", PIPELINE), 4, reused=[stray])
    assert stray not in decided
    assert [e for e in decided if isinstance(e, ev.JobQueued)] == [ev.JobQueued(job="a")]


def _apply(run: RunView, event: ev.Event) -> RunView:
    return apply_event(run, event, ts="2024-01-01T00:00:00+00:00")
