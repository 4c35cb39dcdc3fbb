"""Malformed payloads: the error names what is missing or wrong, with its path."""

from __future__ import annotations

import json

import pytest

from services.api.hooks import PayloadError, parse
from tests.api.hooks.support import headers_for, load, payload, without

PUSH_FIXTURES = [
    ("github", "push", "github/push.json"),
    ("gitlab", "Push Hook", "gitlab/push.json"),
    ("gitea", "push", "gitea/push.json"),
    ("forgejo", "push", "gitea/push.json"),
    ("gogs", "push", "gitea/push.json"),
    ("generic", "", "generic/push.json"),
]


def parse_body(provider: str, name: str, body: bytes) -> object:
    return parse(provider, headers_for(provider, name, body), body)


@pytest.mark.parametrize(("provider", "name", "fixture"), PUSH_FIXTURES,
                         ids=[p[0] for p in PUSH_FIXTURES])
def test_a_truncated_body_is_not_json(provider: str, name: str, fixture: str) -> None:
    body = load(fixture)[:300]
    with pytest.raises(PayloadError, match=r"^body is not JSON: .* at line \d+ column \d+$"):
        parse_body(provider, name, body)


@pytest.mark.parametrize(("body", "message"), [
    (b"", "body is empty"),
    (b"[1, 2]", r"body is not a JSON object \(got array\)"),
    (b"\xff\xfe{", "body is not JSON"),
])
def test_a_body_that_is_no_json_object(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=f"^{message}"):
        parse_body("github", "push", body)


MISSING = [
    ("github", "push", "github/push.json", "ref", "ref is missing"),
    ("github", "push", "github/push.json", "after", "after is missing"),
    ("github", "push", "github/push.json", "repository.clone_url",
     "repository.clone_url is missing"),
    ("github", "push", "github/push.json", "repository", "repository.clone_url is missing"),
    ("github", "push", "github/push.json", "head_commit.id", None),  # falls back to after
    ("github", "pull_request", "github/pull_request_opened.json", "pull_request.head.sha",
     "pull_request.head.sha is missing"),
    ("github", "pull_request", "github/pull_request_opened.json", "pull_request.head.ref",
     "pull_request.head.ref is missing"),
    ("github", "pull_request", "github/pull_request_opened.json", "pull_request.base",
     "pull_request.base.ref is missing"),
    ("github", "pull_request", "github/pull_request_opened.json", "number",
     "number is missing"),
    ("github", "pull_request", "github/pull_request_opened.json", "action",
     "action is missing"),
    ("gitlab", "Push Hook", "gitlab/push.json", "after", "after is missing"),
    ("gitlab", "Push Hook", "gitlab/push.json", "ref", "ref is missing"),
    ("gitlab", "Merge Request Hook", "gitlab/merge_request_open.json",
     "object_attributes.last_commit.id", "object_attributes.last_commit.id is missing"),
    ("gitlab", "Merge Request Hook", "gitlab/merge_request_open.json",
     "object_attributes.source_branch", "object_attributes.source_branch is missing"),
    ("gitlab", "Merge Request Hook", "gitlab/merge_request_open.json",
     "object_attributes.iid", "object_attributes.iid is missing"),
    ("gitlab", "Merge Request Hook", "gitlab/merge_request_open.json",
     "object_attributes.action", "object_attributes.action is missing"),
    ("gitlab", "Merge Request Hook", "gitlab/merge_request_open.json",
     "object_attributes", "object_attributes is missing"),
    ("gitea", "push", "gitea/push.json", "repository.clone_url",
     "repository.clone_url is missing"),
    ("gitea", "pull_request", "gitea/pull_request_opened.json", "pull_request.head.sha",
     "pull_request.head.sha is missing"),
    ("gitea", "delete", "gitea/delete_branch.json", "ref_type", "ref_type is missing"),
    ("generic", "", "generic/push.json", "event", "event is missing"),
    ("generic", "", "generic/push.json", "after", "after is missing"),
    ("generic", "", "generic/push.json", "ref", "ref is missing"),
]


