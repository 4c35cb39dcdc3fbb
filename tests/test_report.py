"""``cyclone report``'s summaries, from a run's view as the API shows it: a run, a job,
a step; a part the run does not have is an error naming what it has."""

from __future__ import annotations

import pytest

from cyclone.report import NoSuchPart, lines, summary
from shared import events as ev
from shared.pipeline import load
from shared.projections.runs import RunView, apply_event
from shared.status import JobStatus, StepStatus

PIPELINE = """\
jobs:
  build:
    image: alpine
    steps: [{name: compile, run: make}]
  test:
    image: alpine
    needs: [build]
    steps:
      - {name: unit, run: make test, retry: 1}
      - {name: report, run: make report}
"""


def _run() -> dict[str, object]:
    """A run whose test job failed: its unit step exited 3 twice (a retry)."""
    plan = load(PIPELINE, ".cyclone.yml").plan
    timeline: list[tuple[str, ev.Event]] = [
        ("00", ev.RunRequested(project="app", trigger="cli", branch="main", commit="c0ffee" * 6,
                               pipeline_file=".cyclone.yml", pipeline=PIPELINE, source=".",
                               overrides=("jobs.test.image=alpine",))),
        ("01", ev.RunPlanned(plan=plan)), ("01", ev.JobQueued(job="build")),
        ("02", ev.JobStarted(job="build", worker="w1", executor="docker")),
        ("02", ev.StepStarted(job="build", step="compile")),
        ("05", ev.StepFinished(job="build", step="compile", status=StepStatus.SUCCESS,
                               exit_code=0, duration_s=3.0)),
        ("05", ev.JobFinished(job="build", status=JobStatus.SUCCESS, duration_s=3.0)),
        ("06", ev.JobQueued(job="test")),
        ("07", ev.JobStarted(job="test", worker="w2", executor="docker")),
        ("07", ev.StepStarted(job="test", step="unit", attempt=1)),
        ("08", ev.StepFinished(job="test", step="unit", status=StepStatus.FAILURE,
                               exit_code=3, duration_s=1.0, attempt=1)),
        ("08", ev.StepStarted(job="test", step="unit", attempt=2)),
        ("10", ev.StepFinished(job="test", step="unit", status=StepStatus.FAILURE,
                               exit_code=3, duration_s=2.0, attempt=2)),
        ("10", ev.StepSkipped(job="test", step="report", reason="an earlier step failed")),
        ("10", ev.JobFinished(job="test", status=JobStatus.FAILURE, duration_s=3.5,
                              reason="step failed: unit")),
        ("11", ev.RunFailed(reason="job failed: test")),
    ]
    run = RunView(id="r1")
    for second, event in timeline:
        run = apply_event(run, event, f"2026-12-04T10:00:{second}+00:00")
    return run.to_json()


def test_a_run_summed_up() -> None:
    shown = summary(_run())
    assert (shown["status"], shown["jobs_by_status"], shown["steps_by_status"]) == (
        "failure", {"success": 1, "failure": 1}, {"success": 1, "failure": 1, "skipped": 1})
    assert shown["retried_steps"] == 1
    assert lines(shown) == [
        "run r1",
        "status    failure",
        "project   app",
        "trigger   cli",
        "branch    main",
        "commit    c0ffeec0ffee",
        "created   2026-12-04 10:00:00",
        "finished  2026-12-04 10:00:11",
        "duration  11.0s",
        "jobs      1 failure, 1 success",
        "steps     1 failure, 1 success, 1 skipped",
        "retried   1 step(s) took more than one attempt",
        "set       jobs.test.image=alpine",
        "reason    job failed: test",
        "",
        "JOB    STATUS   DURATION  ATTEMPTS  STEPS  EXIT  REASON",
        "build  success  3.0s      1         1/1    -",
        "test   failure  3.5s      1         0/2    3     step failed: unit",
    ]


def test_a_job_summed_up() -> None:
    shown = summary(_run(), job="test")
    assert lines(shown)[-3:] == [
        "STEP    STATUS   EXIT  ATTEMPTS  DURATION  REASON",
        "unit    failure  3     2         2.0s",
        "report  skipped  -     0         -         an earlier step failed",
    ]
    assert shown["job"]["worker"] == "w2" and shown["job"]["exit_codes"] == [3]


def test_a_step_found_by_its_name_alone_when_one_job_has_it() -> None:
    shown = summary(_run(), step="unit")
    assert shown["job"] == "test"
    assert shown["step"]["exit_code"] == 3 and shown["step"]["attempts"] == 2
    assert lines(shown)[:4] == ["run r1, job test, step unit", "status     failure",
                                "exit code  3", "attempts   2"]


@pytest.mark.parametrize(("job", "step", "message"), [
    ("tset", None, "run r1 has no job 'tset' (jobs: build, test)"),
    ("test", "compile", "job 'test' of run r1 has no step 'compile' (steps: unit, report)"),
    (None, "lint", "no job of run r1 has a step 'lint' (steps: compile, report, unit)"),
])
def test_an_unknown_part_names_what_there_is(job: str | None, step: str | None,
                                             message: str) -> None:
    with pytest.raises(NoSuchPart, match=message.replace("(", r"\(").replace(")", r"\)")):
        summary(_run(), job, step)
