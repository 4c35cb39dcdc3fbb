"""The ``cyclone.logs`` wire format: lines as column groups, and the older formats still read."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.ports.logstore import LogLine
from shared.wire import decode_log_batch, encode_log_batch

TS = "2024-05-01T12:00:00.000000+00:00"
ODD = ['say "hi"', "back\\slash", "tab\there", "ünïcödé €", "emoji 😀", "\x1b[31mred\x1b[0m",
       "", "bad byte \udcff"]


def test_a_batch_round_trips_with_every_field() -> None:
    lines = [LogLine("build", "test", "stdout", TS, text, attempt=1 + n % 3)
             for n, text in enumerate(ODD)]

    run, batch, decoded = decode_log_batch(encode_log_batch("r1", "b1", lines))

    assert (run, batch) == ("r1", "b1")
    assert decoded == lines
    assert all(type(line) is LogLine for line in decoded)


def test_lines_go_on_the_wire_as_groups_of_columns_in_their_order() -> None:
    later = "2024-05-01T12:00:01.000000+00:00"
    lines = [LogLine("build", "test", "stderr", TS, "oops"),
             LogLine("build", "test", "stderr", TS, "again"),
             LogLine("build", "test", "stderr", later, "later"),
             LogLine("build", "test", "stdout", later, "out"),
             LogLine("build", "test", "stderr", later, "retried", attempt=2)]

    raw = json.loads(encode_log_batch("r1", "b1", lines))

    assert raw == {"run": "r1", "batch": "b1", "groups": [
        ["build", "test", "stderr", 1, [[TS, 2], [later, 1]], ["oops", "again", "later"]],
        ["build", "test", "stdout", 1, [[later, 1]], ["out"]],
        ["build", "test", "stderr", 2, [[later, 1]], ["retried"]],
    ]}
    assert decode_log_batch(json.dumps(raw).encode())[2] == lines


@settings(max_examples=300, deadline=None)
@given(st.lists(st.builds(LogLine, st.sampled_from(["a", "b"]), st.sampled_from(["s", "t"]),
                          st.sampled_from(["stdout", "stderr"]), st.sampled_from([TS, "x"]),
                          st.text(), st.integers(1, 3))))
def test_any_lines_round_trip_in_order(lines: list[LogLine]) -> None:
    assert decode_log_batch(encode_log_batch("r", "b", lines)) == ("r", "b", lines)


@pytest.mark.parametrize(("groups", "says"), [
    ({"not": "an array"}, "groups is a dict"),
    ([["j", "s", "stdout", 1, [[TS, 1]]]], "group 0 is not"),
    ([["j", "s", 3, 1, [[TS, 1]], ["x"]]], "group 0: job, step and stream must be strings"),
    ([["j", "s", "stdout", "1", [[TS, 1]], ["x"]]], "attempt an integer"),
    ([["j", "s", "stdout", 1, [[TS, 1]], [7]]], "texts must be an array of strings"),
    ([["j", "s", "stdout", 1, [[TS, 0]], []]], "count above 0"),
    ([["j", "s", "stdout", 1, [[TS]], ["x"]]], "stamps must be"),
    ([["j", "s", "stdout", 1, [[TS, 1]], ["x"]], ["j", "s", "stdout", 1, [[TS, 3]], ["x"]]],
     "group 1: the stamps count 3 lines, texts has 1"),
], ids=["groups", "short", "stream", "attempt", "text", "zero", "stamp", "count"])
def test_a_malformed_group_is_refused_saying_what_is_wrong(groups: object, says: str) -> None:
    raw = {"run": "r1", "batch": "b1", "groups": groups}

    with pytest.raises(ValueError, match=says):
        decode_log_batch(json.dumps(raw).encode())


def test_a_batch_of_arrays_the_previous_format_is_still_read() -> None:
    raw = {"run": "r1", "batch": "b1", "lines": [["build", "test", "stderr", TS, "oops", 2]]}

    assert decode_log_batch(json.dumps(raw).encode())[2] == [
        LogLine("build", "test", "stderr", TS, "oops", attempt=2)]


def test_a_batch_in_the_older_object_format_is_still_read() -> None:
    # What encode_log_batch wrote before lines became arrays: a message of that version
    # may still be on the bus while the log server is upgraded.
    old = (b'{"run":"r1","batch":"b1","lines":['
           b'{"job":"build","step":"test","stream":"stdout","ts":"' + TS.encode() + b'",'
           b'"text":"first \\u00fc"},'
           b'{"job":"build","step":"test","stream":"stderr","ts":"' + TS.encode() + b'",'
           b'"text":"second","attempt":2}]}')

    run, batch, lines = decode_log_batch(old)

    assert (run, batch) == ("r1", "b1")
    assert lines == [LogLine("build", "test", "stdout", TS, "first ü"),
                     LogLine("build", "test", "stderr", TS, "second", attempt=2)]


def test_both_formats_mixed_in_one_batch_are_read_in_order() -> None:
    raw = {"run": "r1", "batch": "b1", "lines": [
        ["j", "s", "stdout", TS, "a", 1],
        {"job": "j", "step": "s", "stream": "stdout", "ts": TS, "text": "b"},
        ["j", "s", "stdout", TS, "c", 3],
    ]}

    _, _, lines = decode_log_batch(json.dumps(raw).encode())

    assert [(line.text, line.attempt) for line in lines] == [("a", 1), ("b", 1), ("c", 3)]


def test_an_array_with_other_scalar_types_is_converted_as_an_object_would_be() -> None:
    raw = {"run": "r1", "batch": "b1", "lines": [["j", "s", "stdout", TS, 42, "2"]]}

    _, _, lines = decode_log_batch(json.dumps(raw).encode())

    assert lines == [LogLine("j", "s", "stdout", TS, "42", attempt=2)]
    assert type(lines[0].text) is str and type(lines[0].attempt) is int


@pytest.mark.parametrize("line", [
    ["j", "s", "stdout", TS, "five fields"],
    ["j", "s", "stdout", TS, "seven", 1, "fields"],
    ["j", "s", "stdout", TS, ["nested"], 1],
    ["j", "s", "stdout", TS, None, 1],
    "a string",
    7,
], ids=["short", "long", "nested", "null", "string", "number"])
def test_a_line_of_neither_shape_is_refused(line: object) -> None:
    raw = {"run": "r1", "batch": "b1", "lines": [line]}

    with pytest.raises(ValueError, match="neither"):
        decode_log_batch(json.dumps(raw).encode())


def test_an_object_line_without_a_field_is_refused() -> None:
    raw = {"run": "r1", "batch": "b1", "lines": [{"job": "j", "step": "s", "text": "x"}]}

    with pytest.raises(KeyError):
        decode_log_batch(json.dumps(raw).encode())
