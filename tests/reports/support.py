"""Runs with test reports, as the worker records them: a JUnit file parsed by
``parse_junit``, its results blob, and the run's events up to ``TestReportRecorded``."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from shared import events as ev
from shared.events import RecordedEvent, run_stream
from shared.pipeline.plan import JobSpec, Plan, StepSpec
from shared.projections.runs import RunView, fold
from shared.reports import Report, parse_junit

__all__ = ["JOBS", "PLAN", "digest_of", "junit", "report", "run_events", "run_view"]

JOBS = ("unit", "integration")
PLAN = Plan(".cyclone.yml", tuple(JobSpec(name=name, image="img",
                                          steps=(StepSpec(name="s", image="img"),))
                                  for name in JOBS))


def junit(outcomes: Mapping[str, str], classname: str = "pkg.Suite",
          durations: Mapping[str, float] | None = None) -> bytes:
    """A JUnit report of the tests ``outcomes`` names (test name -> outcome)."""
    children = {"passed": "", "failed": '<failure message="{}: expected 1"/>',
                "error": '<error message="{}: boom"/>', "skipped": '<skipped message="{}"/>'}
    cases = "".join(
        f'<testcase classname="{classname}" name="{name}" '
        f'time="{(durations or {}).get(name, 0.5)}">'
        f'{children[outcome].format(name)}</testcase>' for name, outcome in outcomes.items())
    return f'<testsuites><testsuite name="s">{cases}</testsuite></testsuites>'.encode()


def report(outcomes: Mapping[str, str], classname: str = "pkg.Suite",
           durations: Mapping[str, float] | None = None) -> Report:
    return parse_junit([("reports/junit.xml", junit(outcomes, classname, durations))])


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run_events(reports: Mapping[str, Report], *, commit: str = "c1", project: str = "demo",
               end: ev.Event | None = None, attempts: int = 1,
               source_kind: str = "git") -> list[ev.Event]:
    """A run of ``project`` checking out ``commit`` (``source_kind="dir"``: a directory
    at that commit) whose jobs ``reports`` names reported (each started ``attempts``
    times), then ``end``."""
    events: list[ev.Event] = [
        ev.RunRequested(project=project, trigger="push", branch="main", commit=commit,
                        pipeline_file=".cyclone.yml", pipeline="", source="git://x",
                        source_kind=source_kind),
        ev.RunPlanned(plan=PLAN)]
    for job, made in reports.items():
        events += [ev.JobStarted(job=job, worker="w", executor="shell")] * attempts
        events.append(made.event(job, digest_of(made.results_json())))
    return [*events, *([end] if end is not None else [])]


def run_view(run_id: str, events: list[ev.Event], minute: int = 0) -> RunView:
    """The view of a run made of ``events``, requested at 12:``minute``."""
    recorded = [RecordedEvent(id=f"{run_id}-{n}", stream=run_stream(run_id), seq=n + 1,
                              type=e.TYPE, version=e.VERSION,
                              ts=f"2026-05-01T12:{minute:02d}:{n:02d}+00:00",
                              data=e.to_data(), meta={}, position=0)
                for n, e in enumerate(events)]
    view = fold(recorded)
    assert view is not None
    return view
