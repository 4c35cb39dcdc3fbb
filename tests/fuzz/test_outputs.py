"""Fuzzing the ``$CYCLONE_OUTPUT`` parser: whatever a step writes, outputs never raise,
every value kept is under a valid name, and a well-formed file reads back exactly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.outputs import KEY, parse_outputs
from tests.fuzz.budget import examples

names = st.from_regex(KEY, fullmatch=True)
# what str.splitlines() splits at, and surrogates (a step writes UTF-8)
_BREAKS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
values = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters=_BREAKS),
                 max_size=40)


@examples(300)
@given(st.binary(max_size=2000))
def test_any_bytes_parse_without_raising(raw: bytes) -> None:
    parsed = parse_outputs(raw)
    assert all(KEY.fullmatch(key) for key in parsed.values)


@examples(200)
@given(st.dictionaries(names, values, max_size=10),
       st.dictionaries(names, st.lists(values, min_size=1, max_size=4), max_size=3))
def test_written_outputs_read_back(single: dict[str, str], multi: dict[str, list[str]]) -> None:
    lines = [f"{k}={v}" for k, v in single.items()]
    for key, value_lines in multi.items():
        delimiter = "END_OF_VALUE_7f3a"
        lines += [f"{key}<<{delimiter}", *value_lines, delimiter]
    parsed = parse_outputs("\n".join(lines).encode())
    expected = {**single, **{k: "\n".join(v) for k, v in multi.items()}}
    assert parsed.values == expected
    assert parsed.problems == ()
