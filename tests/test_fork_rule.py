"""What a project's ``fork_prs`` makes of a pull request from a fork, and of anything else."""

from __future__ import annotations

import pytest

from shared.forge import review_ref
from shared.projections.projects import ProjectView

FORK_PR = {"kind": "pull_request", "fork": True, "pr_number": 7, "ref": "refs/pull/7/head"}


@pytest.mark.parametrize(("fork_prs", "ignored", "waits", "withheld"), [
    ("approve", False, True, True),
    ("run-without-secrets", False, False, True),
    ("never", True, False, False),
])
def test_a_fork_pr_is_held_back_as_the_project_says(fork_prs: str, ignored: bool, waits: bool,
                                                     withheld: bool) -> None:
    project = ProjectView(name="demo", repo="git://x", fork_prs=fork_prs)
    rule = project.fork_rule(FORK_PR)
    assert (bool(rule.ignored), bool(rule.approval), bool(rule.withheld)) == (
        ignored, waits, withheld)
    requested = project.run_requested(trigger="pull_request", branch="f", requested_by="x",
                                      forge_event=FORK_PR)
    assert (requested.approval, requested.secrets_withheld) == (rule.approval, rule.withheld)
    if rule.approval:
        assert "pull request #7 from a fork" in rule.approval


@pytest.mark.parametrize("event", [{"kind": "pull_request", "fork": False, "pr_number": 1},
                                   {"kind": "push", "fork": True}, {}])
def test_anything_but_a_fork_pr_runs_as_ever(event: dict[str, object]) -> None:
    rule = ProjectView(name="demo", fork_prs="never").fork_rule(event)
    assert (rule.ignored, rule.approval, rule.withheld) == ("", "", "")


def test_the_review_ref_is_a_pull_requests_only() -> None:
    assert review_ref(FORK_PR) == "refs/pull/7/head"
    gitlab = {"kind": "pull_request", "ref": "refs/merge-requests/3/head"}
    assert review_ref(gitlab) == "refs/merge-requests/3/head"
    assert review_ref({"kind": "push", "ref": "refs/heads/main"}) == ""
    assert review_ref({"kind": "pull_request", "ref": "refs/heads/evil"}) == ""
    assert review_ref(None) == ""
