"""The run state machine (event manager's ``decide``) on plain values: no I/O involved."""

from __future__ import annotations

import dataclasses

from services.eventmanager.decide import decide
from shared import events as ev
from shared.events import NewEvent, RecordedEvent, run_stream
from shared.forge import ForgeEvent
from shared.pipeline.plan import JobSpec, Plan, StepSpec, When
from shared.pipeline.resources import Policy, Resources
from shared.projections.runs import RunView, fold
from shared.status import JobStatus


def job(name: str, *needs: str, when: When | None = None) -> JobSpec:
    return JobSpec(name=name, image="img", steps=(StepSpec(name="s", image="img"),),
                   needs=needs, when=when or When())


class History:
    """A run's stream built by hand, folded exactly as the services fold it."""

    def __init__(self, *jobs: JobSpec, branch: str = "main", trigger: str = "push") -> None:
        self.events: list[RecordedEvent] = []
        self.requested = ev.RunRequested(project="p", trigger=trigger, branch=branch,
                                         commit="c0ffee", pipeline_file=".cyclone.yml",
                                         pipeline="", source="")
        self.add(self.requested, ev.RunPlanned(plan=Plan(".cyclone.yml", jobs)))

    def add(self, *events: ev.Event) -> History:
        for event in events:
            new = NewEvent(event)
            seq = len(self.events) + 1
            self.events.append(RecordedEvent(
                id=new.id, stream=run_stream("r1"), seq=seq, type=new.type,
                version=new.version, ts=new.ts, data=event.to_data(), meta={}, position=seq))
        return self

    @property
    def run(self) -> RunView:
        run = fold(self.events)
        assert run is not None
        return run

    def decide(self, max_parallel: int = 10) -> list[ev.Event]:
        return decide(self.run, (".cyclone.yml", ""), max_parallel)

    def finish(self, name: str, status: JobStatus) -> History:
        return self.add(ev.JobStarted(job=name, worker="w", executor="docker"),
                        ev.JobFinished(job=name, status=status, duration_s=1.0))


def test_independent_jobs_are_queued_together_and_dependents_wait() -> None:
    h = History(job("a"), job("b"), job("c", "a", "b"))
    assert h.decide() == [ev.JobQueued(job="a"), ev.JobQueued(job="b")]
    h.add(*h.decide()).finish("a", JobStatus.SUCCESS)
    assert h.decide() == []  # c still needs b
    h.finish("b", JobStatus.SUCCESS)
    assert h.decide() == [ev.JobQueued(job="c")]


def test_parallelism_is_bounded_by_the_setting() -> None:
    h = History(job("a"), job("b"), job("c"))
    assert h.decide(max_parallel=2) == [ev.JobQueued(job="a"), ev.JobQueued(job="b")]
    h.add(ev.JobQueued(job="a"), ev.JobQueued(job="b"))
    assert h.decide(max_parallel=2) == []
    h.finish("a", JobStatus.SUCCESS)
    assert h.decide(max_parallel=2) == [ev.JobQueued(job="c")]


def test_failure_skips_dependents_transitively_and_fails_the_run() -> None:
    h = History(job("a"), job("b", "a"), job("c", "b"))
    h.add(ev.JobQueued(job="a")).finish("a", JobStatus.FAILURE)
    assert h.decide() == [
        ev.JobSkipped(job="b", reason="needs failed: a"),
        ev.JobSkipped(job="c", reason="needs failed: b"),
        ev.RunFailed(reason="job failed: a"),
    ]


def test_when_status_failure_runs_only_after_a_failure() -> None:
    on_failure = When(status=("failure",))
    ok = History(job("a"), job("notify", "a", when=on_failure))
    ok.add(ev.JobQueued(job="a")).finish("a", JobStatus.SUCCESS)
    assert ok.decide() == [
        ev.JobSkipped(job="notify", reason="when.status: runs only on failure"),
        ev.RunSucceeded(),
    ]
    bad = History(job("a"), job("notify", "a", when=on_failure))
    bad.add(ev.JobQueued(job="a")).finish("a", JobStatus.FAILURE)
    assert bad.decide() == [ev.JobQueued(job="notify")]
    bad.add(ev.JobQueued(job="notify")).finish("notify", JobStatus.SUCCESS)
    assert bad.decide() == [ev.RunFailed(reason="job failed: a")]


