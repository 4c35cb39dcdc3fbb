"""``runs-on:``: the worker labels a job needs, compiled into the plan; bad labels are
errors at their line."""

from __future__ import annotations

from textwrap import dedent

import pytest

from shared.errors import PipelineError
from shared.pipeline import load
from shared.pipeline.lint import lint
from shared.pipeline.plan import Plan

FILE = ".cyclone.yml"
IMAGE = "cyclone-test/busybox:latest"


def test_runs_on_a_string_or_a_list_is_compiled_sorted_into_the_plan() -> None:
    result = load(dedent(f"""
        jobs:
          train:
            image: {IMAGE}
            runs-on: [linux, gpu, gpu]
            steps: [{{run: make}}]
          build:
            image: {IMAGE}
            runs-on: arm64
            steps: [{{run: make}}]
          any:
            image: {IMAGE}
            steps: [{{run: make}}]
    """), FILE)
    jobs = {job.name: job.runs_on for job in result.plan.jobs}
    assert jobs == {"train": ("gpu", "linux"), "build": ("arm64",), "any": ()}


def test_runs_on_survives_the_plans_record_and_is_left_out_when_empty() -> None:
    plan = load(dedent(f"""
        jobs:
          train: {{image: {IMAGE}, runs-on: gpu, steps: [{{run: make}}]}}
          any: {{image: {IMAGE}, steps: [{{run: make}}]}}
    """), FILE).plan
    data = plan.to_data()
    assert list(data["jobs"][0]["runs_on"]) == ["gpu"]
    assert "runs_on" not in data["jobs"][1]  # a plan without labels is recorded as before
    assert Plan.from_data(data) == plan


@pytest.mark.parametrize(("value", "message"), [
    ("[gpu, 'has space']", "invalid label 'has space'"),
    ("'a,b'", "invalid label 'a,b'"),
    ("{gpu: true}", "expected a string"),
])
def test_a_bad_label_is_an_error_at_its_line(value: str, message: str) -> None:
    text = dedent(f"""
        jobs:
          train:
            image: {IMAGE}
            runs-on: {value}
            steps: [{{run: make}}]
    """)
    problems = [str(d) for d in lint(text, FILE)]
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{FILE}:5:"), problems
    assert "jobs.train.runs-on" in problems[0] and message in problems[0], problems
    with pytest.raises(PipelineError):
        load(text, FILE)
