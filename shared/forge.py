"""What a forge told us, whichever forge it was: the normalized webhook event.

The providers (``services/api/hooks/``) turn GitHub, GitLab, Gitea/Forgejo/Gogs and
generic payloads into a ``ForgeEvent``; the trigger rules of a pipeline file
(``shared/pipeline/triggers.py``) judge a ``ForgeEvent`` and nothing forge-specific.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ForgeEvent", "ForgeKind", "review_ref"]

ForgeKind = Literal["push", "tag", "pull_request", "ping"]


@dataclass(frozen=True)
class ForgeEvent:
    kind: ForgeKind
    provider: str  # github gitlab gitea generic
    delivery: str = ""  # the forge's delivery id ("" when it sends none)
    repo_url: str = ""  # clone URL named by the payload
    ref: str = ""  # full ref: refs/heads/main, refs/tags/v1.2, refs/pull/7/head
    branch: str = ""  # push: the branch pushed; pull_request: the source (head) branch
    tag: str = ""  # tag push: the tag
    commit: str = ""  # the commit to build (push: after; pull_request: the head sha)
    before: str = ""  # push: the commit the ref pointed at before
    deleted: bool = False  # push: the branch or tag was deleted (nothing to build)
    target_branch: str = ""  # pull_request: the base branch
    pr_number: int = 0
    fork: bool = False  # pull_request: its head is in another repository than its base
    action: str = ""  # pull_request: opened reopened synchronize (normalized)
    # Files the pushed commits added, modified or removed; None when the payload does
    # not list them (then ``paths`` filters cannot be judged and do not filter).
    changed_paths: tuple[str, ...] | None = None
    author: str = ""
    message: str = ""  # the head commit's message (first line shown in the UI)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ForgeEvent:
        fields = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in fields}
        if known.get("changed_paths") is not None:
            known["changed_paths"] = tuple(known["changed_paths"])
        return cls(**known)


def review_ref(forge_event: Mapping[str, Any] | None) -> str:
    """The ref under which the base repository serves a pull request's head --
    ``refs/pull/N/head`` (GitHub, Gitea, Forgejo, Gogs), ``refs/merge-requests/N/head``
    (GitLab) -- for a run a pull request started; "" for any other run. A fork's commits
    are reachable there, not from any branch of the base."""
    event = forge_event or {}
    ref = str(event.get("ref", ""))
    if event.get("kind") == "pull_request" and ref.startswith(("refs/pull/",
                                                               "refs/merge-requests/")):
        return ref
    return ""
