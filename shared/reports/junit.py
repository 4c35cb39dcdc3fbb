"""JUnit XML reports: what the files a job's ``reports: {junit: [...]}`` matched say.

``parse_junit(files)`` turns ``(path, content)`` pairs into a ``Report``: every test case
with its outcome, duration and message. It is pure and never raises for a bad file: a
file that is too big, not well-formed XML or not JUnit is left out with a warning that
names it (a malformed report fails no run). ``Report.event`` is the run's
``TestReportRecorded`` (counts, the first failures, the slowest tests) and
``Report.results_json`` every case, the blob the event's ``results_digest`` names in the
artifact store; ``cases_from_json`` reads that blob back.

The XML is read by junitparser, which understands the variants we meet: a
``<testsuites>`` or a bare ``<testsuite>`` root (pytest, gotestsum; Maven Surefire's
``TEST-*.xml``), nested suites, several ``<failure>``/``<error>``/``<skipped>`` children
in one ``<testcase>``, a missing ``time``.

XML attacks: junitparser parses with lxml when it can import it and with the standard
library's xml.etree (expat) otherwise, and does nothing against entity expansion.
defusedxml is not installed, and whether expat limits a "billion laughs" depends on the
libexpat Python was built with (2.4 and later do). A JUnit report never needs a DTD, and
a DTD is where entities are declared (and the only door to external ones), so we parse
with xml.etree ourselves, refuse any ``<!DOCTYPE>`` before its first declaration is read,
and hand junitparser the tree we built (``JUnitXml.fromroot``).
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import junitparser
from junitparser.junitparser import FinalResult

from shared import events as ev

__all__ = [
    "EVENT_MESSAGE_BYTES",
    "MAX_EVENT_FAILURES",
    "MAX_MESSAGE_BYTES",
    "MAX_REPORT_BYTES",
    "OUTCOMES",
    "Report",
    "TestCase",
    "cases_from_json",
    "parse_junit",
]

MAX_REPORT_BYTES = 50 * 1024 * 1024  # one report file larger than this is skipped
MAX_MESSAGE_BYTES = 4096  # a case's failure message and text, as kept in the results blob
# In the event, shorter: 100 failures are carried by the bus, whose messages must stay
# under ~1 MB (Kafka's default) even when JSON escapes every character of them.
EVENT_MESSAGE_BYTES = 1024
MAX_EVENT_FAILURES = 100
SLOWEST = 10
MAX_EVENT_LIST = 100  # files and warnings the event names (the counts cover them all)

# Worst first: a case with several results takes the worst, and so does a test that a
# tool wrote twice (pytest writes a failed call and its failed teardown as two cases).
OUTCOMES = ("passed", "skipped", "failed", "error")
_RANK = {outcome: n for n, outcome in enumerate(OUTCOMES)}
_RESULTS_VERSION = 1


@dataclass(frozen=True)
class TestCase:
    __test__ = False  # not a pytest test class, whatever its name

    name: str
    classname: str
    outcome: str  # one of OUTCOMES
    duration_s: float
    message: str  # failure / error (or skip) message and text, cut to MAX_MESSAGE_BYTES
    file: str  # the report file it was read from

    @property
    def id(self) -> str:
        """What names the test across runs: ``classname.name`` (the name alone when the
        report gives no class)."""
        return f"{self.classname}.{self.name}" if self.classname else self.name

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "classname": self.classname, "outcome": self.outcome,
                "duration_s": self.duration_s, "message": self.message, "file": self.file}


@dataclass(frozen=True)
class Report:
    cases: tuple[TestCase, ...] = ()
    files: tuple[str, ...] = ()  # the files read (their cases are in ``cases``)
    warnings: tuple[str, ...] = ()  # one per file left out, naming it and why

    def count(self, outcome: str) -> int:
        return sum(1 for case in self.cases if case.outcome == outcome)

    @property
    def failures(self) -> tuple[TestCase, ...]:
        return tuple(case for case in self.cases if case.outcome in ("failed", "error"))

    def slowest(self, n: int = SLOWEST) -> tuple[TestCase, ...]:
        timed = [case for case in self.cases if case.duration_s > 0]
        return tuple(sorted(timed, key=lambda case: -case.duration_s)[:n])

    def event(self, job: str, results_digest: str) -> ev.TestReportRecorded:
        failures = tuple(
            {"name": c.name, "classname": c.classname, "file": c.file,
             "message": _cut(c.message, EVENT_MESSAGE_BYTES)}
            for c in self.failures[:MAX_EVENT_FAILURES])
        slowest = tuple({"name": c.name, "classname": c.classname, "duration_s": c.duration_s}
                        for c in self.slowest())
        return ev.TestReportRecorded(
            job=job, tests=len(self.cases), passed=self.count("passed"),
            failed=self.count("failed"), errors=self.count("error"),
            skipped=self.count("skipped"),
            duration_s=round(sum(c.duration_s for c in self.cases), 3),
            failures=failures, slowest=slowest, results_digest=results_digest,
            files=self.files[:MAX_EVENT_LIST], warnings=_capped(self.warnings))

    def results_json(self) -> bytes:
        body = {"version": _RESULTS_VERSION, "cases": [case.to_json() for case in self.cases]}
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def cases_from_json(data: bytes) -> tuple[TestCase, ...]:
    """The cases ``Report.results_json`` wrote; ``ValueError`` when ``data`` is not that."""
    body = json.loads(data)
    if not isinstance(body, dict) or body.get("version") != _RESULTS_VERSION:
        raise ValueError("not a test results blob of version 1")
    try:
        return tuple(TestCase(name=str(c["name"]), classname=str(c["classname"]),
                              outcome=str(c["outcome"]), duration_s=float(c["duration_s"]),
                              message=str(c["message"]), file=str(c["file"]))
                     for c in body["cases"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"a test results blob with a malformed case: {e!r}") from e


def parse_junit(files: Sequence[tuple[str, bytes]]) -> Report:
    cases: list[TestCase] = []
    read: list[str] = []
    warnings: list[str] = []
    for path, content in files:
        try:
            cases.extend(_cases_of_file(path, content))
        except _Unreadable as e:
            warnings.append(f"{path}: {e}")
        else:
            read.append(path)
    return Report(cases=tuple(cases), files=tuple(read), warnings=tuple(warnings))


class _Unreadable(Exception):
    """A report file left out; the message says why (the caller adds the path)."""


def _cases_of_file(path: str, content: bytes) -> list[TestCase]:
    if len(content) > MAX_REPORT_BYTES:
        raise _Unreadable(f"skipped: {len(content)} bytes is over the limit of "
                          f"{MAX_REPORT_BYTES} bytes for one report")
    root = _parse_xml(content)
    if root.tag not in ("testsuites", "testsuite"):
        raise _Unreadable(f"not a JUnit report: its root element is <{root.tag}>, "
                          "not <testsuites> or <testsuite>")
    try:
        # (its annotation names its own Element; what it takes is an etree element)
        suites = list(junitparser.JUnitXml.fromroot(root))  # type: ignore[arg-type]
    except junitparser.JUnitXmlError as e:  # fromroot's own check, should ours miss one
        raise _Unreadable(f"not a JUnit report ({e})") from e
    merged: dict[tuple[str, str], TestCase] = {}
    for suite in suites:
        for case in suite:
            one = _case(case, path)
            key = (one.classname, one.name)
            merged[key] = _merge(merged[key], one) if key in merged else one
    return list(merged.values())


class _NoDoctype(ET.TreeBuilder):
    """Builds the tree as ``TreeBuilder`` does, but stops at a ``<!DOCTYPE``: expat calls
    this before it reads any entity declaration of the DTD."""

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise _Unreadable("refused: it has a DTD (<!DOCTYPE>), which a JUnit report never "
                          "needs and whose entities could expand without bound")


def _parse_xml(content: bytes) -> ET.Element:
    parser = ET.XMLParser(target=_NoDoctype())
    try:
        parser.feed(content)
        root: ET.Element = parser.close()
    except ET.ParseError as e:
        raise _Unreadable(f"not well-formed XML ({e})") from e
    return root


def _case(case: junitparser.TestCase, path: str) -> TestCase:
    results = case.result
    worst = max((_outcome(r) for r in results), key=_RANK.__getitem__, default="passed")
    # The message of what made the outcome: a skip reason is no failure's message.
    kinds = ("skipped",) if worst == "skipped" else ("failed", "error")
    texts = [_result_text(r) for r in results if _outcome(r) in kinds]
    return TestCase(name=case.name or "", classname=case.classname or "", outcome=worst,
                    duration_s=_duration(case), message=_cut("\n\n".join(filter(None, texts)),
                                                             MAX_MESSAGE_BYTES),
                    file=path)


def _outcome(result: FinalResult) -> str:
    if isinstance(result, junitparser.Error):
        return "error"
    if isinstance(result, junitparser.Failure):
        return "failed"
    return "skipped"


def _result_text(result: FinalResult) -> str:
    parts = (result.message, result.text)
    return "\n".join(p.strip() for p in parts if isinstance(p, str) and p.strip())


def _duration(case: junitparser.TestCase) -> float:
    """Seconds; 0.0 when the report gives none or one that is no duration."""
    try:
        time = case.time
    except ValueError:  # time="abc"
        return 0.0
    if not isinstance(time, float) or not math.isfinite(time) or time < 0:
        return 0.0
    return time


def _merge(first: TestCase, then: TestCase) -> TestCase:
    worst = max(first, then, key=lambda c: _RANK[c.outcome])
    message = "\n\n".join(filter(None, (first.message, then.message)))
    return TestCase(name=first.name, classname=first.classname, outcome=worst.outcome,
                    duration_s=first.duration_s + then.duration_s,
                    message=_cut(message, MAX_MESSAGE_BYTES), file=first.file)


def _cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` bytes of UTF-8, never splitting a character."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore")


def _capped(warnings: tuple[str, ...]) -> tuple[str, ...]:
    if len(warnings) <= MAX_EVENT_LIST:
        return warnings
    rest = len(warnings) - MAX_EVENT_LIST + 1
    return (*warnings[:MAX_EVENT_LIST - 1], f"and {rest} more report files left out")
