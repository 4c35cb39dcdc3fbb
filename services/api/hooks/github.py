"""GitHub webhooks (GitHub docs: "Webhook events and payloads").

* Authenticity: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``.
* Event: ``X-GitHub-Event``; delivery id: ``X-GitHub-Delivery`` (kept on a redelivery).
* ``push`` covers branches and tags (``ref`` refs/heads/... or refs/tags/...) and their
  deletion (``deleted: true``, ``after`` all zeros). ``create`` and ``delete`` are
  ignored: GitHub sends a ``push`` for the same ref as well, and building on both would
  run twice. ``pull_request`` actions opened / reopened / synchronize are built, every
  other action (closed, edited, labeled, ...) is ignored. ``ping`` (sent when the hook is
  created) is a ping.
* ``commits`` holds at most 2048 commits; a list that long may have been cut, so its
  paths are not trusted (``changed_paths`` None). A tag push's paths are None too: a tag
  changes no files, and ``paths`` filters do not apply to it.
"""

from __future__ import annotations

from typing import Any

from services.api.hooks.common import (
    Ignored,
    PayloadError,
    check_hmac,
    delivery_header,
    first_header,
    head_commit,
    is_fork,
    is_zero,
    load_json,
    need_branch,
    need_pr_number,
    need_ref,
    need_sha,
    need_str,
    opt_list,
    opt_sha,
    opt_str,
    paths_of,
    ref_fields,
)
from shared.forge import ForgeEvent

__all__ = ["parse", "verify"]

MAX_COMMITS = 2048  # GitHub lists at most this many commits in a push payload
_ACTIONS = {"opened": "opened", "reopened": "reopened", "synchronize": "synchronize"}


def verify(headers: dict[str, str], body: bytes, secret: str) -> None:
    check_hmac(headers, ("X-Hub-Signature-256",), body, secret, prefix="sha256=")


def parse(headers: dict[str, str], body: bytes) -> ForgeEvent | Ignored:
    found = first_header(headers, "X-GitHub-Event")
    if found is None:
        raise PayloadError("X-GitHub-Event header is missing")
    event = found[1]
    delivery = delivery_header(headers, "X-GitHub-Delivery")
    if event in ("create", "delete"):
        return Ignored(f"GitHub event '{event}' is ignored: the push event of the same ref "
                       "is the one built")
    if event not in ("push", "pull_request", "ping"):
        return Ignored(f"GitHub event '{event}' is ignored")
    data = load_json(headers, body)
    if event == "ping":
        return ForgeEvent(kind="ping", provider="github", delivery=delivery,
                          repo_url=opt_str(data, "repository.clone_url"))
    if event == "push":
        return _push(data, delivery)
    return _pull_request(data, delivery)


def _push(data: dict[str, Any], delivery: str) -> ForgeEvent | Ignored:
    fields = ref_fields(need_ref(data, "ref"))
    if isinstance(fields, Ignored):
        return fields
    before = opt_sha(data, "before")
    after = need_sha(data, "after")
    fields.update(provider="github", delivery=delivery, before=before,
                  repo_url=need_str(data, "repository.clone_url"))
    pusher = opt_str(data, "pusher.name") or opt_str(data, "sender.login")
    if data.get("deleted") is True or is_zero(after):
        return ForgeEvent(**fields, deleted=True, author=pusher)
    commits = opt_list(data, "commits")
    head, at = data.get("head_commit"), "head_commit"
    if not isinstance(head, dict):
        head, at = head_commit(commits, after)
    # An annotated tag's ``after`` is the tag object; head_commit.id is the tagged commit.
    commit = need_sha(head, "id", at) if at and head.get("id") is not None else after
    paths = None
    if fields["kind"] == "push" and commits is not None and len(commits) < MAX_COMMITS:
        paths = paths_of(commits, "commits")
    return ForgeEvent(**fields, commit=commit, changed_paths=paths,
                      author=opt_str(head, "author.name", at=at) or pusher,
                      message=opt_str(head, "message", at=at))


def _pull_request(data: dict[str, Any], delivery: str) -> ForgeEvent | Ignored:
    action = need_str(data, "action")
    normalized = _ACTIONS.get(action)
    if normalized is None:
        return Ignored(f"pull_request action '{action}' is ignored")
    number = need_pr_number(data, "number")
    return ForgeEvent(
        kind="pull_request", provider="github", delivery=delivery,
        repo_url=need_str(data, "repository.clone_url"),
        # The base repository serves the head commit under this ref, forks included.
        ref=f"refs/pull/{number}/head",
        branch=need_branch(data, "pull_request.head.ref"),
        commit=need_sha(data, "pull_request.head.sha"),
        before=opt_sha(data, "before") if normalized == "synchronize" else "",
        target_branch=need_branch(data, "pull_request.base.ref"),
        pr_number=number, action=normalized,
        fork=is_fork(data, "pull_request.head.repo.full_name", "pull_request.base.repo.full_name"),
        # A pull_request payload names no head commit: its title and author stand in.
        author=opt_str(data, "pull_request.user.login"),
        message=opt_str(data, "pull_request.title"))
