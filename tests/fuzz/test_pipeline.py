"""The pipeline loader and linter, both formats, over arbitrary text and arbitrary
structures (``stages:`` and ``--set`` overrides among them): ``lint`` returns
diagnostics placed in the file (or at the ``--set``), ``load`` a plan or a
``PipelineError`` carrying them; nothing else ever escapes. With ``include:``, over
arbitrary trees of included files (cycles, failures, junk): ``resolve`` ends, and each
diagnostic is placed in one of the files read."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import IncludeError, PipelineError
from shared.pipeline import load
from shared.pipeline.diagnostics import Diagnostic
from shared.pipeline.include import IncludedFile, Key, display, resolve
from shared.pipeline.lint import lint
from tests.fuzz.budget import examples

FIXTURES = Path(__file__).parent.parent / "pipeline" / "fixtures"
SEEDS = [p.read_text() for p in sorted(FIXTURES.glob("*.yml"))]
# What YAML counts as a line break (so do the diagnostics' line numbers).
LINE_BREAKS = re.compile("\r\n|[\n\r\x85\u2028\u2029]")
FILES = st.sampled_from([".cyclone.yml", "caicloud.yml", "ci/pipeline.yaml"])
FILE_NAME = ".cyclone.yml"
# Pieces of YAML syntax and of both formats' vocabulary, so that random text often
# parses and reaches the linter instead of stopping at the YAML reader.
PIECES = [" ", ":", "- ", "\n", "  ", "[", "]", "{", "}", ",", "'", '"', "#", "&a ", "*a",
          "<<: *a", "!!int ", "!!binary ", "|", ">", "~", "null", "true", "1e9", "-1",
          "jobs:", "steps:", "run:", "image:", "needs:", "on:", "push:", "branches:",
          "matrix:", "services:", "when:", "notify:", "timeout:", "retry:", "env:",
          "pre_build:", "build:", "post_build:", "integration:", "deploy:", "commands:",
          "${{ matrix.x }}", "${X}", "BUILT_IMAGE", "\x00", "\ufeff", "\u00e9", "\t",
          "registries:", "promote:", "docker:", "kubernetes:", "approval:", "tags:", "push:",
          "${{ images.app }}", "${CYCLONE_SHORT_SHA}", "127.0.0.1:5000/a/b:c",
          "include:", "file:", "project:", "ref:", "a.yml", "ci/b.yml", "v1",
          "stages:", "stage:", "[build, test]", "stage: test"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True), st.text(max_size=20),
                    st.sampled_from(["main", "v*", "90s", "-1s", "make", "always", "a b"]))
KEYS = ["image", "steps", "run", "name", "needs", "services", "env", "when", "matrix",
        "timeout", "retry", "on", "push", "pull_request", "branches", "tags", "paths",
        "commands", "environment", "links", "context_dir", "dockerfile_name", "type",
        "notify", "email", "webhook", "include", "exclude", "cron", "manual", "build",
        "promote", "deploy", "docker", "kubernetes", "approval", "role", "tags", "push",
        "container", "ports", "deployment", "registries", "username", "password", "stages",
        "stage"]
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)), max_leaves=25)
# a step of each kind, its body arbitrary: the delivery keys' models reached more often
delivery_steps = st.lists(st.fixed_dictionaries({}, optional={
    k: values for k in ("name", "run", "build", "promote", "deploy", "image")}), max_size=3)
jobs = st.dictionaries(st.text(min_size=1, max_size=10), st.one_of(
    values, st.fixed_dictionaries({"image": scalars, "steps": values | delivery_steps},
                                  optional={k: values for k in (*KEYS[3:12], "environment",
                                                                "approval", "stage")})),
    max_size=4)
# include entries: mostly well-formed, naming a few files of two sources, so that trees,
# diamonds, clashes and cycles form; sometimes anything
INCLUDED = ["a.yml", "ci/b.yml", "./c.yaml", "../x.yml", "d.txt"]
ORIGINS = [("", ""), ("shared", "v1")]  # the run's own source, and another project's
entries = st.one_of(
    st.sampled_from([*INCLUDED, {"project": "shared", "ref": "v1", "file": "a.yml"},
                     {"project": "shared", "ref": "v1", "file": "ci/b.yml"}]),
    st.fixed_dictionaries({"file": st.sampled_from(INCLUDED)}, optional={
        "project": st.sampled_from(["shared", "app", ""]),
        "ref": st.sampled_from(["v1", "refs/heads/main", "c" * 40, "a b"])}),
    values)
includes = st.one_of(entries, st.lists(entries, max_size=4))
STAGES = ["build", "test", "deploy"]
stage_lists = st.lists(st.sampled_from(STAGES) | st.text(max_size=4), max_size=4) | values
cyclone = st.fixed_dictionaries({"jobs": jobs}, optional={
    "on": values, "env": values, "notify": values, "junk": values, "registries": values,
    "include": includes, "stages": stage_lists})
# jobs in stages (mostly known ones), with needs among them: stage order and needs meet
staged_jobs = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.fixed_dictionaries(
    {"image": st.just("x"), "steps": st.just([{"run": "make"}])},
    optional={"stage": st.sampled_from([*STAGES, "qa"]),
              "needs": st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=2)}),
    max_size=4)
# --set: paths into what the files hold (or not), values as YAML flow text (or junk)
set_paths = st.lists(st.sampled_from(["jobs", "a", "b", "steps", "0", "1", "image", "run",
                                      "stage", "stages", "needs", "env", "include", "[0]",
                                      '"a"', ""]) | st.text(max_size=4),
                     min_size=0, max_size=5).map(".".join)
set_values = st.one_of(st.sampled_from(["x", "3", "[make]", "{run: [make]}", "", "[", "null",
                                        "test", "[a, b]", "{a: *x}"]), st.text(max_size=8))
overrides = st.lists(st.tuples(set_paths, st.sampled_from(["=", ""]), set_values).map(
    "".join), max_size=3)
good_jobs = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.fixed_dictionaries(
    {"image": st.just("x"), "steps": st.just([{"run": "make"}])},
    optional={"needs": st.sampled_from(["a", "b", "c"])}), max_size=2)
# an included file: jobs, include, and sometimes what only the pipeline file may hold
included = st.fixed_dictionaries({}, optional={"jobs": good_jobs | jobs, "include": includes,
                                               "on": values, "x-a": values})
# what each file of each source holds: mostly an included file, else junk or nothing
# (None: its fetch fails)
included_files = st.fixed_dictionaries({
    (*origin, file): st.one_of(*[included.map(lambda d: _dump(d))] * 3, st.text(max_size=30),
                               st.none())
    for origin in ORIGINS for file in ("a.yml", "ci/b.yml", "c.yaml")})
caicloud = st.fixed_dictionaries({}, optional={
    section: values for section in ("pre_build", "build", "post_build", "integration",
                                    "deploy")})


def _check(text: str, file: str) -> None:
    lines = len(LINE_BREAKS.split(text))
    found = lint(text, file)
    # line 0: a problem with no place in the file (Diagnostic's docstring)
    assert all(isinstance(d, Diagnostic) and 0 <= d.line <= lines and d.file == file
               for d in found), found
    try:
        result = load(text, file)
    except PipelineError as exc:
        assert exc.diagnostics and exc.diagnostics[0].severity == "error", exc
        return
    assert all(d.severity == "warning" for d in result.warnings)
    assert [d for d in found if d.severity == "error"] == []


@examples(150)
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=6), max_size=40), FILES)
def test_yaml_ish_text(pieces: list[str], file: str) -> None:
    _check("".join(pieces), file)


@examples(150)
@given(st.sampled_from(SEEDS), st.data(), FILES)
def test_mutated_fixtures(seed: str, data: st.DataObject, file: str) -> None:
    text = seed
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 12))
        text = text[:at] + data.draw(st.sampled_from(PIECES) | st.text(max_size=4)) + \
            text[at + cut:]
    _check(text, file)


def _dump(document: Any) -> str:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


@examples(120)  # the slowest per example: big documents reach the compiler
@given(cyclone, st.sampled_from([".cyclone.yml", "pipeline.yml"]))
def test_structured_cyclone_files(document: dict[str, Any], file: str) -> None:
    _check(_dump(document), file)


@examples(100)
@given(st.fixed_dictionaries({"jobs": staged_jobs}, optional={"stages": stage_lists}))
def test_structured_stages(document: dict[str, Any]) -> None:
    _check(_dump(document), FILE_NAME)


@examples(100)
@given(cyclone | st.fixed_dictionaries({"jobs": staged_jobs, "stages": stage_lists}),
       overrides, st.sampled_from([".cyclone.yml", "caicloud.yml"]))
def test_overrides_over_structured_files(document: dict[str, Any], sets: list[str],
                                         file: str) -> None:
    """Any --set over any file: every problem is in the file, at one of its lines, or
    at one of the --set given (line 0); only PipelineError escapes load."""
    text = _dump(document)
    found = lint(text, file, overrides=sets)
    lines = len(LINE_BREAKS.split(text))
    places = {file, *(f"--set {written}" for written in sets)}
    assert all(d.file in places and 0 <= d.line <= (lines if d.file == file else 0)
               for d in found), found
    try:
        result = load(text, file, overrides=sets)
    except PipelineError as exc:
        assert exc.diagnostics and exc.diagnostics[0].severity == "error", exc
        return
    assert all(d.severity == "warning" for d in result.warnings)
    assert [d for d in found if d.severity == "error"] == []


@examples(200)
@given(caicloud)
def test_structured_caicloud_files(document: dict[str, Any]) -> None:
    _check(_dump(document), "caicloud.yml")


@examples(80)
@given(st.fixed_dictionaries({"include": includes}, optional={"jobs": good_jobs | jobs}),
       included_files)
def test_structured_includes(document: dict[str, Any],
                             files: dict[Key, str | None]) -> None:
    """A root with include:, over files that include each other (or hold junk, or
    cannot be fetched): every diagnostic is in one of the files read, at a line of it."""

    async def fetch(key: Key) -> IncludedFile:
        content = files.get(key)
        if content is None:
            raise IncludeError(f"no {display(key)}")
        return IncludedFile.read(key, "c" * 40, content)

    text = _dump(document)
    records = asyncio.run(resolve(text, FILE_NAME, fetch))
    texts = {FILE_NAME: text, **{r.display: r.content for r in records}}
    found = lint(text, FILE_NAME, includes=records)
    assert all(d.file in texts and 0 <= d.line <= len(LINE_BREAKS.split(texts[d.file]))
               for d in found), found
    try:
        load(text, FILE_NAME, includes=records)
    except PipelineError as exc:
        assert exc.diagnostics and exc.diagnostics[0].severity == "error", exc
        return
    assert [d for d in found if d.severity == "error"] == []
