"""``stages:`` (GitLab CI's): each job of a stage needs every job of the nearest earlier
stage with jobs; mistakes reported at their line."""

from __future__ import annotations

from textwrap import dedent

from shared.pipeline import load
from shared.pipeline.lint import lint

FILE = ".cyclone.yml"
IMAGE = "cyclone-test/busybox:latest"


def job(name: str, extra: str = "") -> str:
    return (f"  {name}:\n    image: {IMAGE}\n    steps: [{{run: make {name}}}]\n"
            + "".join(f"    {line}\n" for line in extra.splitlines()))


def needs_of(text: str) -> dict[str, tuple[str, ...]]:
    return {j.name: j.needs for j in load(text, FILE).plan.jobs}


def problems(text: str) -> list[str]:
    return [str(d) for d in lint(text, FILE)]


def test_a_stage_needs_every_job_of_the_one_before() -> None:
    text = ("stages: [build, test, deploy]\njobs:\n" + job("compile", "stage: build")
            + job("unit", "stage: test") + job("lint", "stage: test")
            + job("ship", "stage: deploy"))
    assert needs_of(text) == {"compile": (), "unit": ("compile",), "lint": ("compile",),
                              "ship": ("unit", "lint")}


def test_an_empty_stage_is_passed_over_and_warned_about() -> None:
    text = ("stages: [build, qa, deploy]\njobs:\n" + job("compile", "stage: build")
            + job("ship", "stage: deploy"))
    assert needs_of(text) == {"compile": (), "ship": ("compile",)}
    assert problems(text) == [".cyclone.yml:1: warning: stages[1]: no job is in stage 'qa'"]


def test_stages_mix_with_explicit_needs_and_jobs_without_a_stage() -> None:
    text = ("stages: [build, deploy]\njobs:\n" + job("compile", "stage: build")
            + job("docs", "needs: [compile]") + job("ship", "stage: deploy\nneeds: [docs]"))
    assert needs_of(text) == {"compile": (), "docs": ("compile",), "ship": ("docs", "compile")}
    assert problems(text) == []


def test_a_need_the_stage_already_adds_is_not_doubled() -> None:
    text = ("stages: [build, test]\njobs:\n" + job("compile", "stage: build")
            + job("unit", "stage: test\nneeds: [compile]"))
    assert needs_of(text)["unit"] == ("compile",)


def test_unknown_stage_is_an_error_at_its_line_with_a_suggestion() -> None:
    text = ("stages: [build, test]\njobs:\n" + job("compile", "stage: build")
            + job("unit", "stage: tset"))
    assert problems(text) == [
        ".cyclone.yml:10: jobs.unit.stage: unknown stage 'tset', did you mean 'test'? "
        "(stages: build, test)",
        ".cyclone.yml:1: warning: stages[1]: no job is in stage 'test'"]


def test_stage_without_stages_is_an_error() -> None:
    text = "jobs:\n" + job("compile", "stage: build")
    assert problems(text) == [
        ".cyclone.yml:5: jobs.compile.stage: stage 'build' but the file has no stages: "
        "(list them at the top level, e.g. stages: [build, test])"]


def test_a_stage_listed_twice_and_an_empty_list() -> None:
    text = "stages:\n  - build\n  - build\njobs:\n" + job("compile", "stage: build")
    assert problems(text) == [
        ".cyclone.yml:3: stages[1]: stage 'build' is listed twice (first at line 2)"]
    assert problems("stages: []\njobs:\n" + job("compile")) == [
        ".cyclone.yml:1: stages: must not be empty"]


def test_a_cycle_through_the_stage_order_is_named_so() -> None:
    text = ("stages: [build, test]\njobs:\n" + job("compile", "stage: build\nneeds: [unit]")
            + job("unit", "stage: test"))
    assert problems(text) == [
        ".cyclone.yml:7: jobs.compile.needs: dependency cycle: compile -> unit -> compile "
        "(with the needs that stages add)"]


def test_stages_in_the_gitlab_layout() -> None:
    """A GitLab user's file, but for the jobs: key, loads as written."""
    text = dedent(f"""\
        stages:
          - build
          - test
        jobs:
          build-job:
            stage: build
            image: {IMAGE}
            steps: [{{run: echo compile}}]
          test-job1:
            stage: test
            image: {IMAGE}
            steps: [{{run: echo test}}]
          test-job2:
            stage: test
            image: {IMAGE}
            steps: [{{run: echo test}}]
    """)
    assert needs_of(text) == {"build-job": (), "test-job1": ("build-job",),
                              "test-job2": ("build-job",)}
