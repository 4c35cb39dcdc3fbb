"""Retention as pure functions: which runs a project's rule no longer keeps (days, the last
N runs, failed runs longer), and which blobs may go (named by something collected, by
nothing live)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.projections.artifacts import ArtifactView, TestReportView
from shared.projections.runs import RunView
from shared.retention import Retention, RunRecord, due, garbage, rules_text
from shared.status import RunStatus

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def record(n: int, age_days: float, status: RunStatus = RunStatus.SUCCESS,
           digests: frozenset[str] = frozenset(), collected: bool = False) -> RunRecord:
    """Run ``n`` (ids sort by creation: a higher ``n`` is newer)."""
    ended = "" if status == RunStatus.RUNNING else (NOW - timedelta(days=age_days)).isoformat()
    return RunRecord(id=f"{n:04d}", project="app", status=status, ended_at=ended,
                     digests=digests, collected=collected)


def collected(runs: list[RunRecord], rule: Retention) -> list[str]:
    return [d.run.id for d in due(runs, rule, NOW)]


def test_without_a_rule_everything_is_kept_forever() -> None:
    runs = [record(n, age_days=1000) for n in range(5)]
    assert collected(runs, Retention()) == []
    assert Retention().keeps_everything and rules_text(Retention()) == "kept forever"


def test_days_keeps_runs_that_ended_less_than_that_ago() -> None:
    runs = [record(1, 45), record(2, 31), record(3, 29), record(4, 0.1)]
    found = due(runs, Retention(days=30), NOW)
    assert [d.run.id for d in found] == ["0001", "0002"]  # oldest first
    assert found[0].reason == "retention: older than 30 days"


def test_runs_keeps_the_project_s_last_n_runs_whatever_their_age() -> None:
    runs = [record(n, age_days=400 - n) for n in range(6)]
    found = due(runs, Retention(runs=2), NOW)
    assert [d.run.id for d in found] == ["0000", "0001", "0002", "0003"]
    assert found[0].reason == "retention: not among the project's last 2 runs"


def test_with_both_a_run_is_kept_while_either_rule_keeps_it() -> None:
    runs = [record(1, 90), record(2, 60), record(3, 50), record(4, 40), record(5, 5)]
    # last 2: 0004, 0005; younger than 55 days: 0003, 0004, 0005
    found = due(runs, Retention(days=55, runs=2), NOW)
    assert [d.run.id for d in found] == ["0001", "0002"]
    assert found[0].reason == ("retention: older than 55 days and not among the project's "
                               "last 2 runs")


def test_failed_runs_are_kept_twice_as_long_unless_failed_days_says() -> None:
    runs = [record(1, 45, RunStatus.FAILURE), record(2, 45, RunStatus.ERRORED),
            record(3, 45, RunStatus.CANCELLED), record(4, 65, RunStatus.FAILURE)]
    found = due(runs, Retention(days=30), NOW)
    assert [d.run.id for d in found] == ["0003", "0004"]  # cancelled is not failed
    assert found[1].reason == "retention: older than 60 days (failed runs)"
    assert collected(runs, Retention(days=30, failed_days=40)) == ["0001", "0002", "0003",
                                                                   "0004"]
    assert collected(runs, Retention(days=30, failed_days=0)) == ["0003"]  # no age rule
    assert rules_text(Retention(days=30)) == "30 days or failed runs 60 days"
    assert rules_text(Retention(runs=10, days=7, failed_days=7)) == "the last 10 runs or 7 days"


def test_unfinished_and_already_collected_runs_are_left_alone_but_still_count() -> None:
    runs = [record(1, 100, collected=True), record(2, 100), record(3, 0, RunStatus.RUNNING),
            record(4, 100)]
    # the running 0003 is one of the last 2: 0002 is not
    assert collected(runs, Retention(runs=2)) == ["0002"]
    assert collected(runs, Retention(days=1)) == ["0002", "0004"]


def test_a_run_record_names_its_artifacts_and_test_results_and_its_end() -> None:
    view = RunView(id="r1", project="app", status=RunStatus.SUCCESS,
                   created_at="2030-01-01T00:00:00+00:00", finished_at="2030-01-01T00:05:00+00:00",
                   artifacts=(ArtifactView(job="b", name="dist", digest="sha256:a", size=1,
                                           files=1),),
                   test_reports=(TestReportView(job="t", tests=1, passed=1, failed=0, errors=0,
                                                skipped=0, duration_s=1.0,
                                                results_digest="sha256:t"),
                                 TestReportView(job="u", tests=0, passed=0, failed=0, errors=0,
                                                skipped=0, duration_s=0.0)))
    made = RunRecord.of(view)
    assert made.digests == {"sha256:a", "sha256:t"} and made.ended_at.endswith("00:05:00+00:00")
    assert not made.collected
    running = RunRecord.of(RunView(id="r2", status=RunStatus.RUNNING, created_at="x",
                                   collected=("logs",)))
    assert running.ended_at == "" and running.collected


def test_garbage_is_what_something_collected_named_and_nothing_live_names() -> None:
    old = record(1, 100, digests=frozenset({"shared-with-cache", "only-old", "shared-with-new"}))
    gone_before = record(2, 100, digests=frozenset({"left-over", "gone"}), collected=True)
    new = record(3, 1, digests=frozenset({"shared-with-new", "new"}))
    found = garbage([old, gone_before, new], collecting=["0001"],
                    live_cache=["shared-with-cache", "cached"],
                    saved_cache=["shared-with-cache", "cached", "evicted"],
                    stored=["shared-with-cache", "only-old", "shared-with-new", "left-over",
                            "new", "cached", "evicted", "uploaded-not-recorded"])
    # "gone" is no longer stored; "uploaded-not-recorded" was never named by an event
    assert found == {"only-old", "left-over", "evicted"}
