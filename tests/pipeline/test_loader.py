"""YAML parsing with places, and durations: the pieces under the linter."""

from __future__ import annotations

import pytest

from shared.pipeline.duration import parse_duration
from shared.pipeline.loader import format_path, parse


def messages(text: str) -> list[str]:
    return [str(d) for d in parse(text, "f.yml").diagnostics]


def test_marks_of_keys_and_values() -> None:
    result = parse("jobs:\n  build:\n    needs: [a, bb]\n    steps:\n      - run: x\n", "f")
    assert result.diagnostics == [] and result.document is not None
    marks = result.document.marks
    assert marks.keys[("jobs", "build", "needs")] == (3, 5)
    assert marks.values[("jobs", "build", "needs", 1)] == (3, 16)
    # a block value is reported at its key, a value on its key's line at the value
    assert marks.locate(("jobs", "build", "steps")) == (4, 5)
    assert marks.locate(("jobs", "build", "steps", 0, "run")) == (5, 14)
    assert marks.locate(("jobs", "build", "steps", 0, "run"), at_key=True) == (5, 9)
    # a path below a scalar falls back to the nearest ancestor that exists
    assert marks.locate(("jobs", "build", "steps", 0, "run", 3)) == (5, 14)
    assert marks.known(("jobs", "build", "nope", 2)) == ("jobs", "build")


def test_keys_are_source_text_and_values_are_yaml_1_1() -> None:
    result = parse("on: yes\n1: 2\nempty:\nt: 2024-01-02\n", "f")
    assert result.document is not None
    data = result.document.data
    assert data["on"] is True and data["1"] == 2 and data["empty"] is None
    assert str(data["t"]) == "2024-01-02"


def test_format_path() -> None:
    assert format_path(("jobs", "build", "steps", 0, "run")) == "jobs.build.steps[0].run"
    assert format_path((0, "a")) == "[0].a"
    assert format_path(()) == ""


@pytest.mark.parametrize(("text", "expected"), [
    ("", "f.yml:1: the file is empty"),
    ("a: 1\n---\nb: 2\n", "f.yml:2: invalid YAML: expected a single document in the stream "
     "(line 1), but found another document"),
    ("a: [1, 2\n", "f.yml:2: invalid YAML: while parsing a flow sequence (line 1), "
     "expected ',' or ']', but got '<stream end>'"),
    ("a: 1\nb: \x07\n", "f.yml:2: invalid YAML: unacceptable character #x0007"),
    ("a: !!int abc\n", "f.yml:1: a: invalid value: invalid literal for int() with base 10: "
     "'abc'"),
    ("a: !secret x\n", "f.yml:1: a: invalid value: could not determine a constructor for the "
     "tag '!secret'"),
    ("? [a]\n: 1\n", "f.yml:1: a mapping key must be a plain string"),
    ("a: &x [1, *x]\n", "f.yml:1: a[1]: an alias refers to a node that contains it"),
    ("a: &x {<<: *x}\n", "f.yml:1: a: an alias refers to a node that contains it"),
    ("a: {<<: [1]}\n", "f.yml:1: a: '<<' merges only mappings"),
    ("a: 1\nb: 2\na: 3\n", "f.yml:3: a: duplicate key 'a' (first at line 1)"),
    ("[" * 2000, "f.yml: invalid YAML: nested too deeply"),
    # found by tests/fuzz: PyYAML raised IndexError / AttributeError out of the loader
    ("a: !!int\n", "f.yml:1: a: invalid value: string index out of range"),
    ("a: !!timestamp\n", "f.yml:1: a: invalid value: 'NoneType' object has no attribute "
     "'groupdict'"),
])
def test_yaml_problems(text: str, expected: str) -> None:
    assert parse(text, "f.yml").document is None
    assert messages(text) == [expected]


def test_exploding_aliases_are_stopped() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8)]
    (message,) = messages("\n".join(lines))
    assert "expands to more than 100000 nodes" in message


def test_merge_keys_explicit_keys_win() -> None:
    result = parse("base: &b {x: 1, y: 2}\nother: {<<: *b, y: 3}\n", "f")
    assert result.document is not None
    assert result.document.data["other"] == {"x": 1, "y": 3}
    assert result.document.marks.keys[("other", "y")] == (2, 17)


@pytest.mark.parametrize(("value", "seconds"), [
    (30, 30.0), (2.5, 2.5), ("45", 45.0), ("90s", 90.0), ("10m", 600.0),
    ("1h30m", 5400.0), ("1h2m3s", 3723.0), ("1.5h", 5400.0), (" 5m ", 300.0),
])
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [
    0, -1, "0s", "", "m", "10x", "1m1h", "1h1h", "nan", "inf", True, None, [1], "1 h",
])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)
