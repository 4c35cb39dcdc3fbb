"""The generic webhook: Cyclone's own format, for plain Git servers and scripts.

``cyclone hook install`` writes a post-receive hook that sends it; anything else may.

Request::

    POST /api/v1/hooks/generic/{project}
    Content-Type: application/json
    X-Cyclone-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with the secret>
    X-Cyclone-Delivery: <unique id of this delivery; a retry sends the same one>

Body (a JSON object)::

    {
      "event": "push",                     # "push" | "tag" | "ping"  (required)
      "ref": "refs/heads/main",            # full ref (required unless ping)
      "before": "<sha>",                   # what the ref pointed at; all zeros: created
      "after": "<sha>",                    # what it points at now; all zeros: deleted
                                           #   (required unless ping)
      "repository": {"url": "<clone URL>"},                           # optional
      "head_commit": {"id": "<sha>", "message": "...",                # optional
                      "author": {"name": "...", "email": "..."}},
      "changed_paths": ["src/a.py", "README.md"],                     # optional
      "commits": [{"id": "<sha>", "message": "...", "author": {"name": "..."},
                   "added": [...], "modified": [...], "removed": [...]}]  # optional
    }

* ``event`` "push" with a refs/tags/... ref is a tag push, as with the forges; "tag"
  must come with a refs/tags/... ref.
* The commit built is ``head_commit.id`` when given (an annotated tag's ``after`` is the
  tag object), else ``after``.
* Changed paths: ``changed_paths`` when given, else the union of the ``commits``' added,
  modified and removed lists, else unknown (``paths`` filters then do not filter).
  Tags have none.
* Author and message: ``head_commit``, else the commit of ``commits`` whose id is
  ``after``.
* Commit ids are 40 (SHA-1) or 64 (SHA-256) hex digits.
"""

from __future__ import annotations

from typing import Any

from services.api.hooks.common import (
    Ignored,
    PayloadError,
    check_hmac,
    delivery_header,
    head_commit,
    is_zero,
    load_json,
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


def verify(headers: dict[str, str], body: bytes, secret: str) -> None:
    check_hmac(headers, ("X-Cyclone-Signature",), body, secret, prefix="sha256=")


def parse(headers: dict[str, str], body: bytes) -> ForgeEvent | Ignored:
    delivery = delivery_header(headers, "X-Cyclone-Delivery")
    data = load_json(headers, body)
    event = need_str(data, "event")
    if event == "ping":
        return ForgeEvent(kind="ping", provider="generic", delivery=delivery,
                          repo_url=opt_str(data, "repository.url"))
    if event not in ("push", "tag"):
        return Ignored(f"generic event '{event}' is ignored")
    ref = need_ref(data, "ref")
    if event == "tag" and not ref.startswith("refs/tags/"):
        raise PayloadError(f"event is 'tag' but ref {ref} is not a tag (refs/tags/...)")
    fields = ref_fields(ref)
    if isinstance(fields, Ignored):
        return fields
    after = need_sha(data, "after")
    fields.update(provider="generic", delivery=delivery, before=opt_sha(data, "before"),
                  repo_url=opt_str(data, "repository.url"))
    if is_zero(after):
        return ForgeEvent(**fields, deleted=True)
    commits = opt_list(data, "commits")
    head, at = data.get("head_commit"), "head_commit"
    if not isinstance(head, dict):
        head, at = head_commit(commits, after)
    commit = need_sha(head, "id", at) if at and head.get("id") is not None else after
    return ForgeEvent(**fields, commit=commit,
                      changed_paths=_paths(data, commits) if fields["kind"] == "push" else None,
                      author=opt_str(head, "author.name", at=at),
                      message=opt_str(head, "message", at=at))


def _paths(data: dict[str, Any], commits: list[Any] | None) -> tuple[str, ...] | None:
    listed = opt_list(data, "changed_paths")
    if listed is None:
        return paths_of(commits, "commits")
    if not all(isinstance(path, str) for path in listed):
        raise PayloadError("changed_paths is not an array of strings")
    return tuple(sorted(set(listed)))
