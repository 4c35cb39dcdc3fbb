"""``shared.projections.tests``: a run's tests summed over its jobs, a test's history
over runs, and which tests are flaky; views folded from events, no I/O."""

from __future__ import annotations

from dataclasses import replace

from shared import events as ev
from shared.projections.runs import RunView
from shared.projections.tests import (
    FailedTest,
    HistoryEntry,
    RunTests,
    SlowTest,
    flaky,
    history_for,
    history_of,
    run_tests,
)
from shared.reports import Report, TestCase, cases_from_json
from tests.reports.support import digest_of, report, run_events, run_view


def blobs(*reports: Report) -> dict[str, tuple[TestCase, ...]]:
    """The results blobs as the API reads them back from the artifact store."""
    return {digest_of(r.results_json()): cases_from_json(r.results_json()) for r in reports}


def test_a_runs_tests_are_summed_over_its_jobs() -> None:
    unit = report({"a": "passed", "b": "failed", "c": "skipped"})
    integration = replace(report({"d": "error", "e": "passed"}, classname="it.Db"),
                          warnings=("reports/x.xml: not well-formed XML (...)",))
    summary = run_tests(run_view("r1", run_events({"unit": unit, "integration": integration})))
    assert (summary.tests, summary.passed, summary.failed, summary.errors, summary.skipped) == (
        5, 2, 1, 1, 1)
    assert summary.duration_s == 2.5
    assert summary.jobs == ("unit", "integration")
    assert summary.failures == (
        FailedTest("unit", "b", "pkg.Suite", "b: expected 1", "reports/junit.xml"),
        FailedTest("integration", "d", "it.Db", "d: boom", "reports/junit.xml"))
    assert summary.failures[1].id == "it.Db.d"
    assert summary.warnings == ("integration: reports/x.xml: not well-formed XML (...)",)


def test_the_slowest_are_the_slowest_of_every_job() -> None:
    unit = report({f"u{n}": "passed" for n in range(8)},
                  durations={f"u{n}": n for n in range(8)})
    integration = report({f"i{n}": "passed" for n in range(8)},
                         durations={f"i{n}": n + 0.5 for n in range(8)})
    slowest = run_tests(run_view("r1", run_events({"unit": unit,
                                                   "integration": integration}))).slowest
    assert [s.name for s in slowest] == ["i7", "u7", "i6", "u6", "i5", "u5", "i4", "u4", "i3",
                                         "u3"]
    assert slowest[0] == SlowTest("integration", "i7", "pkg.Suite", 7.5)


def test_a_job_that_reported_twice_counts_once_with_its_last_report() -> None:
    """Queued again after its worker was lost, a job runs and reports again."""
    first, last = report({"a": "failed"}), report({"a": "passed", "b": "passed"})
    events = run_events({"unit": first})
    events.append(last.event("unit", digest_of(last.results_json())))
    summary = run_tests(run_view("r1", events))
    assert (summary.tests, summary.passed, summary.failures) == (2, 2, ())


def test_a_run_without_reports_has_no_tests() -> None:
    summary = run_tests(run_view("r1", run_events({})))
    assert summary == RunTests()
    assert summary.to_json()["failures"] == [] and summary.to_json()["tests"] == 0


def test_to_json_marks_the_flaky_failures() -> None:
    summary = run_tests(run_view("r1", run_events({"unit": report({"a": "failed",
                                                                   "b": "failed"})})))
    shown = summary.to_json(flaky={"pkg.Suite.b"})
    assert [(f["id"], f["flaky"]) for f in shown["failures"]] == [
        ("pkg.Suite.a", False), ("pkg.Suite.b", True)]


def test_history_of_a_run_names_its_commit_time_job_and_attempt() -> None:
    unit = report({"a": "passed", "b": "failed"})
    lost = report({"z": "passed"})  # its blob was collected: its report is left out
    run = run_view("r1", run_events({"unit": unit, "integration": lost}, commit="c9",
                                    attempts=2), minute=5)
    entries = history_of(run, blobs(unit))
    assert entries == [
        HistoryEntry(test="pkg.Suite.a", name="a", classname="pkg.Suite", outcome="passed",
                     duration_s=0.5, run="r1", commit="c9", created_at=run.created_at,
                     job="unit", attempt=2),
        HistoryEntry(test="pkg.Suite.b", name="b", classname="pkg.Suite", outcome="failed",
                     duration_s=0.5, run="r1", commit="c9", created_at=run.created_at,
                     job="unit", attempt=2)]
    assert run.created_at.startswith("2026-05-01T12:05")


