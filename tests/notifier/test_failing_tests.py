"""A run's failing tests (its JUnit reports) in its notification: named in the mail, at
most 20, then "and N more"; through the notifier to a real SMTP server (aiosmtpd), and
in the ``Summary`` every channel is made of."""

from __future__ import annotations

from services.notifier.message import MAX_FAILING_TESTS, failing_tests, masked, summarize
from shared import events as ev
from tests.notifier.test_email import html, plain
from tests.notifier.test_notifier import FAILED, OK, World, world
from tests.reports.support import digest_of, report, run_events, run_view

__all__ = ["world"]  # the fixture these tests use

RULE = {"name": "team", "when": ["failure", "success"], "email": ["dev@example.com"]}


async def ended_with_report(world: World, outcomes: dict[str, str], end: ev.Event) -> str:
    """A run of project demo whose job "build" reported ``outcomes``, then ``end``."""
    run_id = await world.run(None)
    made = report(outcomes)
    await world.append(run_id, made.event("build", digest_of(made.results_json())))
    await world.deliver(*await world.append(run_id, end))
    return run_id


async def test_the_mail_names_the_first_20_failing_tests_and_counts_the_rest(
        world: World) -> None:
    await world.project([RULE])
    outcomes = {f"test_{n:02d}": "failed" if n % 2 else "error" for n in range(25)}
    await ended_with_report(world, {**outcomes, "test_ok": "passed"}, FAILED)
    [got] = world.smtp.received
    text, page = plain(got.message), html(got.message)
    named = [f"pkg.Suite.test_{n:02d}" for n in range(MAX_FAILING_TESTS)]
    listed = text.split("Failing tests:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert listed == [f"  {name}" for name in named] + ["  and 5 more"]
    for name in named:
        assert f"<li>{name}</li>" in page
    assert "pkg.Suite.test_20" not in text and "and 5 more</li>" in page
    assert "test_ok" not in text


async def test_a_run_whose_tests_passed_names_none(world: World) -> None:
    await world.project([RULE])
    await ended_with_report(world, {"test_a": "passed", "test_b": "skipped"}, OK)
    [got] = world.smtp.received
    assert "Failing tests" not in plain(got.message)
    assert "Failing tests" not in html(got.message)


def test_several_jobs_name_the_job_too_and_secrets_are_masked() -> None:
    events = run_events({"unit": report({"test_token_hunter2x": "failed", "ok": "passed"}),
                         "integration": report({"test_db": "error"}, classname="it.Db")},
                        end=ev.RunFailed(reason="x"))
    run = run_view("r1", events)
    assert failing_tests(run) == (("pkg.Suite.test_token_hunter2x (unit)",
                                   "it.Db.test_db (integration)"), 0)
    summary = masked(summarize(run, key="k", moment="ended", reason="failure", url="u"),
                     ["hunter2x"])
    assert summary.failing_tests == ("pkg.Suite.test_token_*** (unit)",
                                     "it.Db.test_db (integration)")
    assert summary.to_json()["failing_tests"] == list(summary.failing_tests)


def test_a_run_without_reports_has_no_failing_tests() -> None:
    run = run_view("r1", run_events({}, end=ev.RunFailed(reason="x")))
    assert failing_tests(run) == ((), 0)
