"""Gitea, Forgejo and Gogs webhooks (Gitea docs: "Webhooks"; Forgejo and Gogs send the
same payloads under their own header names).

* Authenticity: ``X-Gitea-Signature`` / ``X-Forgejo-Signature`` / ``X-Gogs-Signature``:
  the hex HMAC-SHA256 of the raw body, no prefix (Forgejo sends its own and Gitea's).
* Event: ``X-Gitea-Event`` / ``X-Forgejo-Event`` / ``X-Gogs-Event`` (Gitea also sends
  ``X-GitHub-Event``); delivery id: ``X-Gitea-Delivery`` / ``X-Forgejo-Delivery`` /
  ``X-Gogs-Delivery``.
* ``push`` covers branches and tags; a new branch or tag also sends ``create``, ignored
  so as not to run twice. Gogs is the exception: it announces a new tag with ``create``
  only (``ref`` the tag's short name, ``sha`` its commit in newer Gogs), so on the gogs
  URL a tag's ``create`` is the tag event -- unless the sender also says
  ``X-Gitea-Event`` (a Gitea speaking Gogs, which sends the tag's push as well). A
  deleted *branch* sends only ``delete`` (no push): that is the deleted event here. A
  deleted tag sends a push with ``after`` all zeros and a ``delete``; the push is the one
  kept.
* A push lists only the newest ``[ui] FEED_MAX_COMMIT_NUM`` commits (5 by default),
  newest first; ``total_commits`` (newer Gitea) says how many there were, and when the
  list is shorter the paths are unknown (``changed_paths`` None).
* ``pull_request`` actions opened / reopened / synchronized are built (the header says
  ``pull_request`` for a synchronize too); closed, edited, label_updated, ... are
  ignored. Gitea serves the head commit as refs/pull/N/head. Gitea has no ping event:
  its "Test delivery" sends a push of the last commit.
* Gogs names a pull request's branches ``pull_request.head_branch`` / ``base_branch``
  (its repositories ``head_repo`` / ``base_repo``) and sends no head commit: the run
  then builds refs/pull/N/head, which Gogs keeps in the base repository, forks included.
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
    need_obj,
    need_pr_number,
    need_ref,
    need_sha,
    need_str,
    need_tag,
    opt_int,
    opt_list,
    opt_sha,
    opt_str,
    paths_of,
    ref_fields,
)
from shared.forge import ForgeEvent

__all__ = ["FORGES", "parse", "verify"]

# Header name stems per provider name, its own first (Gitea also sends X-GitHub-*).
FORGES = {"gitea": ("Gitea", "Forgejo", "Gogs", "GitHub"),
          "forgejo": ("Forgejo", "Gitea", "GitHub"),
          "gogs": ("Gogs", "Gitea")}
_ACTIONS = {"opened": "opened", "reopened": "reopened", "synchronized": "synchronize",
            "synchronize": "synchronize"}


def _headers(forge: str, suffix: str) -> tuple[str, ...]:
    return tuple(f"X-{stem}-{suffix}" for stem in FORGES[forge] if stem != "GitHub"
                 or suffix != "Signature")


def verify(forge: str, headers: dict[str, str], body: bytes, secret: str) -> None:
    check_hmac(headers, _headers(forge, "Signature"), body, secret)


def parse(forge: str, headers: dict[str, str], body: bytes) -> ForgeEvent | Ignored:
    found = first_header(headers, *_headers(forge, "Event"))
    if found is None:
        raise PayloadError(f"{_headers(forge, 'Event')[0]} header is missing")
    event = found[1]
    delivery = delivery_header(headers, *_headers(forge, "Delivery"))
    if event == "create" and forge == "gogs" and first_header(headers, "X-Gitea-Event") is None:
        return _gogs_create(load_json(headers, body), delivery)
    if event == "create":
        return Ignored("create event is ignored: the push event of the same ref is the one "
                       "built")
    if event not in ("push", "delete", "pull_request"):
        return Ignored(f"{FORGES[forge][0]} event '{event}' is ignored")
    data = load_json(headers, body)
    if event == "push":
        return _push(data, delivery)
    if event == "delete":
        return _delete(data, delivery)
    return _pull_request(data, delivery)


def _pusher(data: dict[str, Any]) -> str:
    # Gitea and Forgejo name users by ``login``, Gogs by ``username``.
    return (opt_str(data, "pusher.login") or opt_str(data, "pusher.username")
            or opt_str(data, "sender.login") or opt_str(data, "sender.username"))


def _push(data: dict[str, Any], delivery: str) -> ForgeEvent | Ignored:
    fields = ref_fields(need_ref(data, "ref"))
    if isinstance(fields, Ignored):
        return fields
    after = need_sha(data, "after")
    fields.update(provider="gitea", delivery=delivery, before=opt_sha(data, "before"),
                  repo_url=need_str(data, "repository.clone_url"))
    if is_zero(after):
        return ForgeEvent(**fields, deleted=True, author=_pusher(data))
    commits = opt_list(data, "commits")
    head, at = data.get("head_commit"), "head_commit"
    if not isinstance(head, dict):  # older Gitea and Gogs have no head_commit
        head, at = head_commit(commits, after)
    commit = need_sha(head, "id", at) if at and head.get("id") is not None else after
    total = opt_int(data, "total_commits")
    paths = None
    if fields["kind"] == "push" and commits is not None and (total is None
                                                            or total <= len(commits)):
        paths = paths_of(commits, "commits")
    return ForgeEvent(**fields, commit=commit, changed_paths=paths,
                      author=opt_str(head, "author.name", at=at) or _pusher(data),
                      message=opt_str(head, "message", at=at))


def _delete(data: dict[str, Any], delivery: str) -> ForgeEvent | Ignored:
    ref_type = need_str(data, "ref_type")
    if ref_type != "branch":
        return Ignored(f"delete event of a {ref_type} is ignored: its push event is the one "
                       "recorded")
    branch = need_branch(data, "ref")  # the short name here, unlike push's full ref
    return ForgeEvent(kind="push", provider="gitea", delivery=delivery,
                      repo_url=need_str(data, "repository.clone_url"),
                      ref=f"refs/heads/{branch}", branch=branch, deleted=True,
                      author=_pusher(data))


def _gogs_create(data: dict[str, Any], delivery: str) -> ForgeEvent | Ignored:
    ref_type = need_str(data, "ref_type")
    if ref_type != "tag":
        return Ignored(f"create event of a {ref_type} is ignored: its push event is the one "
                       "built")
    tag = need_tag(data, "ref")  # the short name, as in delete
    return ForgeEvent(kind="tag", provider="gitea", delivery=delivery,
                      repo_url=need_str(data, "repository.clone_url"),
                      ref=f"refs/tags/{tag}", tag=tag, commit=opt_sha(data, "sha"),
                      author=_pusher(data))


def _pull_request(data: dict[str, Any], delivery: str) -> ForgeEvent | Ignored:
    action = need_str(data, "action")
    normalized = _ACTIONS.get(action)
    if normalized is None:
        return Ignored(f"pull_request action '{action}' is ignored")
    number = need_pr_number(data, "number")
    gogs = "head" not in need_obj(data, "pull_request") and opt_str(
        data, "pull_request.head_branch") != ""
    return ForgeEvent(
        kind="pull_request", provider="gitea", delivery=delivery,
        repo_url=need_str(data, "repository.clone_url"), ref=f"refs/pull/{number}/head",
        branch=need_branch(data, "pull_request.head_branch" if gogs
                           else "pull_request.head.ref"),
        commit="" if gogs else need_sha(data, "pull_request.head.sha"),
        target_branch=need_branch(data, "pull_request.base_branch" if gogs
                                  else "pull_request.base.ref"),
        pr_number=number, action=normalized,
        fork=is_fork(data, *(("pull_request.head_repo.full_name",
                              "pull_request.base_repo.full_name") if gogs
                             else ("pull_request.head.repo.full_name",
                                   "pull_request.base.repo.full_name"))),
        # A pull_request payload names no head commit: its title and author stand in.
        author=opt_str(data, "pull_request.user.login")
        or opt_str(data, "pull_request.user.username"),
        message=opt_str(data, "pull_request.title"))
