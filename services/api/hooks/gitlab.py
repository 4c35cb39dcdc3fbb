"""GitLab webhooks (GitLab docs: "Webhook events", "Webhooks").

* Authenticity: ``X-Gitlab-Token`` is the secret token itself (GitLab does not sign).
* Event: ``X-Gitlab-Event`` ("Push Hook", "Tag Push Hook", "Merge Request Hook"); a
  system hook says "System Hook" there and the body tells the kind: ``object_kind``
  (merge_request), or for the rest only ``event_name`` (push, tag_push, and events of no
  repository such as user_create, which are ignored).
* Delivery id: ``Idempotency-Key`` (GitLab 17.4+, the same across retries of one event),
  else ``X-Gitlab-Event-UUID``.
* A push lists at most 20 commits; ``total_commits_count`` says how many there were, and
  when the list is shorter the paths are unknown (``changed_paths`` None). A deleted
  branch or tag has ``after`` all zeros and ``checkout_sha`` null. ``checkout_sha`` is
  the commit to build (for an annotated tag ``after`` is the tag object).
* Merge request actions: open / reopen are built; update is built only when it brought
  new commits (``object_attributes.oldrev`` present) — an update that edits the title
  or labels is ignored; close, merge, approved and the rest are ignored. The head commit
  is ``object_attributes.last_commit``; GitLab serves it as refs/merge-requests/IID/head
  in the target project, forks included. GitLab has no ping event.
"""

from __future__ import annotations

from typing import Any

from services.api.hooks.common import (
    Ignored,
    PayloadError,
    check_token,
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
    opt_int,
    opt_list,
    opt_sha,
    opt_str,
    paths_of,
    ref_fields,
)
from shared.forge import ForgeEvent

__all__ = ["parse", "verify"]

_KINDS = {"Push Hook": "push", "Tag Push Hook": "tag_push",
          "Merge Request Hook": "merge_request"}
_ACTIONS = {"open": "opened", "reopen": "reopened", "update": "synchronize"}


def verify(headers: dict[str, str], body: bytes, secret: str) -> None:
    check_token(headers, "X-Gitlab-Token", secret)


def parse(headers: dict[str, str], body: bytes) -> ForgeEvent | Ignored:
    found = first_header(headers, "X-Gitlab-Event")
    event = found[1] if found else ""
    delivery = delivery_header(headers, "Idempotency-Key", "X-Gitlab-Event-UUID")
    if event and event != "System Hook" and event not in _KINDS:
        return Ignored(f"GitLab event '{event}' is ignored")
    data = load_json(headers, body)
    kind = _KINDS.get(event) or _body_kind(data, system=bool(event))
    if kind in ("push", "tag_push"):
        return _push(data, delivery)
    if kind == "merge_request":
        return _merge_request(data, delivery)
    if event == "System Hook":
        return Ignored(f"GitLab system hook event '{kind}' is ignored: only push, tag_push "
                       "and merge_request start runs")
    return Ignored(f"GitLab event '{kind}' is ignored")


def _body_kind(data: dict[str, Any], system: bool) -> str:
    """The kind a system hook (or a delivery without the header) names in its body."""
    kind = opt_str(data, "object_kind") or opt_str(data, "event_name")
    if kind:
        return kind
    if system:
        raise PayloadError("a system hook names its event in object_kind or event_name; "
                           "the body has neither")
    raise PayloadError("X-Gitlab-Event header is missing, and the body names no event "
                       "(object_kind or event_name)")


def _repo_url(data: dict[str, Any]) -> str:
    # ``project`` since GitLab 8.5; ``repository`` is its older, deprecated twin.
    url = opt_str(data, "project.git_http_url") or opt_str(data, "repository.git_http_url")
    if not url:
        raise PayloadError("project.git_http_url is missing")
    return url


def _push(data: dict[str, Any], delivery: str) -> ForgeEvent | Ignored:
    fields = ref_fields(need_ref(data, "ref"))
    if isinstance(fields, Ignored):
        return fields
    after = need_sha(data, "after")
    fields.update(provider="gitlab", delivery=delivery, repo_url=_repo_url(data),
                  before=opt_sha(data, "before"))
    pusher = opt_str(data, "user_username") or opt_str(data, "user_name")
    if is_zero(after):
        return ForgeEvent(**fields, deleted=True, author=pusher)
    commit = opt_sha(data, "checkout_sha") or after
    commits = opt_list(data, "commits")
    total = opt_int(data, "total_commits_count")
    paths = None
    if fields["kind"] == "push" and commits is not None and (total is None
                                                            or total <= len(commits)):
        paths = paths_of(commits, "commits")
    head, at = head_commit(commits, commit)
    return ForgeEvent(**fields, commit=commit, changed_paths=paths,
                      author=opt_str(head, "author.name", at=at) or pusher,
                      # ``message`` at the top is an annotated tag's message
                      message=opt_str(head, "message", at=at) or opt_str(data, "message"))


def _merge_request(data: dict[str, Any], delivery: str) -> ForgeEvent | Ignored:
    attrs = need_obj(data, "object_attributes")
    action = need_str(attrs, "action", at="object_attributes")
    normalized = _ACTIONS.get(action)
    if normalized is None:
        return Ignored(f"merge_request action '{action}' is ignored")
    oldrev = opt_sha(attrs, "oldrev", at="object_attributes")
    if action == "update" and not oldrev:
        return Ignored("merge_request action 'update' without new commits is ignored")
    iid = need_pr_number(attrs, "iid", at="object_attributes")
    last = "object_attributes.last_commit"
    return ForgeEvent(
        kind="pull_request", provider="gitlab", delivery=delivery, repo_url=_repo_url(data),
        ref=f"refs/merge-requests/{iid}/head",
        branch=need_branch(attrs, "source_branch", at="object_attributes"),
        target_branch=need_branch(attrs, "target_branch", at="object_attributes"),
        commit=need_sha(data, f"{last}.id"), before=oldrev,
        pr_number=iid, action=normalized,
        fork=is_fork(attrs, "source_project_id", "target_project_id", at="object_attributes"),
        author=opt_str(data, f"{last}.author.name") or opt_str(data, "user.username"),
        message=opt_str(data, f"{last}.message"))
