"""The ``cyclone.logs`` wire format: lines as arrays, and the older object format still read."""

from __future__ import annotations

import json

import pytest

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


def test_a_line_goes_on_the_wire_as_an_array_of_its_six_fields() -> None:
    line = LogLine("build", "test", "stderr", TS, "oops")

    raw = json.loads(encode_log_batch("r1", "b1", [line, line._replace(attempt=2)]))

    assert raw == {"run": "r1", "batch": "b1", "lines": [
        ["build", "test", "stderr", TS, "oops", 1],
        ["build", "test", "stderr", TS, "oops", 2],
    ]}


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