def test_always_runs_after_success_and_failure() -> None:
    always = When(status=("success", "failure"))
    h = History(job("a"), job("cleanup", "a", when=always))
    h.add(ev.JobQueued(job="a")).finish("a", JobStatus.FAILURE)
    assert h.decide() == [ev.JobQueued(job="cleanup")]


def test_branch_and_event_filters_skip_without_failing_the_run() -> None:
    only_release = When(branches=("release/*", "!release/old"), events=("push",))
    h = History(job("a"), job("deploy", "a", when=only_release), branch="main")
    h.add(ev.JobQueued(job="a")).finish("a", JobStatus.SUCCESS)
    decided = h.decide()
    assert isinstance(decided[0], ev.JobSkipped) and "does not match branch 'main'" in \
        decided[0].reason
    assert decided[1:] == [ev.RunSucceeded()]
    release = History(job("deploy", when=only_release), branch="release/1.0")
    assert release.decide() == [ev.JobQueued(job="deploy")]
    old = History(job("deploy", when=only_release), branch="release/old")
    assert isinstance(old.decide()[0], ev.JobSkipped)


def test_a_rerun_is_filtered_by_the_event_of_the_run_it_reruns() -> None:
    push_only = When(events=("push",))
    rerun = History(job("deploy", when=push_only), trigger="rerun")
    assert isinstance(rerun.decide()[0], ev.JobSkipped)  # a rerun of no known event
    rerun.events.clear()
    rerun.requested = dataclasses.replace(rerun.requested, event="push")
    rerun.add(rerun.requested, ev.RunPlanned(plan=Plan(".cyclone.yml", (job("deploy",
                                                                            when=push_only),))))
    assert rerun.run.when_event == "push"
    assert rerun.decide() == [ev.JobQueued(job="deploy")]


def test_a_job_whose_needs_did_not_output_what_its_when_asks_is_skipped() -> None:
    wants = When(outputs=(("deploy", "y*"),))
    h = History(job("a"), job("b", "a", when=wants), job("c", "a", when=wants))
    h.add(ev.JobQueued(job="a"), ev.JobStarted(job="a", worker="w", executor="docker"),
          ev.StepOutputs(job="a", step="s", outputs={"deploy": "yes"}),
          ev.JobFinished(job="a", status=JobStatus.SUCCESS, duration_s=1.0))
    assert h.decide() == [ev.JobQueued(job="b"), ev.JobQueued(job="c")]
    no = History(job("a"), job("b", "a", when=wants))
    no.add(ev.JobQueued(job="a")).finish("a", JobStatus.SUCCESS)
    [skipped, *_] = no.decide()
    assert isinstance(skipped, ev.JobSkipped)
    assert skipped.reason == "when.outputs: deploy is '', not 'y*'"


def test_cancel_skips_waiting_jobs_and_ends_when_nothing_runs() -> None:
    h = History(job("a"), job("b"), job("c", "a"))
    h.add(ev.JobQueued(job="a"), ev.JobQueued(job="b"),
          ev.JobStarted(job="a", worker="w", executor="docker"), ev.RunCancelRequested())
    assert h.decide() == [ev.JobSkipped(job="b", reason="run cancelled"),
                          ev.JobSkipped(job="c", reason="run cancelled")]
    h.add(*h.decide()).add(ev.JobFinished(job="a", status=JobStatus.CANCELLED, duration_s=1.0))
    assert h.decide() == [ev.RunCancelled(reason="cancelled")]
    h.add(*h.decide())
    assert h.decide() == []  # an ended run never gets more events
    assert h.run.status == "cancelled"


