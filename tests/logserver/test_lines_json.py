"""lines_json: what every log route sends for a line is json.dumps of it, whatever the
chunk around it (the fields lines share are encoded once a chunk)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from services.logserver.http import lines_json
from shared.ports.logstore import LogLine, StoredLine

NAMES = st.sampled_from(["build", "test", "ünï", 'say "hi"', "a\\b"])
LINES = st.builds(LogLine, job=NAMES, step=NAMES, stream=st.sampled_from(["stdout", "stderr"]),
                  ts=st.sampled_from(["2026-12-04T23:30:00.1+00:00", "2026-12-04T23:30:01+00:00"]),
                  text=st.text(), attempt=st.integers(1, 3))


@given(st.integers(0, 2**62 - 1000), st.lists(LINES, max_size=30))
def test_each_line_is_what_json_dumps_gives(first: int, lines: list[LogLine]) -> None:
    chunk = [StoredLine(first + k, line) for k, line in enumerate(lines)]

    assert lines_json(chunk) == [
        json.dumps({"i": stored.index, **stored.line.to_json()}, separators=(",", ":"))
        for stored in chunk]
