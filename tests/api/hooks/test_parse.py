"""Each forge's documented payloads become the normalized ForgeEvent, or Ignored."""

from __future__ import annotations

import pytest

from services.api.hooks import Ignored, parse, verify
from shared.forge import ForgeEvent
from tests.api.hooks.support import SECRET, SHA, headers_for, load

GH_URL = "https://github.com/octocat/Hello-World.git"
GL_URL = "http://example.com/mike/diaspora.git"
GT_URL = "http://localhost:3000/gitea/webhooks.git"
GEN_URL = "ssh://git@git.example.com/srv/git/demo.git"


def event(provider: str, name: str, fixture: str, delivery: str = "delivery-1"
          ) -> ForgeEvent | Ignored:
    """Parse a fixture as ``provider`` sends it, after checking it verifies."""
    body = load(fixture)
    headers = headers_for(provider, name, body, delivery=delivery)
    verify(provider, headers, body, SECRET)
    return parse(provider, headers, body)


# -- pushes -----------------------------------------------------------------------------

PUSHES = [
    ("github", "push", "github/push.json", ForgeEvent(
        kind="push", provider="github", delivery="delivery-1", repo_url=GH_URL,
        ref="refs/heads/main", branch="main", commit=SHA["second"], before=SHA["base"],
        changed_paths=("README.md", "old/notes.txt", "src/greet.py"),
        author="Mona Lisa Octocat", message="Fix the greeting\n\nIt said hello twice.")),
    ("gitlab", "Push Hook", "gitlab/push.json", ForgeEvent(
        kind="push", provider="gitlab", delivery="delivery-1", repo_url=GL_URL,
        ref="refs/heads/master", branch="master", commit=SHA["second"], before=SHA["base"],
        changed_paths=("CHANGELOG", "README.md", "locales/ca.yml"),
        author="Jordi Mallach", message="fixed readme")),
    ("gitea", "push", "gitea/push.json", ForgeEvent(
        kind="push", provider="gitea", delivery="delivery-1", repo_url=GT_URL,
        ref="refs/heads/develop", branch="develop", commit=SHA["second"], before=SHA["base"],
        changed_paths=("README.md", "docs/old.md", "hooks/push.go"),
        author="Gitea", message="Webhooks Yay!\n")),
    ("generic", "", "generic/push.json", ForgeEvent(
        kind="push", provider="generic", delivery="delivery-1", repo_url=GEN_URL,
        ref="refs/heads/main", branch="main", commit=SHA["second"], before=SHA["base"],
        changed_paths=("README.md", "src/greet.py"),
        author="Ada Lovelace", message="Fix the greeting\n")),
]


@pytest.mark.parametrize(("provider", "name", "fixture", "expected"), PUSHES,
                         ids=[p[0] for p in PUSHES])
def test_a_branch_push(provider: str, name: str, fixture: str, expected: ForgeEvent) -> None:
    assert event(provider, name, fixture) == expected


@pytest.mark.parametrize("provider", ["forgejo", "gogs"])
def test_forgejo_and_gogs_send_giteas_payloads_under_their_own_headers(provider: str) -> None:
    body = load("gitea/push.json")
    headers = {name: value for name, value in headers_for(provider, "push", body).items()
               if name.startswith(f"X-{provider.capitalize()}-") or name == "Content-Type"}
    verify(provider, headers, body, SECRET)
    assert parse(provider, headers, body) == PUSHES[2][3]


