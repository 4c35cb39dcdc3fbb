"""The linter's messages, exactly as a user reads them: file:line: dotted.path: message."""

from __future__ import annotations

from textwrap import dedent

import pytest

from shared.errors import PipelineError
from shared.pipeline import detect_format, load
from shared.pipeline.diagnostics import Diagnostic
from shared.pipeline.lint import lint

FILE = ".cyclone.yml"
IMAGE = "cyclone-test/busybox:latest"


def problems(text: str, file: str = FILE) -> list[str]:
    return [str(d) for d in lint(dedent(text), file)]


def test_a_valid_file_has_no_problems() -> None:
    assert problems(f"""
        jobs:
          build:
            image: {IMAGE}
            steps: [{{run: make}}]
    """) == []


def test_unknown_need_says_did_you_mean() -> None:
    assert problems(f"""
        jobs:
          build:
            image: {IMAGE}
            steps: [{{run: make}}]
          test:
            image: {IMAGE}
            needs: [build, biuld]
            steps: [{{run: make test}}]
    """) == [".cyclone.yml:8: jobs.test.needs: unknown job 'biuld', did you mean 'build'?"]


def test_unknown_need_without_a_close_name() -> None:
    assert problems(f"""
        jobs:
          test:
            image: {IMAGE}
            needs: zzz
            steps: [{{run: make test}}]
    """) == [".cyclone.yml:5: jobs.test.needs: unknown job 'zzz'"]


def test_cycle_lists_the_jobs_in_it() -> None:
    assert problems(f"""
        jobs:
          a:
            image: {IMAGE}
            needs: b
            steps: [{{run: "true"}}]
          b:
            image: {IMAGE}
            needs: [a]
            steps: [{{run: "true"}}]
    """) == [".cyclone.yml:5: jobs.a.needs: dependency cycle: a -> b -> a"]


def test_self_need() -> None:
    assert problems(f"""
        jobs:
          a:
            image: {IMAGE}
            needs: [a]
            steps: [{{run: "true"}}]
    """) == [".cyclone.yml:5: jobs.a.needs: job 'a' needs itself"]


def test_unknown_key_is_named_with_did_you_mean() -> None:
    assert problems(f"""
        jobs:
          build:
            image: {IMAGE}
            steps:
              - run: make
                tiemout: 10m
    """) == [".cyclone.yml:7: jobs.build.steps[0].tiemout: unknown key 'tiemout', "
             "did you mean 'timeout'?"]


def test_unknown_top_level_key() -> None:
    assert problems(f"""
        pipeline: {{}}
        jobs:
          build: {{image: {IMAGE}, steps: [{{run: make}}]}}
    """) == [".cyclone.yml:2: pipeline: unknown key 'pipeline'"]


def test_missing_image() -> None:
    assert problems("""
        jobs:
          build:
            steps:
              - image: alpine
                run: make
              - name: test
                run: make test
    """) == [".cyclone.yml:3: jobs.build: missing required key 'image' "
             "(step 'test' has no image of its own)"]


def test_no_job_image_is_fine_when_every_step_has_one() -> None:
    assert problems("""
        jobs:
          build:
            steps: [{image: alpine, run: make}]
    """) == []


@pytest.mark.parametrize(("timeout", "message"), [
    ("soon", "invalid duration 'soon' (use seconds or e.g. \"90s\", \"10m\", \"1h30m\")"),
    ("0", "must be > 0, got 0"),
    ("-5s", "invalid duration '-5s' (use seconds or e.g. \"90s\", \"10m\", \"1h30m\")"),
    ("10m1h", "invalid duration '10m1h' (use seconds or e.g. \"90s\", \"10m\", \"1h30m\")"),
    ("[1]", "expected a duration such as 30, \"90s\", \"10m\" or \"1h30m\""),
])
def test_bad_timeout(timeout: str, message: str) -> None:
    assert problems(f"""
        jobs:
          build:
            image: {IMAGE}
            timeout: {timeout}
            steps: [{{run: make}}]
    """) == [f".cyclone.yml:5: jobs.build.timeout: {message}"]


def test_bad_status_and_event() -> None:
    assert problems(f"""
        jobs:
          build:
            image: {IMAGE}
            when:
              status: sucess
              event: [push, merge]
            steps: [{{run: make}}]
    """) == [
        ".cyclone.yml:6: jobs.build.when.status: unknown status 'sucess', did you mean "
        "'success'? (expected one of: success, failure, always)",
        ".cyclone.yml:7: jobs.build.when.event[1]: unknown event 'merge' (expected one of: "
        "push, tag, pull_request, manual, cli, schedule)",
    ]