def test_an_errored_job_errors_the_run() -> None:
    h = History(job("a"), job("b"))
    h.add(ev.JobQueued(job="a"), ev.JobQueued(job="b")).finish("a", JobStatus.ERRORED)
    h.finish("b", JobStatus.FAILURE)
    assert h.decide() == [ev.RunErrored(reason="job errored: a")]


def test_an_invalid_pipeline_errors_the_run_with_the_diagnostics() -> None:
    h = History(job("a"))
    h.events = h.events[:1]  # requested only
    decided = decide(h.run, (".cyclone.yml", "jobs: ["), 4)
    assert len(decided) == 1 and isinstance(decided[0], ev.RunErrored)
    assert decided[0].reason.startswith("invalid pipeline:\n.cyclone.yml:1")


def test_the_runs_overrides_are_applied_when_it_is_planned() -> None:
    text = "jobs:\n  a:\n    image: alpine\n    steps: [{run: make}]\n"
    h = History(job("a"))
    h.events = []  # requested only, with the overrides
    h.add(dataclasses.replace(h.requested, overrides=("jobs.a.image=python:3.13",)))
    planned = decide(h.run, (".cyclone.yml", text), 4)[0]
    assert isinstance(planned, ev.RunPlanned)
    assert planned.plan.job("a").steps[0].image == "python:3.13"

    h.events = []
    h.add(dataclasses.replace(h.requested, overrides=("jobs.b.image=x",)))
    errored = decide(h.run, (".cyclone.yml", text), 4)
    assert errored == [ev.RunErrored(reason="invalid pipeline:\n--set jobs.b.image=x: jobs.b: "
                                            "no such key: jobs has no 'b' (it has: a)")]


DIND = """\
jobs:
  build:
    image: docker:cli
    resources: {memory: 1GiB}
    steps:
      - run: docker build .
        volumes: [/var/run/docker.sock:/var/run/docker.sock]
"""


def test_an_untrusted_projects_run_asking_for_the_docker_socket_errors_before_it_starts(
        ) -> None:
    h = History(job("a"))
    h.events = h.events[:1]  # requested only
    decided = decide(h.run, (".cyclone.yml", DIND), 4,
                     policy=Policy(trusted=False, project="demo"))
    assert len(decided) == 1 and isinstance(decided[0], ev.RunErrored)
    assert decided[0].reason.startswith(
        "invalid pipeline:\n.cyclone.yml:7: jobs.build.steps[0].volumes[0]: mounting the "
        "Docker socket")
    assert "cyclone project update demo --trusted" in decided[0].reason


def test_a_trusted_projects_run_is_planned_with_the_socket_and_its_maximum() -> None:
    h = History(job("a"))
    h.events = h.events[:1]
    most = Resources(memory=2 * 1024**3)
    decided = decide(h.run, (".cyclone.yml", DIND), 4,
                     policy=Policy(trusted=True, project="demo", max_resources=most))
    planned = decided[0]
    assert isinstance(planned, ev.RunPlanned)
    assert planned.plan.job("build").steps[0].volumes == (
        "/var/run/docker.sock:/var/run/docker.sock",)
    assert planned.plan.max_resources == most
    assert decided[1:] == [ev.JobQueued(job="build")]


def test_a_job_asking_more_than_its_projects_maximum_errors_the_run() -> None:
    h = History(job("a"))
    h.events = h.events[:1]
    decided = decide(h.run, (".cyclone.yml", DIND), 4, policy=Policy(
        trusted=True, project="demo", max_resources=Resources(memory=512 * 1024**2)))
    assert isinstance(decided[0], ev.RunErrored)
    assert ("jobs.build.resources.memory: 1 GiB is above the maximum of project 'demo' "
            "(512 MiB)") in decided[0].reason


