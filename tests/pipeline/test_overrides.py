"""``--set PATH=VALUE``: a key of the pipeline file set for one run, checked with the
file, its problems placed at the ``--set`` that caused them."""

from __future__ import annotations

from textwrap import dedent

import pytest

from shared.errors import PipelineError
from shared.pipeline import load
from shared.pipeline.lint import lint
from shared.pipeline.overrides import syntax_problem

FILE = ".cyclone.yml"
TEXT = dedent("""\
    jobs:
      build:
        image: alpine:3.20
        steps:
          - run: [make]
      test:
        image: alpine:3.20
        needs: [build]
        steps:
          - name: unit
            run: [make test]
""")


def problems(*overrides: str) -> list[str]:
    return [str(d) for d in lint(TEXT, FILE, overrides=overrides)]


def test_set_changes_the_plan_and_only_what_it_names() -> None:
    plan = load(TEXT, FILE, overrides=["jobs.test.image=python:3.13",
                                       "jobs.test.steps.0.env={COVERAGE: '1'}"]).plan
    assert plan.job("test").image == "python:3.13"
    assert plan.job("test").steps[0].image == "python:3.13"
    assert plan.job("test").steps[0].env == {"COVERAGE": "1"}
    assert plan.job("build").image == "alpine:3.20"


def test_later_sets_win_and_brackets_and_quotes_name_the_same_path() -> None:
    plan = load(TEXT, FILE, overrides=["jobs.test.steps[0].image=a:1",
                                       'jobs."test".steps.0.image=b:2']).plan
    assert plan.job("test").steps[0].image == "b:2"


def test_a_flow_value_replaces_a_whole_list() -> None:
    plan = load(TEXT, FILE, overrides=["jobs.test.steps=[{name: quick, run: [make]}]"]).plan
    assert [s.name for s in plan.job("test").steps] == ["quick"]


def test_a_bad_value_is_placed_at_the_set_not_at_a_line_of_the_file() -> None:
    assert problems("jobs.test.image=3") == [
        "--set jobs.test.image=3: jobs.test.image: expected a string, got an integer"]
    assert problems("jobs.test.imgae=x") == [
        "--set jobs.test.imgae=x: jobs.test.imgae: unknown key 'imgae', did you mean 'image'?"]
    assert problems("jobs.test.steps=[{run: b, bogus: 1}]") == [
        "--set jobs.test.steps=[{run: b, bogus: 1}]: jobs.test.steps[0].bogus: unknown key "
        "'bogus'"]


def test_a_path_that_cannot_be_set_names_what_is_there() -> None:
    assert problems("jobs.tset.image=x") == [
        "--set jobs.tset.image=x: jobs.tset: no such key: jobs has no 'tset', did you mean "
        "'test'? (it has: build, test)"]
    assert problems("jobs.test.steps.3.image=x") == [
        "--set jobs.test.steps.3.image=x: jobs.test.steps: a list of 1 item: no index 3 "
        "(from 0)"]
    assert problems("jobs.test.steps.first.image=x") == [
        "--set jobs.test.steps.first.image=x: jobs.test.steps: a list: expected an index, "
        "got 'first'"]
    assert problems("jobs.test.image.tag=x") == [
        "--set jobs.test.image.tag=x: jobs.test.image: nothing can be set below a string "
        "(a mapping or a list can)"]


def test_a_set_that_breaks_the_graph_is_reported_with_the_file() -> None:
    with pytest.raises(PipelineError) as caught:
        load(TEXT, FILE, overrides=["jobs.build.needs=[test]"])
    assert [str(d) for d in caught.value.diagnostics] == [
        "--set jobs.build.needs=[test]: jobs.build.needs: dependency cycle: build -> test "
        "-> build"]


@pytest.mark.parametrize(("written", "problem"), [
    ("jobs.test.image", "expected PATH=VALUE with a dotted PATH, e.g. "
                        "jobs.test.image=alpine:3.20"),
    ("=x", "expected PATH=VALUE with a dotted PATH, e.g. jobs.test.image=alpine:3.20"),
    ("jobs..image=x", "expected PATH=VALUE with a dotted PATH, e.g. "
                      "jobs.test.image=alpine:3.20"),
    ("include=[a.yml]", "'include' cannot be set with --set (the files it names are fetched "
                        "before the pipeline is read)"),
    ("jobs.test.image=[a", "the value: invalid YAML: while parsing a flow sequence, "
                           "expected ',' or ']', but got '<stream end>'"),
])
def test_syntax_problems(written: str, problem: str) -> None:
    assert syntax_problem(written) == problem


def test_an_empty_value_is_null() -> None:
    assert problems("jobs.test.needs=") == [
        "--set jobs.test.needs=: jobs.test.needs: expected a string, got null"]
    assert syntax_problem("jobs.test.timeout=") == ""


def test_a_caicloud_file_takes_sets_too() -> None:
    text = "build:\n  dockerfile_name: Dockerfile\nintegration:\n  image: alpine\n" \
           "  commands: [make]\n"
    plan = load(text, "caicloud.yml", overrides=["integration.image=python:3.13"]).plan
    assert [j.image for j in plan.jobs if j.name == "integration"] == ["python:3.13"]