def test_bad_yaml_syntax_gives_the_line() -> None:
    assert problems(f"""
        jobs:
          build:
            image: {IMAGE}
            steps:
             - run: make
              - run: test
    """) == [".cyclone.yml:7: invalid YAML: while parsing a block collection (line 6), "
             "expected <block end>, but found '<block sequence start>'"]


def test_tabs_are_a_syntax_error_with_line_and_column() -> None:
    (diagnostic,) = lint("jobs:\n\tbuild: {}\n", FILE)
    assert (diagnostic.line, diagnostic.column) == (2, 1)
    assert "invalid YAML" in diagnostic.message


def test_empty_steps_and_empty_run() -> None:
    assert problems(f"""
        jobs:
          build:
            image: {IMAGE}
            steps: []
          test:
            image: {IMAGE}
            steps:
              - run: []
              - run: ""
    """) == [
        ".cyclone.yml:5: jobs.build.steps: must not be empty",
        ".cyclone.yml:9: jobs.test.steps[0].run: needs at least one command",
        ".cyclone.yml:10: jobs.test.steps[1].run: needs at least one command",
    ]


def test_missing_run() -> None:
    assert problems(f"""
        jobs:
          build:
            image: {IMAGE}
            steps:
              - name: compile
    """) == [".cyclone.yml:6: jobs.build.steps[0]: missing required key 'run' (or one of: "
             "build, promote, deploy)"]


def test_duplicate_step_names_including_defaults() -> None:
    assert problems(f"""
        jobs:
          build:
            image: {IMAGE}
            steps:
              - name: compile
                run: make
              - name: compile
                run: make again
              - run: one
              - name: step-3
                run: two
    """) == [
        ".cyclone.yml:8: jobs.build.steps[1].name: duplicate step name 'compile' "
        "(first at line 6)",
        ".cyclone.yml:11: jobs.build.steps[3].name: duplicate step name 'step-3' "
        "(first at line 10)",
    ]


def test_wrong_types() -> None:
    assert problems("""
        env: [A=1]
        jobs:
          build:
            image: 3
            needs: {a: b}
            steps:
              - run: make
                retry: "2"
                env: {A: [1]}
    """) == [
        ".cyclone.yml:2: env: expected a mapping, got a list",
        ".cyclone.yml:5: jobs.build.image: expected a string, got an integer",
        ".cyclone.yml:6: jobs.build.needs: expected a string, got a mapping",
        ".cyclone.yml:9: jobs.build.steps[0].retry: expected an integer, got a string",
        ".cyclone.yml:10: jobs.build.steps[0].env.A: expected a string, number or boolean, "
        "got a list",
    ]


def test_negative_retry() -> None:
    assert problems(f"""
        jobs:
          build:
            image: {IMAGE}
            steps: [{{run: make, retry: -1}}]
    """) == [".cyclone.yml:5: jobs.build.steps[0].retry: must be >= 0"]


def test_file_level_problems() -> None:
    assert problems("[1, 2]") == [".cyclone.yml:1: expected a mapping, got a list"]
    assert problems("env: {}") == [".cyclone.yml:1: missing required key 'jobs'"]
    assert problems("jobs: {}") == [".cyclone.yml:1: jobs: must not be empty"]
    assert problems("") == [".cyclone.yml:1: the file is empty"]


def test_duplicate_yaml_keys_are_errors() -> None:
    assert problems(f"""
        jobs:
          build:
            image: {IMAGE}
            steps: [{{run: make}}]
          build:
            image: {IMAGE}
            steps: [{{run: make}}]
    """) == [".cyclone.yml:6: jobs.build: duplicate key 'build' (first at line 3)"]


def test_job_and_service_names_are_checked() -> None:
    assert problems(f"""
        jobs:
          "my job":
            image: {IMAGE}
            services:
              - {{name: db, image: {IMAGE}}}
              - {{name: db, image: {IMAGE}}}
            steps: [{{run: make}}]
    """) == [
        ".cyclone.yml:3: jobs.my job: invalid job name 'my job' (use letters, digits, '_', "
        "'.' and '-')",
        ".cyclone.yml:7: jobs.my job.services[1].name: duplicate service name 'db'",
    ]