TAGS = [
    # An annotated tag: ``after`` is the tag object, the commit built is the tagged one.
    ("github", "push", "github/push_tag.json", ForgeEvent(
        kind="tag", provider="github", delivery="delivery-1", repo_url=GH_URL,
        ref="refs/tags/v1.2.0", tag="v1.2.0", commit=SHA["second"], before="0" * 40,
        author="Mona Lisa Octocat", message="Fix the greeting\n\nIt said hello twice.")),
    ("gitlab", "Tag Push Hook", "gitlab/tag_push.json", ForgeEvent(
        kind="tag", provider="gitlab", delivery="delivery-1", repo_url=GL_URL,
        ref="refs/tags/v1.0.0", tag="v1.0.0", commit=SHA["second"], before="0" * 40,
        author="jsmith", message="Tag message")),
    ("gitea", "push", "gitea/push_tag.json", ForgeEvent(
        kind="tag", provider="gitea", delivery="delivery-1", repo_url=GT_URL,
        ref="refs/tags/v0.3.0", tag="v0.3.0", commit=SHA["second"], before="0" * 40,
        author="Gitea", message="Webhooks Yay!\n")),
    ("generic", "", "generic/tag.json", ForgeEvent(
        kind="tag", provider="generic", delivery="delivery-1", repo_url=GEN_URL,
        ref="refs/tags/v2.0", tag="v2.0", commit=SHA["second"], before="0" * 40,
        author="Ada Lovelace", message="Fix the greeting\n")),
]


@pytest.mark.parametrize(("provider", "name", "fixture", "expected"), TAGS,
                         ids=[t[0] for t in TAGS])
def test_a_tag_push_has_no_changed_paths(provider: str, name: str, fixture: str,
                                         expected: ForgeEvent) -> None:
    assert event(provider, name, fixture) == expected


DELETED = [
    ("github", "push", "github/push_deleted.json", "octocat"),
    ("gitlab", "Push Hook", "gitlab/push_deleted.json", "jsmith"),
    ("gitea", "delete", "gitea/delete_branch.json", "gitea"),  # Gitea sends no push for it
    ("generic", "", "generic/push_deleted.json", ""),
]


@pytest.mark.parametrize(("provider", "name", "fixture", "author"), DELETED,
                         ids=[d[0] for d in DELETED])
def test_a_deleted_branch_is_an_event_with_nothing_to_build(provider: str, name: str,
                                                            fixture: str, author: str) -> None:
    got = event(provider, name, fixture)
    assert isinstance(got, ForgeEvent)
    assert (got.kind, got.deleted, got.ref, got.branch) == (
        "push", True, "refs/heads/feature/old", "feature/old")
    assert (got.commit, got.changed_paths, got.author) == ("", None, author)


def test_a_deleted_tag_on_gitea_is_kept_from_the_push_not_the_delete_event() -> None:
    body = load("gitea/delete_branch.json").replace(b'"branch"', b'"tag"')
    got = parse("gitea", headers_for("gitea", "delete", body), body)
    assert got == Ignored("delete event of a tag is ignored: its push event is the one "
                          "recorded")


@pytest.mark.parametrize(("provider", "name", "fixture", "total"), [
    ("gitlab", "Push Hook", "gitlab/push_truncated.json", "total_commits_count 31"),
    ("gitea", "push", "gitea/push_truncated.json", "total_commits 12"),
], ids=["gitlab", "gitea"])
def test_a_cut_commit_list_leaves_the_changed_paths_unknown(provider: str, name: str,
                                                            fixture: str, total: str) -> None:
    got = event(provider, name, fixture)
    assert isinstance(got, ForgeEvent) and got.commit == SHA["second"]
    assert got.changed_paths is None, f"{total} but 2 commits listed"


def test_a_github_push_at_the_2048_commit_cap_leaves_the_changed_paths_unknown() -> None:
    import json

    data = json.loads(load("github/push.json"))
    data["commits"] = data["commits"][:1] * 2048
    body = json.dumps(data).encode()
    got = parse("github", headers_for("github", "push", body), body)
    assert isinstance(got, ForgeEvent) and got.changed_paths is None
    data["commits"] = data["commits"][:2047]
    body = json.dumps(data).encode()
    got = parse("github", headers_for("github", "push", body), body)
    assert isinstance(got, ForgeEvent) and got.changed_paths == ("README.md", "src/greet.py")


