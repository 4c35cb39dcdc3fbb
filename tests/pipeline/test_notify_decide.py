"""``due_reason``: which of a rule's ``when`` words makes a run notify, as a table."""

from __future__ import annotations

import pytest

from shared.pipeline.notify import (
    DEFAULT_WHEN,
    WHENS,
    Channel,
    NotifyRule,
    due_reason,
    outcome_of,
)

MAIL = (Channel("email", "dev@example.com"),)


def rule(*when: str, branches: tuple[str, ...] = ()) -> NotifyRule:
    return NotifyRule(name="r", channels=MAIL, when=when or DEFAULT_WHEN, branches=branches)


# (when, moment, status, previous outcome, expected reason)
TABLE = [
    # started: only at the start, only when asked for
    (("started",), "started", "running", None, "started"),
    (("failure", "fixed"), "started", "running", None, None),
    (("started",), "ended", "success", None, None),
    (WHENS, "started", "running", "failure", "started"),
    # failure: failed and errored runs alike
    (("failure",), "ended", "failure", None, "failure"),
    (("failure",), "ended", "errored", "success", "failure"),
    (("failure",), "ended", "success", "failure", None),
    # success
    (("success",), "ended", "success", None, "success"),
    (("success",), "ended", "failure", None, None),
    # fixed: a success after a failure, and nothing else
    (("fixed",), "ended", "success", "failure", "fixed"),
    (("fixed",), "ended", "success", "success", None),
    (("fixed",), "ended", "success", None, None),
    (("fixed",), "ended", "failure", "failure", None),
    # the default: failures, and the success that fixes one
    (DEFAULT_WHEN, "ended", "failure", "success", "failure"),
    (DEFAULT_WHEN, "ended", "success", "failure", "fixed"),
    (DEFAULT_WHEN, "ended", "success", "success", None),
    # changed: either way, but the first run of a branch changed nothing
    (("changed",), "ended", "failure", "success", "changed"),
    (("changed",), "ended", "success", "failure", "changed"),
    (("changed",), "ended", "errored", "success", "changed"),
    (("changed",), "ended", "success", None, None),
    (("changed",), "ended", "failure", None, None),
    (("changed",), "ended", "failure", "failure", None),
    (("changed",), "ended", "cancelled", "success", None),
    # always: every end, cancelled included; skipped runs notify nothing at all
    (("always",), "ended", "cancelled", None, "always"),
    (("always",), "ended", "success", None, "always"),
    (("always",), "ended", "errored", None, "always"),
    (WHENS, "ended", "skipped", "failure", None),
    (("always",), "ended", "running", None, None),  # not ended: nothing to say yet
    # precedence: the most specific word names the notification
    (("success", "fixed"), "ended", "success", "failure", "fixed"),
    (("always", "changed", "success", "fixed"), "ended", "success", "failure", "fixed"),
    (("always", "changed", "success"), "ended", "success", "failure", "success"),
    (("always", "changed"), "ended", "failure", "success", "changed"),
    (("always", "failure"), "ended", "errored", "success", "failure"),
    (("always", "failure", "success"), "ended", "cancelled", "success", "always"),
]


@pytest.mark.parametrize(("when", "moment", "status", "previous", "expected"), TABLE)
def test_due_reason(when: tuple[str, ...], moment: str, status: str, previous: str | None,
                    expected: str | None) -> None:
    assert due_reason(rule(*when), moment, status, "main", previous) == expected


@pytest.mark.parametrize(("branches", "branch", "due"), [
    ((), "anything/at-all", True),
    (("main",), "main", True),
    (("main",), "mainline", False),
    (("release/*",), "release/1.2", True),
    (("release/*",), "release/1.2/hotfix", False),
    (("release/**",), "release/1.2/hotfix", True),
    (("!wip/*",), "feature", True),  # only exclusions: everything else
    (("!wip/*",), "wip/x", False),
    (("*", "!wip/*", "wip/keep"), "wip/keep", True),  # a later pattern re-includes
])
def test_branch_patterns_decide_before_anything_else(
        branches: tuple[str, ...], branch: str, due: bool) -> None:
    for moment, status in (("started", "running"), ("ended", "failure")):
        reason = due_reason(rule("started", "failure", branches=branches), moment, status,
                            branch, None)
        assert (reason is not None) == due, (moment, branch)


@pytest.mark.parametrize(("status", "outcome"), [
    ("success", "success"), ("failure", "failure"), ("errored", "failure"),
    ("cancelled", "cancelled"), ("skipped", "skipped"), ("running", ""), ("queued", ""),
])
def test_outcome_of(status: str, outcome: str) -> None:
    assert outcome_of(status) == outcome
