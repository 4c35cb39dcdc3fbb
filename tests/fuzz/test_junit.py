"""``parse_junit`` over arbitrary bytes and over the real samples cut or spliced anywhere:
it returns a ``Report`` (a bad file is a warning naming it, never an exception), and the
report's event and results blob can always be made and read back."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from shared.reports import cases_from_json, parse_junit
from tests.fuzz.budget import examples

SAMPLES = [p.read_bytes() for p in sorted((Path(__file__).parent.parent / "fixtures" / "junit")
                                          .rglob("*.xml"))]
FRAGMENTS = [b"<testcase", b"</testcase>", b"<failure message='", b"<skipped/>", b"time='x'",
             b"<testsuite>", b"</testsuites>", b"<!DOCTYPE x>", b"&amp;", b"&bogus;", b"\x00",
             b"\xe9", b"]]>", b"<![CDATA["]


@st.composite
def mangled_samples(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(SAMPLES))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        cut = draw(st.integers(0, 40))
        insert = draw(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=8)))
        data = data[:at] + insert + data[at + cut:]
    return data


def check(content: bytes) -> None:
    report = parse_junit([("r.xml", content)])
    assert len(report.files) + len(report.warnings) == 1
    assert all(w.startswith("r.xml: ") for w in report.warnings)
    event = report.event("job", "sha256:0")
    assert event.tests == len(report.cases)
    assert event.passed + event.failed + event.errors + event.skipped == event.tests
    assert cases_from_json(report.results_json()) == report.cases


@examples(200)
@given(mangled_samples())
def test_mangled_samples(content: bytes) -> None:
    check(content)


@examples(100)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(content: bytes) -> None:
    check(content)
