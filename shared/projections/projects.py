"""Projects and API tokens as pure folds over their streams."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from shared import events as ev
from shared.events import RecordedEvent, decode

__all__ = [
    "PROJECT_FIELDS",
    "TOKENS_STREAM",
    "ProjectView",
    "TokenView",
    "fold_project",
    "fold_tokens",
    "project_stream",
]

TOKENS_STREAM = "tokens"
PROJECT_FIELDS = ("repo", "default_branch", "pipeline_file", "env", "max_concurrent_runs")


def project_stream(name: str) -> str:
    return f"project-{name}"


@dataclass(frozen=True)
class ProjectView:
    name: str
    repo: str = ""
    default_branch: str = "main"
    pipeline_file: str = ".cyclone.yml"
    env: dict[str, str] = field(default_factory=dict)
    max_concurrent_runs: int = 0
    created_at: str = ""
    updated_at: str = ""
    deleted: bool = False
    last_seq: int = 0

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for internal in ("deleted", "last_seq"):
            data.pop(internal)
        return data


def fold_project(events: Iterable[RecordedEvent]) -> ProjectView | None:
    """The project as its stream says; a deleted one is returned with ``deleted=True``."""
    view: ProjectView | None = None
    for recorded in events:
        event = decode(recorded)
        if isinstance(event, ev.ProjectRegistered):
            view = ProjectView(name=event.name, repo=event.repo,
                               default_branch=event.default_branch,
                               pipeline_file=event.pipeline_file, env=dict(event.env),
                               max_concurrent_runs=event.max_concurrent_runs,
                               created_at=recorded.ts, updated_at=recorded.ts)
        elif isinstance(event, ev.ProjectUpdated) and view is not None:
            known = {k: v for k, v in event.changes.items() if k in PROJECT_FIELDS}
            view = replace(view, updated_at=recorded.ts, **known)
        elif isinstance(event, ev.ProjectDeleted) and view is not None:
            view = replace(view, deleted=True, updated_at=recorded.ts)
        if view is not None:
            view = replace(view, last_seq=recorded.seq)
    return view


@dataclass(frozen=True)
class TokenView:
    id: str
    name: str
    token_hash: str
    admin: bool
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "admin": self.admin,
                "created_at": self.created_at}


def fold_tokens(events: Iterable[RecordedEvent]) -> dict[str, TokenView]:
    """Live tokens by id."""
    tokens: dict[str, TokenView] = {}
    for recorded in events:
        event = decode(recorded)
        if isinstance(event, ev.TokenCreated):
            tokens[event.token_id] = TokenView(id=event.token_id, name=event.name,
                                               token_hash=event.token_hash, admin=event.admin,
                                               created_at=recorded.ts)
        elif isinstance(event, ev.TokenRevoked):
            tokens.pop(event.token_id, None)
    return tokens
