"""Test results as read models: a run's summary, a test's history, which tests are flaky.

``run_tests(run)`` sums a run's ``TestReportRecorded`` (its view's ``test_reports``) over
its jobs: counts, failures, the slowest tests. ``history_of(run, cases)`` turns the
cases of a run's reports (their results blobs, read from the artifact store by the
caller) into ``HistoryEntry``s, ``history_for(history, name)`` picks one test's, newest first;
``flaky(history)`` names the tests that both failed and
passed on one commit in one job, whether in two attempts of a run (a rerun) or in two
runs of unchanged code. Pure functions, no I/O: the caller reads the views and blobs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.projections.artifacts import TestReportView
from shared.projections.runs import RunView
from shared.reports.junit import SLOWEST, TestCase, case_id

__all__ = ["FailedTest", "HistoryEntry", "RunTests", "SlowTest", "flaky", "history_for",
           "history_of", "latest_reports", "run_tests"]

_FAILING = frozenset({"failed", "error"})


@dataclass(frozen=True)
class FailedTest:
    job: str
    name: str
    classname: str
    message: str
    file: str

    @property
    def id(self) -> str:
        return case_id(self.classname, self.name)


@dataclass(frozen=True)
class SlowTest:
    job: str
    name: str
    classname: str
    duration_s: float


@dataclass(frozen=True)
class RunTests:
    """A run's test reports summed over its jobs."""

    tests: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    duration_s: float = 0.0
    failures: tuple[FailedTest, ...] = ()  # each job's (at most 100 a job), in job order
    slowest: tuple[SlowTest, ...] = ()  # the slowest of every job
    jobs: tuple[str, ...] = ()  # the jobs that reported
    warnings: tuple[str, ...] = ()  # report files left out, each prefixed with its job

    def to_json(self, flaky: Collection[str] = ()) -> dict[str, Any]:
        """As the API shows it; ``flaky``: the ids of the tests known to be flaky."""
        return {
            "tests": self.tests, "passed": self.passed, "failed": self.failed,
            "errors": self.errors, "skipped": self.skipped, "duration_s": self.duration_s,
            "jobs": list(self.jobs), "warnings": list(self.warnings),
            "failures": [{"id": f.id, "job": f.job, "name": f.name, "classname": f.classname,
                          "message": f.message, "file": f.file, "flaky": f.id in flaky}
                         for f in self.failures],
            "slowest": [{"id": case_id(s.classname, s.name), "job": s.job, "name": s.name,
                         "classname": s.classname, "duration_s": s.duration_s}
                        for s in self.slowest],
        }


def latest_reports(run: RunView) -> tuple[TestReportView, ...]:
    """One report per job, its last: a job queued again after its worker was lost runs
    (and reports) again, and its earlier report is of an attempt that did not end."""
    last = {report.job: report for report in run.test_reports}
    return tuple(last.values())


def run_tests(run: RunView) -> RunTests:
    reports = latest_reports(run)
    slowest = sorted((SlowTest(r.job, str(s["name"]), str(s["classname"]),
                               float(s["duration_s"]))
                      for r in reports for s in r.slowest), key=lambda s: -s.duration_s)
    return RunTests(
        tests=sum(r.tests for r in reports), passed=sum(r.passed for r in reports),
        failed=sum(r.failed for r in reports), errors=sum(r.errors for r in reports),
        skipped=sum(r.skipped for r in reports),
        duration_s=round(sum(r.duration_s for r in reports), 3),
        failures=tuple(FailedTest(r.job, str(f["name"]), str(f["classname"]),
                                  str(f["message"]), str(f["file"]))
                       for r in reports for f in r.failures),
        slowest=tuple(slowest[:SLOWEST]), jobs=tuple(r.job for r in reports),
        warnings=tuple(f"{r.job}: {w}" for r in reports for w in r.warnings))


@dataclass(frozen=True)
class HistoryEntry:
    """One test's outcome in one job of one run."""

    test: str  # its id (``case_id``)
    name: str
    classname: str
    outcome: str  # passed, failed, error, skipped
    duration_s: float
    run: str
    commit: str
    created_at: str  # the run's
    job: str
    attempt: int  # the job's attempt that reported (> 1: run again after a lost worker)
    # Whether the run built exactly ``commit`` (a checkout), not a directory whose files
    # may differ from it (``cyclone run`` of a work tree): only then is the code known.
    checked_out: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"test": self.test, "name": self.name, "classname": self.classname,
                "outcome": self.outcome, "duration_s": self.duration_s, "run": self.run,
                "commit": self.commit, "created_at": self.created_at, "job": self.job,
                "attempt": self.attempt, "checked_out": self.checked_out}


def history_of(run: RunView, cases: Mapping[str, Sequence[TestCase]]) -> list[HistoryEntry]:
    """The entries of the run's reports whose results blob is in ``cases`` (by digest; a
    blob retention collected, or not read, leaves its report out)."""
    entries = []
    for report in latest_reports(run):
        job = run.job(report.job)
        attempt = job.attempt if job is not None else 0
        for case in cases.get(report.results_digest, ()):
            entries.append(HistoryEntry(
                test=case.id, name=case.name, classname=case.classname,
                outcome=case.outcome, duration_s=case.duration_s, run=run.id,
                commit=run.commit, created_at=run.created_at, job=report.job,
                attempt=attempt, checked_out=run.source_kind == "git"))
    return entries


def flaky(history: Iterable[HistoryEntry]) -> set[str]:
    """The tests that failed (or errored) and passed on one commit in one job: the code
    did not change, the outcome did. An entry of no commit, or of a run of a directory
    (its files may hold changes the commit does not), says nothing about unchanged code;
    a job of another name (a matrix entry) may fail for its own reasons, so jobs are
    never compared with each other."""
    seen: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for entry in history:
        if entry.commit and entry.checked_out:
            seen[(entry.test, entry.job, entry.commit)].add(entry.outcome)
    return {test for (test, _, _), outcomes in seen.items()
            if "passed" in outcomes and outcomes & _FAILING}


def history_for(history: Iterable[HistoryEntry], name: str) -> list[HistoryEntry]:
    """The entries of the test ``name`` names, by its id or by its name alone (the same
    name in several classes: each entry says its class), the newest run first."""
    picked = [e for e in history if name in (e.test, e.name)]
    return sorted(picked, key=lambda e: (e.created_at, e.run, e.job, e.attempt), reverse=True)