def runs_history(*runs: tuple[str, str, dict[str, str]]) -> list[HistoryEntry]:
    """The history of runs (id, commit, outcomes of the unit job's tests), in that order."""
    history = []
    for minute, (run_id, commit, outcomes) in enumerate(runs):
        made = report(outcomes)
        history += history_of(run_view(run_id, run_events({"unit": made}, commit=commit),
                                       minute), blobs(made))
    return history


def test_failed_then_passed_on_the_same_commit_is_flaky() -> None:
    history = runs_history(("r1", "c1", {"a": "failed", "b": "failed", "c": "passed"}),
                           ("r2", "c1", {"a": "passed", "b": "failed", "c": "passed"}))
    assert flaky(history) == {"pkg.Suite.a"}


def test_an_error_then_a_pass_is_flaky_too_and_so_is_passing_first() -> None:
    history = runs_history(("r1", "c1", {"a": "passed", "b": "error"}),
                           ("r2", "c1", {"a": "failed", "b": "passed"}))
    assert flaky(history) == {"pkg.Suite.a", "pkg.Suite.b"}


def test_a_test_fixed_by_a_new_commit_is_not_flaky() -> None:
    history = runs_history(("r1", "c1", {"a": "failed"}), ("r2", "c2", {"a": "passed"}),
                           ("r3", "c3", {"a": "failed"}))
    assert flaky(history) == set()


def test_skipped_is_no_flip_and_no_commit_says_nothing() -> None:
    history = runs_history(("r1", "c1", {"a": "skipped"}), ("r2", "c1", {"a": "passed"}),
                           ("r3", "", {"b": "failed"}), ("r4", "", {"b": "passed"}))
    assert flaky(history) == set()


def test_runs_of_a_work_tree_say_nothing_about_unchanged_code() -> None:
    """``cyclone run`` copies a directory at a commit, local changes and all."""
    failed, fixed = report({"a": "failed"}), report({"a": "passed"})
    history = [*history_of(run_view("r1", run_events({"unit": failed}, source_kind="dir")),
                           blobs(failed)),
               *history_of(run_view("r2", run_events({"unit": fixed}, source_kind="dir")),
                           blobs(fixed))]
    assert [e.checked_out for e in history] == [False, False]
    assert flaky(history) == set()
    assert flaky([history[0], replace(history[1], checked_out=True)]) == set()


def test_jobs_are_not_compared_with_each_other() -> None:
    """A matrix: the test fails on one Python and passes on another, every time."""
    py311, py312 = report({"a": "failed"}), report({"a": "passed"})
    run = run_view("r1", run_events({"unit": py311, "integration": py312}))
    assert flaky(history_of(run, blobs(py311, py312))) == set()


def test_two_attempts_of_one_job_in_one_run_can_flip() -> None:
    entry = HistoryEntry(test="t", name="t", classname="", outcome="failed", duration_s=1.0,
                         run="r1", commit="c1", created_at="x", job="unit", attempt=1)
    assert flaky([entry, replace(entry, outcome="passed", attempt=2)]) == {"t"}


def test_a_tests_history_by_id_or_name_newest_first() -> None:
    history = runs_history(("r1", "c1", {"a": "failed", "b": "passed"}),
                           ("r2", "c2", {"a": "passed"}))
    history += history_of(*_other_class_run())
    by_id = history_for(history, "pkg.Suite.a")
    assert [(e.run, e.outcome) for e in by_id] == [("r2", "passed"), ("r1", "failed")]
    by_name = history_for(history, "a")
    assert [(e.run, e.test) for e in by_name] == [("r3", "other.C.a"), ("r2", "pkg.Suite.a"),
                                                  ("r1", "pkg.Suite.a")]
    assert history_for(history, "nope") == []


def _other_class_run() -> tuple[RunView, dict[str, tuple[TestCase, ...]]]:
    made = report({"a": "passed"}, classname="other.C")
    return run_view("r3", run_events({"unit": made}), minute=9), blobs(made)


def test_a_run_that_ended_keeps_its_summary() -> None:
    events = run_events({"unit": report({"a": "failed"})}, end=ev.RunFailed(reason="x"))
    assert run_tests(run_view("r1", events)).failed == 1