@pytest.mark.parametrize(("provider", "name", "fixture", "path", "message"), MISSING,
                         ids=[f"{m[0]}-{m[3]}" for m in MISSING])
def test_a_missing_field_is_named_by_its_path(provider: str, name: str, fixture: str,
                                              path: str, message: str | None) -> None:
    body = without(payload(fixture), path)
    if message is None:
        parse_body(provider, name, body)
        return
    with pytest.raises(PayloadError, match=f"^{message}$"):
        parse_body(provider, name, body)


def test_gitlab_without_a_project_url_names_it() -> None:
    data = payload("gitlab/push.json")
    del data["project"]["git_http_url"]
    del data["repository"]["git_http_url"]
    with pytest.raises(PayloadError, match=r"^project\.git_http_url is missing$"):
        parse_body("gitlab", "Push Hook", json.dumps(data).encode())


@pytest.mark.parametrize(("field", "value", "message"), [
    ("after", "--upload-pack=touch /tmp/x", "after is not a commit id"),
    ("after", 42, r"after is not a string \(got number\)"),
    ("ref", "refs/heads/../../etc", "ref is not a valid full ref name"),
    ("ref", "main", "ref is not a valid full ref name"),
    ("ref", "refs/heads/-x", "ref is not a valid full ref name"),
    ("commits", {"a": 1}, r"commits is not an array \(got object\)"),
    ("repository", "octocat/Hello-World", r"repository is not an object \(got string\)"),
])
def test_a_malformed_value_is_named(field: str, value: object, message: str) -> None:
    data = payload("github/push.json")
    data[field] = value
    with pytest.raises(PayloadError, match=f"^{message}"):
        parse_body("github", "push", json.dumps(data).encode())


def test_a_malformed_commit_is_named_by_its_index() -> None:
    data = payload("github/push.json")
    data["commits"][1]["modified"] = "src/greet.py"
    with pytest.raises(PayloadError, match=r"^commits\[1\].modified is not an array of strings$"):
        parse_body("github", "push", json.dumps(data).encode())


def test_a_pull_request_branch_that_git_would_refuse() -> None:
    data = payload("github/pull_request_opened.json")
    data["pull_request"]["head"]["ref"] = "--force"
    with pytest.raises(PayloadError, match=r"^pull_request\.head\.ref is not a valid branch name$"):
        parse_body("github", "pull_request", json.dumps(data).encode())


@pytest.mark.parametrize(("provider", "header"), [
    ("github", "X-GitHub-Event"), ("gitea", "X-Gitea-Event"), ("forgejo", "X-Forgejo-Event"),
    ("gogs", "X-Gogs-Event")])
def test_a_missing_event_header_is_named(provider: str, header: str) -> None:
    body = load("gitea/push.json")
    headers = {k: v for k, v in headers_for(provider, "push", body).items()
               if not k.endswith("-Event")}
    with pytest.raises(PayloadError, match=f"^{header} header is missing$"):
        parse(provider, headers, body)


def test_gitlab_without_event_header_or_event_in_the_body() -> None:
    data = json.loads(without(payload("gitlab/push.json"), "object_kind"))
    body = without(data, "event_name")
    with pytest.raises(PayloadError, match=r"^X-Gitlab-Event header is missing, and the body "
                                           r"names no event \(object_kind or event_name\)$"):
        parse("gitlab", {"X-Gitlab-Token": "x"}, body)


def test_generic_tag_event_needs_a_tag_ref() -> None:
    data = payload("generic/tag.json")
    data["ref"] = "refs/heads/main"
    with pytest.raises(PayloadError, match="event is 'tag' but ref refs/heads/main is not a tag"):
        parse_body("generic", "", json.dumps(data).encode())


def test_an_unknown_provider() -> None:
    with pytest.raises(PayloadError, match="unknown webhook provider 'svn'"):
        parse("svn", {}, b"{}")