def test_unknown_matrix_key_has_the_line_of_its_use() -> None:
    assert problems(f"""
        jobs:
          build:
            image: {IMAGE}
            matrix: {{python: ["3.11"]}}
            steps:
              - run:
                  - echo ${{{{ matrix.python }}}}
                  - echo ${{{{ matrix.pyhton }}}}
          other:
            image: "x:${{{{ matrix.python }}}}"
            steps: [{{run: make}}]
    """) == [
        ".cyclone.yml:9: jobs.build.steps[0].run[1]: unknown matrix key 'pyhton', did you "
        "mean 'python'?",
        ".cyclone.yml:11: jobs.other.image: unknown matrix key 'python' (the job has no "
        "matrix)",
    ]


def test_bad_matrix() -> None:
    assert problems(f"""
        jobs:
          build:
            image: {IMAGE}
            matrix:
              python: []
              os: [linux, linux]
              arch: amd64
            steps: [{{run: make}}]
    """) == [
        ".cyclone.yml:6: jobs.build.matrix.python: must not be empty",
        ".cyclone.yml:8: jobs.build.matrix.arch: expected a list, got a string",
    ]
    assert problems(f"""
        jobs:
          build:
            image: {IMAGE}
            matrix: {{os: [linux, linux]}}
            steps: [{{run: make}}]
    """) == [".cyclone.yml:5: jobs.build.matrix.os[1]: duplicate value 'linux'"]


def test_a_repeated_need_is_a_warning_only() -> None:
    text = dedent(f"""
        jobs:
          a: {{image: {IMAGE}, steps: [{{run: x}}]}}
          b: {{image: {IMAGE}, needs: [a, a], steps: [{{run: x}}]}}
    """)
    assert [str(d) for d in lint(text, FILE)] == [
        ".cyclone.yml:4: warning: jobs.b.needs: job 'a' is listed twice"]
    assert load(text, FILE).plan.job("b").needs == ("a",)


def test_several_errors_reported_at_once_errors_first() -> None:
    text = dedent(f"""
        jobs:
          build:
            image: {IMAGE}
            steps:
              - run: make
                retry: x
          test:
            image: {IMAGE}
            needs: [biuld, build, build]
            steps: []
          deploy:
            needs: [test]
            steps: [{{run: deploy}}]
    """)
    expected = [
        ".cyclone.yml:7: jobs.build.steps[0].retry: expected an integer, got a string",
        ".cyclone.yml:10: jobs.test.needs: unknown job 'biuld', did you mean 'build'?",
        ".cyclone.yml:11: jobs.test.steps: must not be empty",
        ".cyclone.yml:12: jobs.deploy: missing required key 'image' (step 'step-1' has no "
        "image of its own)",
        ".cyclone.yml:10: warning: jobs.test.needs: job 'build' is listed twice",
    ]
    assert [str(d) for d in lint(text, FILE)] == expected
    with pytest.raises(PipelineError) as caught:
        load(text, FILE)
    assert [str(d) for d in caught.value.diagnostics] == expected
    assert str(caught.value) == "\n".join(expected)


def test_diagnostics_carry_column_path_and_severity() -> None:
    (diagnostic,) = lint(dedent(f"""
        jobs:
          test:
            image: {IMAGE}
            needs: [biuld]
            steps: [{{run: x}}]
    """), "ci/.cyclone.yml")
    assert diagnostic == Diagnostic(
        file="ci/.cyclone.yml", line=5, column=13, path="jobs.test.needs",
        message="unknown job 'biuld'", severity="error")


@pytest.mark.parametrize(("file", "text", "expected"), [
    ("caicloud.yml", "jobs: {}", "caicloud"),
    ("sub/dir/caicloud.yaml", "", "caicloud"),
    (".cyclone.yml", "integration: {image: x, commands: [y]}", "caicloud"),
    (".cyclone.yml", "integration: {image: x\n", "caicloud"),  # broken, still recognised
    (".cyclone.yml", "jobs: {}\nbuild: {}", "cyclone"),
    (".cyclone.yml", "jobs: {", "cyclone"),
    ("pipeline.yml", "", "cyclone"),
])
def test_detect_format(file: str, text: str, expected: str) -> None:
    assert detect_format(text, file) == expected


def test_a_key_that_reads_like_an_internal_tag_is_reported_not_a_crash() -> None:
    # pydantic names a union's members in an error's location ("<string>", "<mapping>"):
    # a key written that way must still be the key reported (the fuzzer found a crash)
    found = lint('pre_build: {"<string>": 1, image: x, commands: ["true"]}\n', "caicloud.yml")
    assert [d.message for d in found] == ["unknown key '<string>'"]
    found = lint('jobs:\n  a:\n    "<mapping>": 1\n    steps: [{run: x, image: y}]\n',
                 ".cyclone.yml")
    assert [d.message for d in found] == ["unknown key '<mapping>'"]