def test_generic_changed_paths_come_from_the_commits_when_not_listed() -> None:
    got = event("generic", "", "generic/push_commits.json")
    assert isinstance(got, ForgeEvent)
    assert got.changed_paths == ("old.txt", "src/greet.py")
    assert (got.author, got.message) == ("Ada Lovelace", "Fix the greeting")


# -- pull and merge requests ------------------------------------------------------------

PULLS = [
    ("github", "pull_request", "github/pull_request_opened.json", ForgeEvent(
        kind="pull_request", provider="github", delivery="delivery-1", repo_url=GH_URL,
        ref="refs/pull/7/head", branch="feature/french", commit=SHA["pr"],
        target_branch="main", pr_number=7, action="opened", author="monalisa",
        message="Greet in French")),
    ("github", "pull_request", "github/pull_request_synchronize.json", ForgeEvent(
        kind="pull_request", provider="github", delivery="delivery-1", repo_url=GH_URL,
        ref="refs/pull/7/head", branch="feature/french", commit=SHA["pr"],
        before=SHA["first"], target_branch="main", pr_number=7, action="synchronize",
        author="monalisa", message="Greet in French")),
    ("gitlab", "Merge Request Hook", "gitlab/merge_request_open.json", ForgeEvent(
        kind="pull_request", provider="gitlab", delivery="delivery-1", repo_url=GL_URL,
        ref="refs/merge-requests/1/head", branch="ms-viewport", commit=SHA["pr"],
        target_branch="master", pr_number=1, action="opened", author="GitLab dev user",
        message="fixed readme", fork=True)),  # GitLab's sample: project 14 into 15
    ("gitlab", "Merge Request Hook", "gitlab/merge_request_update.json", ForgeEvent(
        kind="pull_request", provider="gitlab", delivery="delivery-1", repo_url=GL_URL,
        ref="refs/merge-requests/1/head", branch="ms-viewport", commit=SHA["pr"],
        before=SHA["first"], target_branch="master", pr_number=1, action="synchronize",
        author="GitLab dev user", message="fixed readme",
        fork=True)),
    ("gitea", "pull_request", "gitea/pull_request_opened.json", ForgeEvent(
        kind="pull_request", provider="gitea", delivery="delivery-1", repo_url=GT_URL,
        ref="refs/pull/12/head", branch="feature/test", commit=SHA["pr"],
        target_branch="master", pr_number=12, action="opened", author="gitea",
        message="Add a webhook test")),
    ("gitea", "pull_request", "gitea/pull_request_synchronized.json", ForgeEvent(
        kind="pull_request", provider="gitea", delivery="delivery-1", repo_url=GT_URL,
        ref="refs/pull/12/head", branch="feature/test", commit=SHA["pr"],
        target_branch="master", pr_number=12, action="synchronize", author="gitea",
        message="Add a webhook test")),
]


@pytest.mark.parametrize(("provider", "name", "fixture", "expected"), PULLS,
                         ids=[p[2].split("/")[1][:-5] + f"-{p[0]}" for p in PULLS])
def test_a_pull_request_opened_or_with_new_commits(provider: str, name: str, fixture: str,
                                                   expected: ForgeEvent) -> None:
    assert event(provider, name, fixture) == expected


def test_a_reopened_pull_request_is_built() -> None:
    for provider, name, fixture, action in [
            ("github", "pull_request", "github/pull_request_opened.json", b'"reopened"'),
            ("gitlab", "Merge Request Hook", "gitlab/merge_request_open.json", b'"reopen"'),
            ("gitea", "pull_request", "gitea/pull_request_opened.json", b'"reopened"')]:
        body = load(fixture).replace(b'"opened"', action, 1).replace(b'"open"', action, 1)
        got = parse(provider, headers_for(provider, name, body), body)
        assert isinstance(got, ForgeEvent) and got.action == "reopened", provider


