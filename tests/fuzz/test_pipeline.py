"""The pipeline loader and linter, both formats, over arbitrary text and arbitrary
structures: ``lint`` returns diagnostics placed in the file, ``load`` a plan or a
``PipelineError`` carrying them; nothing else ever escapes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import PipelineError
from shared.pipeline import lint, load
from shared.pipeline.diagnostics import Diagnostic
from tests.fuzz.budget import examples

FIXTURES = Path(__file__).parent.parent / "pipeline" / "fixtures"
SEEDS = [p.read_text() for p in sorted(FIXTURES.glob("*.yml"))]
# What YAML counts as a line break (so do the diagnostics' line numbers).
LINE_BREAKS = re.compile("\r\n|[\n\r\x85\u2028\u2029]")
FILES = st.sampled_from([".cyclone.yml", "caicloud.yml", "ci/pipeline.yaml"])
# Pieces of YAML syntax and of both formats' vocabulary, so that random text often
# parses and reaches the linter instead of stopping at the YAML reader.
PIECES = [" ", ":", "- ", "\n", "  ", "[", "]", "{", "}", ",", "'", '"', "#", "&a ", "*a",
          "<<: *a", "!!int ", "!!binary ", "|", ">", "~", "null", "true", "1e9", "-1",
          "jobs:", "steps:", "run:", "image:", "needs:", "on:", "push:", "branches:",
          "matrix:", "services:", "when:", "notify:", "timeout:", "retry:", "env:",
          "pre_build:", "build:", "post_build:", "integration:", "deploy:", "commands:",
          "${{ matrix.x }}", "${X}", "BUILT_IMAGE", "\x00", "\ufeff", "\u00e9", "\t",
          "registries:", "promote:", "docker:", "kubernetes:", "approval:", "tags:", "push:",
          "${{ images.app }}", "${CYCLONE_SHORT_SHA}", "127.0.0.1:5000/a/b:c"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True), st.text(max_size=20),
                    st.sampled_from(["main", "v*", "90s", "-1s", "make", "always", "a b"]))
KEYS = ["image", "steps", "run", "name", "needs", "services", "env", "when", "matrix",
        "timeout", "retry", "on", "push", "pull_request", "branches", "tags", "paths",
        "commands", "environment", "links", "context_dir", "dockerfile_name", "type",
        "notify", "email", "webhook", "include", "exclude", "cron", "manual", "build",
        "promote", "deploy", "docker", "kubernetes", "approval", "role", "tags", "push",
        "container", "ports", "deployment", "registries", "username", "password"]
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)), max_leaves=25)
# a step of each kind, its body arbitrary: the delivery keys' models reached more often
delivery_steps = st.lists(st.fixed_dictionaries({}, optional={
    k: values for k in ("name", "run", "build", "promote", "deploy", "image")}), max_size=3)
jobs = st.dictionaries(st.text(min_size=1, max_size=10), st.one_of(
    values, st.fixed_dictionaries({"image": scalars, "steps": values | delivery_steps},
                                  optional={k: values for k in (*KEYS[3:12], "environment",
                                                                "approval")})), max_size=4)
cyclone = st.fixed_dictionaries({"jobs": jobs}, optional={
    "on": values, "env": values, "notify": values, "junk": values, "registries": values})
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


@examples(200)
@given(caicloud)
def test_structured_caicloud_files(document: dict[str, Any]) -> None:
    _check(_dump(document), "caicloud.yml")
