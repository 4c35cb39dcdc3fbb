"""Compilation of .cyclone.yml into the Plan: what the scheduler and executors get."""

from __future__ import annotations

from textwrap import dedent

import pytest

import shared.pipeline
from shared.errors import PipelineError
from shared.pipeline import LoadResult, load
from shared.pipeline.plan import When

IMAGE = "cyclone-test/busybox:latest"


def plan_of(text: str) -> LoadResult:
    return load(dedent(text), ".cyclone.yml")


def test_public_surface() -> None:
    """Imported when first used (``lint`` from ``shared.pipeline.lint``)."""
    assert sorted(shared.pipeline.__all__) == ["BUILT_IMAGE", "LoadResult", "detect_format",
                                               "load"]
    assert all(getattr(shared.pipeline, name) is not None for name in shared.pipeline.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        shared.pipeline.nothing  # noqa: B018


def test_minimal_job_and_step_defaults() -> None:
    result = plan_of(f"""
        jobs:
          build:
            image: {IMAGE}
            steps:
              - run: make
              - run: [make test, make install]
                image: other:tag
    """)
    assert result.warnings == []
    assert result.plan.source_file == ".cyclone.yml"
    (job,) = result.plan.jobs
    assert (job.name, job.image, job.needs, job.timeout_s, job.matrix) == (
        "build", IMAGE, (), None, {})
    first, second = job.steps
    assert (first.name, first.image, first.commands, first.retry) == (
        "step-1", IMAGE, ("make",), 0)
    assert (second.name, second.image, second.commands) == (
        "step-2", "other:tag", ("make test", "make install"))
    assert first.when == When() and first.when.status == ("success",)


def test_env_precedence_global_then_job_then_step() -> None:
    result = plan_of(f"""
        env: {{LEVEL: global, ONLY_GLOBAL: yes, N: 1, F: 1.5, OFF: false, EMPTY: }}
        jobs:
          build:
            image: {IMAGE}
            env: {{LEVEL: job, ONLY_JOB: x}}
            steps:
              - run: make
                env: {{LEVEL: step}}
    """)
    job = result.plan.job("build")
    assert job.env == {"LEVEL": "job", "ONLY_GLOBAL": "true", "N": "1", "F": "1.5",
                       "OFF": "false", "EMPTY": "", "ONLY_JOB": "x"}
    assert job.steps[0].env == {"LEVEL": "step"}  # the runtime lays it over job.env
    assert {**job.env, **job.steps[0].env}["LEVEL"] == "step"


def test_when_parsing() -> None:
    result = plan_of(f"""
        jobs:
          build:
            image: {IMAGE}
            when: {{branch: main, event: push}}
            steps:
              - {{name: a, run: x, when: {{status: always}}}}
              - {{name: b, run: x, when: {{status: failure}}}}
              - {{name: c, run: x, when: {{status: [failure, success]}}}}
              - name: d
                run: x
                when:
                  branch: ["release/*", "!release/old*"]
                  event: [tag, pull_request, schedule, manual, cli]
    """)
    job = result.plan.job("build")
    assert job.when == When(branches=("main",), events=("push",), status=("success",))
    a, b, c, d = job.steps
    assert a.when.status == ("success", "failure")
    assert b.when.status == ("failure",)
    assert c.when.status == ("success", "failure")
    assert d.when.events == ("tag", "pull_request", "schedule", "manual", "cli")
    assert d.when.matches("release/1.0", "tag")
    assert not d.when.matches("release/old-1", "tag")
    assert not job.when.matches("main", "pull_request")


def test_timeouts_and_retry() -> None:
    result = plan_of(f"""
        jobs:
          build:
            image: {IMAGE}
            timeout: 1h30m
            steps:
              - {{run: a, timeout: 90s, retry: 2}}
              - {{run: b, timeout: 2.5}}
              - {{run: c, timeout: "10m"}}
    """)
    job = result.plan.job("build")
    assert job.timeout_s == 5400.0
    assert [s.timeout_s for s in job.steps] == [90.0, 2.5, 600.0]
    assert job.steps[0].retry == 2


def test_matrix_expands_one_job_per_combination() -> None:
    result = plan_of(f"""
        jobs:
          test:
            image: "python:${{{{ matrix.python }}}}"
            matrix:
              python: ["3.11", "3.12"]
              db-kind: [pg, my]
            env: {{URL: "${{{{matrix.db-kind}}}}://db"}}
            services:
              db: {{image: "cyclone-test/${{{{ matrix.db-kind }}}}"}}
            steps:
              - image: "tool:${{{{ matrix.python }}}}"
                run: pytest --db ${{{{ matrix.db-kind }}}}
                env: {{PY: "${{{{ matrix.python }}}}"}}
          report:
            image: {IMAGE}
            needs: test
            steps: [{{run: echo done}}]
    """)
    names = [job.name for job in result.plan.jobs]
    expanded = ["test (python=3.11, db-kind=pg)", "test (python=3.11, db-kind=my)",
                "test (python=3.12, db-kind=pg)", "test (python=3.12, db-kind=my)"]
    assert names == [*expanded, "report"]
    job = result.plan.job("test (python=3.12, db-kind=my)")
    assert job.matrix == {"python": "3.12", "db-kind": "my"}
    assert job.image == "python:3.12"
    assert job.env == {"URL": "my://db", "PYTHON": "3.12", "DB_KIND": "my"}
    assert job.services[0].image == "cyclone-test/my"
    (step,) = job.steps
    assert (step.image, step.commands, step.env) == (
        "tool:3.12", ("pytest --db my",), {"PY": "3.12"})
    assert result.plan.job("report").needs == tuple(expanded)


def test_a_matrix_job_needing_a_matrix_job_needs_every_expansion() -> None:
    result = plan_of(f"""
        jobs:
          build:
            image: {IMAGE}
            matrix: {{os: [linux, mac]}}
            steps: [{{run: make}}]
          test:
            image: {IMAGE}
            matrix: {{n: [1, 2]}}
            needs: build
            steps: [{{run: make test}}]
    """)
    assert result.plan.job("test (n=2)").needs == ("build (os=linux)", "build (os=mac)")
    assert result.plan.job("test (n=1)").env == {"N": "1"}


def test_jobs_are_in_a_stable_topological_order() -> None:
    result = plan_of(f"""
        jobs:
          deploy: {{image: {IMAGE}, needs: [test, lint], steps: [{{run: x}}]}}
          test: {{image: {IMAGE}, needs: build, steps: [{{run: x}}]}}
          lint: {{image: {IMAGE}, steps: [{{run: x}}]}}
          build: {{image: {IMAGE}, steps: [{{run: x}}]}}
          docs: {{image: {IMAGE}, steps: [{{run: x}}]}}
    """)
    order = [job.name for job in result.plan.jobs]
    assert order == ["lint", "build", "test", "deploy", "docs"]
    for index, job in enumerate(result.plan.jobs):
        assert set(job.needs) <= set(order[:index])


def test_independent_jobs_keep_file_order() -> None:
    result = plan_of("".join(
        f"\n  j{i}: {{image: {IMAGE}, steps: [{{run: x}}]}}" for i in (3, 1, 2)).join(
        ["jobs:", "\n"]))
    assert [job.name for job in result.plan.jobs] == ["j3", "j1", "j2"]


def test_services_both_forms_and_commands() -> None:
    result = plan_of(f"""
        jobs:
          a:
            image: {IMAGE}
            services:
              db: {{image: {IMAGE}, command: "nc -lk -p '5432'", env: {{X: 1}}}}
            steps: [{{run: x}}]
          b:
            image: {IMAGE}
            services:
              - {{name: cache, image: {IMAGE}, command: [sleep, "60"]}}
            steps: [{{run: x}}]
    """)
    (db,) = result.plan.job("a").services
    assert (db.name, db.command, db.env) == ("db", ("nc", "-lk", "-p", "5432"), {"X": "1"})
    (cache,) = result.plan.job("b").services
    assert (cache.name, cache.command) == ("cache", ("sleep", "60"))


def test_unbalanced_quotes_in_a_service_command() -> None:
    with pytest.raises(PipelineError) as caught:
        plan_of(f"""
            jobs:
              a:
                image: {IMAGE}
                services: {{db: {{image: {IMAGE}, command: "nc 'oops"}}}}
                steps: [{{run: x}}]
        """)
    assert [str(d) for d in caught.value.diagnostics] == [
        ".cyclone.yml:5: jobs.a.services.db.command: cannot split command: no closing "
        "quotation"]


def test_yaml_anchors_and_merge_keys() -> None:
    result = plan_of(f"""
        jobs:
          a: &job
            image: {IMAGE}
            env: &env {{SHARED: "1"}}
            steps: [{{run: x}}]
          b:
            <<: *job
            image: other:tag
            env: {{<<: *env, OWN: "2"}}
    """)
    b = result.plan.job("b")
    assert b.image == "other:tag"
    assert b.env == {"SHARED": "1", "OWN": "2"}
    assert (b.steps[0].commands, b.steps[0].image) == (("x",), "other:tag")


def test_a_merged_unknown_key_is_reported_where_it_was_written() -> None:
    with pytest.raises(PipelineError) as caught:
        plan_of(f"""
            base: &base {{image: {IMAGE}, colour: red}}
            jobs:
              a: {{<<: *base, steps: [{{run: x}}]}}
        """)
    assert [str(d) for d in caught.value.diagnostics] == [
        ".cyclone.yml:2: base: unknown key 'base'",
        ".cyclone.yml:2: jobs.a.colour: unknown key 'colour'",
    ]


def test_top_level_x_keys_hold_anchors_and_are_ignored() -> None:
    result = plan_of(f"""
        x-defaults: &defaults
          image: {IMAGE}
          timeout: 10m
        jobs:
          a: {{<<: *defaults, steps: [{{run: x}}]}}
    """)
    assert (result.plan.job("a").image, result.plan.job("a").timeout_s) == (IMAGE, 600.0)