def test_a_run_without_a_known_pipeline_file_gets_one_checkout_then_is_planned() -> None:
    h = History(job("a"))
    h.events = h.events[:1]  # requested only, from a Git project: nothing to plan yet
    assert decide(h.run, None, 4) == [ev.CheckoutQueued()]
    h.add(ev.CheckoutQueued())
    assert decide(h.run, None, 4) == []  # waiting for the checkout, not queueing twice
    text = "jobs:\n  a:\n    image: img\n    steps:\n      - run: echo hi\n"
    h.add(ev.RunSourceResolved(commit="c0ffee", branch="main", pipeline_file=".cyclone.yml",
                               pipeline=text))
    decided = decide(h.run, (".cyclone.yml", text), 4)
    # Planned, and its first job queued in the same append (one bus round trip, not two).
    assert isinstance(decided[0], ev.RunPlanned) and decided[1:] == [ev.JobQueued(job="a")]
    assert decided[0].plan.jobs[0].name == "a"


def test_planning_queues_the_first_jobs_up_to_the_limit_and_skips_what_when_excludes() -> None:
    h = History(job("a"))
    h.events = h.events[:1]
    text = ("jobs:\n"
            "  a: {image: img, steps: [{run: 'true'}]}\n"
            "  b: {image: img, steps: [{run: 'true'}]}\n"
            "  c: {image: img, steps: [{run: 'true'}]}\n"
            "  d: {image: img, steps: [{run: 'true'}], when: {branch: nope}}\n")
    decided = decide(h.run, (".cyclone.yml", text), 2)
    skipped = decided[3]
    assert isinstance(skipped, ev.JobSkipped)
    assert decided[1:] == [ev.JobQueued(job="a"), ev.JobQueued(job="b"),
                           ev.JobSkipped(job="d", reason=skipped.reason)]
    assert "when: does not match branch" in skipped.reason


def test_cancel_before_planning_ends_the_run_at_once() -> None:
    h = History(job("a"))
    h.events = h.events[:1]
    h.add(ev.CheckoutQueued(), ev.RunCancelRequested())
    assert decide(h.run, None, 4) == [ev.RunCancelled(reason="cancelled before it was planned")]


ON_MAIN = """
on:
  push:
    branches: [main]
jobs:
  build:
    image: img
    steps: [{run: "true"}]
"""


def requested_by(event: ForgeEvent | None, trigger: str = "push") -> RunView:
    request = ev.RunRequested(project="p", trigger=trigger, branch="b", commit="c0ffee",
                              pipeline_file=".cyclone.yml", pipeline="", source="",
                              forge_event=event.to_json() if event else {})
    new = NewEvent(request)
    run = fold([RecordedEvent(id=new.id, stream=run_stream("r1"), seq=1, type=new.type,
                              version=1, ts=new.ts, data=request.to_data(), meta={},
                              position=1)])
    assert run is not None
    return run


def test_a_push_the_on_rules_do_not_match_ends_the_run_skipped_with_the_reason() -> None:
    push = ForgeEvent(kind="push", provider="github", ref="refs/heads/feature/x",
                      branch="feature/x", commit="c0ffee")
    [skipped] = decide(requested_by(push), (".cyclone.yml", ON_MAIN), 4)
    assert isinstance(skipped, ev.RunSkipped)
    assert "feature/x" in skipped.reason


def test_a_push_the_on_rules_match_is_planned() -> None:
    push = ForgeEvent(kind="push", provider="github", ref="refs/heads/main", branch="main",
                      commit="c0ffee")
    planned, *_ = decide(requested_by(push), (".cyclone.yml", ON_MAIN), 4)
    assert isinstance(planned, ev.RunPlanned)


def test_a_manual_run_of_a_pipeline_whose_on_rules_omit_manual_is_skipped() -> None:
    [skipped] = decide(requested_by(None, trigger="manual"), (".cyclone.yml", ON_MAIN), 4)
    assert isinstance(skipped, ev.RunSkipped) and "manual" in skipped.reason
    planned, *_ = decide(requested_by(None, trigger="rerun"), (".cyclone.yml", ON_MAIN), 4)
    assert isinstance(planned, ev.RunPlanned)
