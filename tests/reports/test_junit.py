"""``shared.reports.junit`` on reports real tools wrote (tests/fixtures/junit, made by
scripts/make-junit-samples.sh), on the variants they do not show, and on files that are
no report at all: those are warnings naming the file, never an exception."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from shared import events as ev
from shared.reports import MAX_REPORT_BYTES, Report, TestCase, cases_from_json, parse_junit
from shared.reports.junit import EVENT_MESSAGE_BYTES, MAX_MESSAGE_BYTES

SAMPLES = Path(__file__).parent.parent / "fixtures" / "junit"


def sample(name: str) -> tuple[str, bytes]:
    return (f"reports/{name}", (SAMPLES / name).read_bytes())


def outcomes(report: Report) -> dict[str, str]:
    return {case.id: case.outcome for case in report.cases}


def test_pytest_report_with_a_testsuites_root() -> None:
    report = parse_junit([sample("pytest.xml")])
    assert report.warnings == () and report.files == ("reports/pytest.xml",)
    assert outcomes(report) == {
        "test_sample.test_adds": "passed",
        "test_sample.test_even[1]": "failed",
        "test_sample.test_even[2]": "passed",
        "test_sample.test_uses_broken": "error",
        "test_sample.test_skipped": "skipped",
        "test_sample.test_known_bug": "skipped",  # xfail
        "test_sample.test_fails_then_teardown_errors": "error",
    }
    by_id = {case.id: case for case in report.cases}
    assert by_id["test_sample.test_even[1]"].message.startswith("AssertionError: 1 is odd")
    assert by_id["test_sample.test_even[1]"].duration_s == pytest.approx(0.002)
    assert by_id["test_sample.test_skipped"].message.startswith("needs a GPU")
    assert all(case.file == "reports/pytest.xml" for case in report.cases)


def test_a_test_pytest_writes_twice_is_one_case_with_both_messages() -> None:
    """pytest writes a failed call and its failed teardown as two ``<testcase>``s of one
    name: one test, which errored, whose message tells both."""
    report = parse_junit([sample("pytest.xml")])
    [case] = [c for c in report.cases if c.name == "test_fails_then_teardown_errors"]
    assert case.outcome == "error"
    assert "assert 'abc' == 'abd'" in case.message
    assert "teardown left a file behind" in case.message


def test_surefire_junit5_report_with_a_testsuite_root() -> None:
    report = parse_junit([sample("surefire/TEST-example.CalculatorTest.xml")])
    assert report.warnings == ()
    assert outcomes(report) == {
        "example.CalculatorTest.adds": "passed",
        "example.CalculatorTest.divides": "failed",
        "example.CalculatorTest.throwsUnexpectedly": "error",
        "example.CalculatorTest.multiplies": "skipped",
    }
    by_name = {case.name: case for case in report.cases}
    assert by_name["divides"].message.startswith("7 / 2 is not 4 ==> expected: <4> but was: <3>")
    assert "org.opentest4j.AssertionFailedError" in by_name["divides"].message
    assert by_name["throwsUnexpectedly"].duration_s == pytest.approx(0.047)


def test_gotestsum_report_with_subtests() -> None:
    report = parse_junit([sample("gotestsum.xml")])
    assert report.warnings == ()
    assert outcomes(report) == {
        "example.com/sample.TestAdds": "passed",
        "example.com/sample.TestDivides": "failed",
        "example.com/sample.TestSkipped": "skipped",
        "example.com/sample.TestTable": "failed",
        "example.com/sample.TestTable/even": "passed",
        "example.com/sample.TestTable/even#01": "failed",
    }
    by_name = {case.name: case for case in report.cases}
    assert "7 / 2 = 3, want 4" in by_name["TestDivides"].message
    # gotestsum rounds to the millisecond: these took no measurable time, so none is slow
    assert report.slowest() == ()


def test_several_results_in_one_testcase_take_the_worst() -> None:
    xml = b"""<testsuite name="s">
      <testcase classname="c" name="failed_and_errored">
        <failure message="boom">trace 1</failure><error message="and then">trace 2</error>
      </testcase>
      <testcase classname="c" name="skipped_then_failed">
        <skipped message="flaky env"/><failure message="it ran anyway"/>
      </testcase>
      <testcase classname="c" name="two_skips"><skipped message="a"/><skipped/></testcase>
    </testsuite>"""
    cases = {c.name: c for c in parse_junit([("r.xml", xml)]).cases}
    assert cases["failed_and_errored"].outcome == "error"
    assert cases["failed_and_errored"].message == "boom\ntrace 1\n\nand then\ntrace 2"
    assert cases["skipped_then_failed"].outcome == "failed"
    assert cases["skipped_then_failed"].message == "it ran anyway"  # not the skip's reason
    assert cases["two_skips"].outcome == "skipped" and cases["two_skips"].message == "a"


def test_missing_or_bad_durations_are_zero_and_nested_suites_are_read() -> None:
    xml = b"""<testsuites><testsuite name="outer">
      <testcase classname="c" name="no_time"/>
      <testcase classname="c" name="bad_time" time="soon"/>
      <testcase classname="c" name="negative" time="-1"/>
      <testcase classname="c" name="thousands" time="1,234.5"/>
      <testsuite name="inner"><testcase name="no_class" time="0.25"/></testsuite>
    </testsuite></testsuites>"""
    report = parse_junit([("r.xml", xml)])
    assert report.warnings == ()
    assert {c.id: c.duration_s for c in report.cases} == {
        "c.no_time": 0.0, "c.bad_time": 0.0, "c.negative": 0.0, "c.thousands": 1234.5,
        "no_class": 0.25}


@pytest.mark.parametrize(("content", "said"), [
    (b"<testsuite><testcase name='x'>", "not well-formed XML"),
    (b"", "not well-formed XML"),
    (b"\xff\xfe garbage", "not well-formed XML"),
    (b"<html><body>502 Bad Gateway</body></html>", "not a JUnit report: its root element is <html>"),
    (b'<?xml version="1.0"?><!DOCTYPE testsuite SYSTEM "file:///etc/passwd"><testsuite/>',
     "refused: it has a DTD"),
])
def test_a_malformed_file_is_a_warning_and_the_others_are_read(content: bytes, said: str) -> None:
    report = parse_junit([("reports/bad.xml", content), sample("pytest.xml")])
    assert report.files == ("reports/pytest.xml",)
    assert len(report.cases) == 7
    [warning] = report.warnings
    assert warning.startswith("reports/bad.xml: ") and said in warning


def test_billion_laughs_is_refused_before_any_entity_is_expanded() -> None:
    entities = "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10))
    bomb = (f'<?xml version="1.0"?><!DOCTYPE testsuite [<!ENTITY l0 "lol">{entities}]>'
            '<testsuite><testcase name="&l9;"/></testsuite>').encode()
    started = time.monotonic()
    report = parse_junit([("bomb.xml", bomb)])
    assert time.monotonic() - started < 1
    assert report.cases == ()
    [warning] = report.warnings
    assert warning.startswith("bomb.xml: refused: it has a DTD")


def test_a_report_over_the_size_limit_is_skipped_unread() -> None:
    huge = b"<testsuite>" + b" " * MAX_REPORT_BYTES + b"</testsuite>"
    [warning] = parse_junit([("huge.xml", huge)]).warnings
    assert warning == (f"huge.xml: skipped: {len(huge)} bytes is over the limit of "
                       f"{MAX_REPORT_BYTES} bytes for one report")


def test_messages_are_cut_without_splitting_a_character() -> None:
    text = "é" * MAX_MESSAGE_BYTES  # two bytes each
    xml = f'<testsuite><testcase name="t"><failure message="{text}"/></testcase></testsuite>'
    [case] = parse_junit([("r.xml", xml.encode())]).cases
    assert case.message == "é" * (MAX_MESSAGE_BYTES // 2)


def many_cases(n: int) -> bytes:
    cases = "".join(f'<testcase classname="c" name="t{i}" time="{i / 100}">'
                    f'<failure message="{"x" * 3000}"/></testcase>' for i in range(n))
    return f"<testsuite>{cases}<testcase name='ok'/></testsuite>".encode()


def test_the_event_counts_everything_and_carries_the_first_failures_and_the_slowest() -> None:
    report = parse_junit([("r.xml", many_cases(150)), ("bad.xml", b"nope")])
    event = report.event("test", "sha256:abc")
    assert isinstance(event, ev.TestReportRecorded)
    assert (event.job, event.results_digest) == ("test", "sha256:abc")
    assert (event.tests, event.passed, event.failed, event.errors, event.skipped) == (
        151, 1, 150, 0, 0)
    assert event.duration_s == pytest.approx(sum(i / 100 for i in range(150)))
    assert len(event.failures) == 100
    assert dict(event.failures[0]) == {"name": "t0", "classname": "c", "file": "r.xml",
                                       "message": "x" * EVENT_MESSAGE_BYTES}
    assert [s["name"] for s in event.slowest] == [f"t{i}" for i in range(149, 139, -1)]
    assert dict(event.slowest[0]) == {"name": "t149", "classname": "c", "duration_s": 1.49}
    assert event.files == ("r.xml",)
    assert event.warnings[0].startswith("bad.xml: not well-formed XML")
    # what the event is on the bus stays well under Kafka's 1 MB
    assert len(json.dumps(event.to_data())) < 200_000


def test_results_json_holds_every_case_and_reads_back() -> None:
    report = parse_junit([sample("pytest.xml"), sample("gotestsum.xml"),
                          sample("surefire/TEST-example.CalculatorTest.xml")])
    assert cases_from_json(report.results_json()) == report.cases
    assert len(json.loads(report.results_json())["cases"]) == 17


def test_an_empty_report_is_no_error() -> None:
    report = parse_junit([])
    event = report.event("test", "")
    assert (event.tests, event.failures, event.slowest) == (0, (), ())
    assert cases_from_json(report.results_json()) == ()


@pytest.mark.parametrize("blob", [b"[]", b'{"version": 2, "cases": []}',
                                  b'{"version": 1, "cases": [{"name": "x"}]}', b"\x00"])
def test_a_blob_that_is_no_results_is_a_value_error(blob: bytes) -> None:
    with pytest.raises(ValueError):
        cases_from_json(blob)


def test_case_id_is_classname_dot_name() -> None:
    case = TestCase(name="t", classname="pkg.C", outcome="passed", duration_s=0.0, message="",
                    file="r.xml")
    assert case.id == "pkg.C.t"
    assert TestCase(name="t", classname="", outcome="passed", duration_s=0.0, message="",
                    file="r.xml").id == "t"