@pytest.mark.parametrize(("provider", "name", "fixture", "reason"), [
    ("github", "pull_request", "github/pull_request_closed.json",
     "pull_request action 'closed' is ignored"),
    ("gitlab", "Merge Request Hook", "gitlab/merge_request_close.json",
     "merge_request action 'close' is ignored"),
    ("gitlab", "Merge Request Hook", "gitlab/merge_request_update_title.json",
     "merge_request action 'update' without new commits is ignored"),
    ("gitea", "pull_request", "gitea/pull_request_closed.json",
     "pull_request action 'closed' is ignored"),
], ids=["github-closed", "gitlab-close", "gitlab-title-edit", "gitea-closed"])
def test_a_closed_or_edited_pull_request_is_ignored(provider: str, name: str, fixture: str,
                                                    reason: str) -> None:
    assert event(provider, name, fixture) == Ignored(reason)


# -- ping, other events -----------------------------------------------------------------

def test_a_ping() -> None:
    assert event("github", "ping", "github/ping.json") == ForgeEvent(
        kind="ping", provider="github", delivery="delivery-1", repo_url=GH_URL)
    assert event("generic", "", "generic/ping.json") == ForgeEvent(
        kind="ping", provider="generic", delivery="delivery-1", repo_url=GEN_URL)


@pytest.mark.parametrize(("provider", "name", "fixture", "reason"), [
    ("github", "issues", "github/issues_opened.json", "GitHub event 'issues' is ignored"),
    ("github", "create", "github/push_tag.json",
     "GitHub event 'create' is ignored: the push event of the same ref is the one built"),
    ("github", "delete", "github/push_deleted.json",
     "GitHub event 'delete' is ignored: the push event of the same ref is the one built"),
    ("gitlab", "Note Hook", "gitlab/note.json", "GitLab event 'Note Hook' is ignored"),
    ("gitea", "create", "gitea/create_tag.json",
     "create event is ignored: the push event of the same ref is the one built"),
    ("gitea", "issues", "gitea/create_tag.json", "Gitea event 'issues' is ignored"),
    ("forgejo", "release", "gitea/create_tag.json", "Forgejo event 'release' is ignored"),
], ids=["github-issues", "github-create", "github-delete", "gitlab-note", "gitea-create",
        "gitea-issues", "forgejo-release"])
def test_other_events_are_ignored_by_name(provider: str, name: str, fixture: str,
                                          reason: str) -> None:
    assert event(provider, name, fixture) == Ignored(reason)


def test_generic_unknown_event_is_ignored() -> None:
    body = b'{"event": "release", "ref": "refs/tags/v1"}'
    assert parse("generic", headers_for("generic", "", body), body) == Ignored(
        "generic event 'release' is ignored")


def test_a_push_to_a_ref_that_is_neither_branch_nor_tag_is_ignored() -> None:
    body = load("github/push.json").replace(b'"refs/heads/main"', b'"refs/notes/commits"')
    assert parse("github", headers_for("github", "push", body), body) == Ignored(
        "push to refs/notes/commits is ignored: neither a branch nor a tag")


# -- forge particulars ------------------------------------------------------------------

def test_gitlab_system_hook_is_told_apart_by_object_kind() -> None:
    body = load("gitlab/push.json")
    got = parse("gitlab", headers_for("gitlab", "System Hook", body), body)
    assert isinstance(got, ForgeEvent) and (got.kind, got.branch) == ("push", "master")


def test_gitlab_idempotency_key_is_the_delivery_id_when_sent() -> None:
    # It stays the same across retries of one event (GitLab 17.4+).
    body = load("gitlab/push.json")
    headers = {**headers_for("gitlab", "Push Hook", body), "Idempotency-Key": "idem-7"}
    got = parse("gitlab", headers, body)
    assert isinstance(got, ForgeEvent) and got.delivery == "idem-7"


def test_a_form_encoded_github_delivery_is_read_from_its_payload_field() -> None:
    from urllib.parse import urlencode

    body = urlencode({"payload": load("github/push.json").decode()}).encode()
    headers = {**headers_for("github", "push", body),
               "Content-Type": "application/x-www-form-urlencoded"}
    verify("github", headers, body, SECRET)
    assert parse("github", headers, body) == PUSHES[0][3]
