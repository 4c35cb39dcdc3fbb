"""The streaming masker: its output never depends on where the text was cut, and no
secret survives it."""

from __future__ import annotations

import itertools
import re

from hypothesis import given
from hypothesis import strategies as st

from shared.masking import MASK, Masker, mask, secret_forms

# A small alphabet makes overlaps, repeats and prefixes of secrets common.
TEXT = st.text(alphabet="abcd\n x", max_size=60)
VALUE = st.text(alphabet="abcd\nx", min_size=1, max_size=10)


@st.composite
def stream(draw: st.DrawFn) -> tuple[list[str], str, list[int]]:
    values = draw(st.lists(VALUE, min_size=0, max_size=4))
    parts = draw(st.lists(st.one_of(TEXT, st.sampled_from(values or ["x"])), max_size=8))
    text = "".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=6)))
    return values, text, cuts


def _chunks(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def _reference(text: str, values: list[str]) -> str:
    forms = secret_forms(values)
    return re.sub("|".join(map(re.escape, forms)), MASK, text) if forms else text


@given(stream())
def test_chunking_changes_nothing(case: tuple[list[str], str, list[int]]) -> None:
    values, text, cuts = case
    masker = Masker(values)
    streamed = "".join(masker.feed(chunk) for chunk in _chunks(text, cuts)) + masker.flush()
    assert streamed == _reference(text, values) == mask(text, values)


@given(stream())
def test_no_form_survives(case: tuple[list[str], str, list[int]]) -> None:
    values, text, cuts = case
    masker = Masker(values)
    streamed = "".join(masker.feed(chunk) for chunk in _chunks(text, cuts)) + masker.flush()
    for form in secret_forms(values):  # forms hold no "*": "***" cannot make one
        assert form not in streamed


@given(st.lists(VALUE, max_size=4), st.lists(st.text(alphabet="abcdx ", max_size=20),
                                             max_size=6))
def test_a_line_comes_out_whole_at_its_newline(values: list[str], lines: list[str]) -> None:
    """Text fed up to a newline is never held back: the worker passes each line on at once."""
    masker = Masker(values)
    for line in lines:
        assert masker.feed(line + "\n") == mask(line, values) + "\n"


def test_forms() -> None:
    assert secret_forms(["abc", "s3cr3t", "line one\r\nab\nline three"]) == (
        "line three", "line one", "s3cr3t")


def test_examples() -> None:
    values = ["hunter22", "-----BEGIN KEY-----\nAAAABBBB\n-----END KEY-----"]
    masker = Masker(values)
    assert masker.feed("pass: hun") == "pass: "  # "hun" may begin the secret
    assert masker.feed("ter22 ok\n") == "*** ok\n"
    assert masker.feed("-----BEGIN KEY-----\nAAAABBBB\n") == "***\n***\n"
    assert masker.feed("hunt") == ""
    assert masker.flush() == "hunt"
    assert mask("aGVsbG8= is base64", ["hello"]) == "aGVsbG8= is base64"  # documented
